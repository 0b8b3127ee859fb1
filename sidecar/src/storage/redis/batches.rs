//! [`CounterStore::begin_batch`](crate::storage::CounterStore::begin_batch) in Redis: two
//! single-key scripts (see the parent module's docs for the keys).

use redis::Script;
use tollgate_filter::Nanos;

use super::{NANOS_PER_MILLI, RedisStore, TTL_GRACE_MS, unavailable};
use crate::storage::{BatchStart, NODE_TTL, SENDER_TTL, StoreError};

/// Marks a sender's batch as applied if its `seq` is higher than the one remembered.
///
/// - `KEYS[1]`: the sender's key, `<prefix>:sync:{<sender as 16 hex digits>}`.
/// - `ARGV[1]`: the batch's `seq` as exactly 20 decimal digits (zero-padded). Compared as two
///   10-digit halves, each exact as a Lua number, since a `u64` is not.
/// - `ARGV[2]`: how long to remember the sender, in milliseconds ([`SENDER_TTL`]).
///
/// Returns `1` (fresh: `ARGV[1]` stored) or `0` (a duplicate or older batch: nothing changed
/// but the time to live, renewed either way).
pub const SEQ_SCRIPT: &str = r"
local last = redis.call('GET', KEYS[1])
local fresh = not last
if last then
  local last_high, high = tonumber(string.sub(last, 1, 10)), tonumber(string.sub(ARGV[1], 1, 10))
  fresh = last_high < high or
    (last_high == high and tonumber(string.sub(last, 11)) < tonumber(string.sub(ARGV[1], 11)))
end
if fresh then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 0
";

/// Records a node as seen and counts the nodes seen lately.
///
/// - `KEYS[1]`: the sorted set of nodes, `<prefix>:{nodes}` (member: the node as 16 hex
///   digits; score: the sidecar's `now` of its latest batch, in nanoseconds).
/// - `ARGV[1]`: the node.
/// - `ARGV[2]`: `now` (`ZADD GT`: a sidecar whose clock lags never moves a node back).
/// - `ARGV[3]`: the newest score that no longer counts, `now − NODE_TTL` (`-inf` while
///   `now < NODE_TTL`): members scored at or below it are removed.
/// - `ARGV[4]`: the set's time to live in milliseconds (it lapses when no node syncs).
///
/// Returns the number of nodes left. Scores are doubles: at today's Unix nanoseconds they are
/// exact to 256 ns, far finer than [`NODE_TTL`].
pub const NODES_SCRIPT: &str = r"
redis.call('ZADD', KEYS[1], 'GT', ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return redis.call('ZCARD', KEYS[1])
";

/// The compiled scripts (their SHA-1s computed once).
pub(super) struct Scripts {
    seq: Script,
    nodes: Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        Scripts {
            seq: Script::new(SEQ_SCRIPT),
            nodes: Script::new(NODES_SCRIPT),
        }
    }
}

impl RedisStore {
    /// The Redis key remembering `sender`'s latest applied `seq`.
    pub fn sender_key(&self, sender: u64) -> String {
        format!("{}:sync:{{{sender:016x}}}", self.prefix)
    }

    /// The Redis key of the sorted set of nodes.
    pub fn nodes_key(&self) -> String {
        format!("{}:{{nodes}}", self.prefix)
    }

    pub(super) async fn begin_batch_async(
        &self,
        sender: u64,
        seq: u64,
        node: u64,
        now: Nanos,
    ) -> Result<BatchStart, StoreError> {
        let mut connection = self.connection.clone();
        let cutoff = match now.checked_sub(NODE_TTL) {
            Some(cutoff) => cutoff.to_string(),
            None => "-inf".to_owned(),
        };
        let nodes: u64 = self
            .timed(
                self.batch_scripts
                    .nodes
                    .key(self.nodes_key())
                    .arg(format!("{node:016x}"))
                    .arg(now.to_string())
                    .arg(cutoff)
                    .arg(NODE_TTL / NANOS_PER_MILLI + TTL_GRACE_MS)
                    .invoke_async(&mut connection),
            )
            .await
            .map_err(unavailable)?;
        let fresh: u8 = self
            .timed(
                self.batch_scripts
                    .seq
                    .key(self.sender_key(sender))
                    .arg(format!("{seq:020}"))
                    .arg(SENDER_TTL / NANOS_PER_MILLI)
                    .invoke_async(&mut connection),
            )
            .await
            .map_err(unavailable)?;
        Ok(BatchStart {
            fresh: fresh == 1,
            nodes: nodes.max(1),
        })
    }
}
