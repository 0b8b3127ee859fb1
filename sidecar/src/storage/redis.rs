//! The Redis counter store: buckets shared by every sidecar that points at one Redis, so
//! `strict` decisions stay exact however many sidecars serve them.
//!
//! # The atomic update: an optimistic loop around a Lua compare-and-set
//!
//! [`CounterStore::update`] reads the key (`GET`), runs the decision in Rust — the filter's own
//! algorithm, so there is one definition of it — and writes the result with [`CAS_SCRIPT`],
//! which stores the new value only if the key still holds the value the decision saw. When
//! another writer got there first, the script answers with the key's current value instead and
//! the loop decides again on that, at most [`MAX_ATTEMPTS`] times before
//! [`StoreError::Contended`]. It is the loop of the filter's shared-data slots, with the old
//! value standing in for the CAS token.
//!
//! Within one store the updates of a bucket take turns (first come, first served), so a
//! sidecar never loses a race to itself, and each turn starts from the value the previous one
//! left (or the bucket's last update, for up to 65,536 recently updated buckets), usually
//! without a `GET`: a hot bucket costs one round trip per decision (see `redis/update.rs`).
//! Only updates from other sidecars can make a compare-and-set fail.
//!
//! Why not `WATCH`/`MULTI`/`EXEC`: `WATCH` state belongs to a connection, so every update would
//! need a connection of its own, while one multiplexed [`ConnectionManager`] carries every
//! concurrent update here. Why not the whole decision in Lua: the five algorithms would then
//! exist twice. One key per script call also keeps Redis Cluster happy (no cross-slot calls).
//!
//! # Keys and values
//!
//! A bucket lives at `<prefix>:{<rule>:<key as 16 hex digits>}` (prefix `tollgate`). The braces
//! are a Redis Cluster hash tag: whatever belongs to one bucket hashes to one slot, so future
//! multi-key scripts per bucket stay legal on a cluster. The value is the state's `idle_at`
//! (8 bytes, little-endian) followed by [`State::encode`]. The idle test is made in Rust against
//! the caller's `now`, exactly as in the in-memory store; the Redis TTL only frees memory, so
//! it is generous (see [`ttl_ms`]) rather than exact.
//!
//! The connection is a [`ConnectionManager`]: it reconnects by itself after Redis restarts or a
//! network error; meanwhile updates and [`CounterStore::ping`] fail fast with
//! [`StoreError::Unavailable`], which `/readyz` reports.
//!
//! # Redis Cluster
//!
//! [`RedisStore::new_cluster`] takes seed nodes and uses a
//! [`ClusterConnection`](redis::cluster_async::ClusterConnection) instead, which learns the slot
//! map, follows `MOVED`/`ASK` and reconnects to nodes by itself. The update loop is the same:
//! every command of one update (`GET`, `EVALSHA`/`EVAL`) names only the bucket's key, so the
//! cluster connection routes it to the node owning that key's slot.
//!
//! # `global` sync batches
//!
//! [`CounterStore::begin_batch`] runs two scripts, each on one key (so one slot), one after
//! the other: [`NODES_SCRIPT`] on `<prefix>:{nodes}`, a sorted set of node → latest batch time,
//! then [`SEQ_SCRIPT`] on `<prefix>:sync:{<sender as 16 hex digits>}`, the sender's latest
//! applied `seq` (a hash tag per sender spreads senders over the cluster's slots; the key
//! cannot be mistaken for a bucket, whose key has a `{` right after the prefix). The mark
//! comes last, so that a failure of the first script leaves the batch unmarked and the
//! filter's retry fresh.
//!
//! # Latency
//!
//! Every round trip (`GET`, a script call, `PING`) is timed into the histogram given to
//! [`RedisStore::with_latency`] (`tollgate_redis_seconds`), failures and timeouts included.

mod batches;
pub(crate) mod connection;
mod turns;
mod update;

use std::future::Future;
use std::time::{Duration, Instant};

use metrics::Histogram;
use redis::{RedisError, Script};
use tollgate_filter::Nanos;
use tollgate_filter::algorithm::State;

pub use self::batches::{NODES_SCRIPT, SEQ_SCRIPT};
use self::connection::Connection;
use self::turns::Turns;
use super::{BatchStart, CounterKey, CounterStore, StoreError, Write};

/// Compare-and-set of one bucket.
///
/// - `KEYS[1]`: the bucket's key.
/// - `ARGV[1]`: the value the decision saw, `""` when the key was absent (a stored value is
///   never empty: it starts with 8 bytes of `idle_at`).
/// - `ARGV[2]`: the new value, `""` to delete the key (the new state is already idle).
/// - `ARGV[3]`: the key's time to live in milliseconds (ignored when deleting).
///
/// Returns `1` when it wrote (or deleted), else the key's current value (`""` when absent) so
/// that the caller can decide again without another `GET`.
pub const CAS_SCRIPT: &str = r"
local current = redis.call('GET', KEYS[1]) or ''
if current ~= ARGV[1] then
  return current
end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return 1
";

/// How many times one update decides and tries to write before [`StoreError::Contended`].
/// Each failed try means another writer of the same key succeeded, so the loop as a whole
/// always makes progress; the bound only keeps one unlucky writer from spinning for ever
/// behind a crowd (a task yields to the runtime after each lost race, to stay fair).
pub const MAX_ATTEMPTS: usize = 4096;

/// Extra time to live beyond `idle_at`, so that a sidecar whose clock lags the writer's by up
/// to this much still finds a bucket that is live by its own clock.
pub const TTL_GRACE_MS: u64 = 5_000;

/// The longest time to live written (about ten years): Redis rejects expiry times that
/// overflow, and a state live for longer is not a rate limit anyone configures.
pub const MAX_TTL_MS: u64 = 10 * 366 * 86_400 * 1_000;

/// How long a command or a connection attempt may take before the store reports the backend
/// unavailable.
pub const TIMEOUT: Duration = Duration::from_secs(1);

const NANOS_PER_MILLI: u64 = 1_000_000;

/// A [`CounterStore`] in Redis: one Redis ([`RedisStore::new`]) or a Redis Cluster
/// ([`RedisStore::new_cluster`]).
pub struct RedisStore {
    connection: Connection,
    script: Script,
    turns: Turns,
    batch_scripts: batches::Scripts,
    prefix: String,
    latency: Histogram,
}

impl RedisStore {
    /// A store on the Redis at `url` (`redis://[user:password@]host[:port][/db]`, `rediss://`
    /// for TLS if the crate was built with it, `redis+unix:///path`). Connects lazily: a Redis
    /// that is down now makes updates and pings fail until it answers, never this call.
    ///
    /// Must be called inside a Tokio runtime.
    pub fn new(url: &str) -> Result<Self, StoreError> {
        Connection::single(url, TIMEOUT).map(RedisStore::with_connection)
    }

    /// A store on the Redis Cluster reachable through the seed nodes in `urls` (comma
    /// separated `redis://[user:password@]host:port`, one is enough; every node's slots are
    /// learnt from the first that answers). Connects lazily, like [`RedisStore::new`].
    ///
    /// Must be called inside a Tokio runtime.
    pub fn new_cluster(urls: &str) -> Result<Self, StoreError> {
        Connection::cluster(urls, TIMEOUT).map(RedisStore::with_connection)
    }

    fn with_connection(connection: Connection) -> Self {
        RedisStore {
            connection,
            script: Script::new(CAS_SCRIPT),
            turns: Turns::new(),
            batch_scripts: batches::Scripts::new(),
            prefix: "tollgate".into(),
            latency: Histogram::noop(),
        }
    }

    /// The same store timing every Redis round trip into `histogram` (seconds; see
    /// [`crate::metrics::Metrics::redis_seconds`]). Without it nothing is timed.
    pub fn with_latency(mut self, histogram: Histogram) -> Self {
        self.latency = histogram;
        self
    }

    /// Awaits one round trip, recording how long it took.
    async fn timed<T>(&self, round_trip: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let answer = round_trip.await;
        self.latency.record(started.elapsed().as_secs_f64());
        answer
    }

    /// The same store with keys under `prefix` instead of `tollgate` (tests give each store
    /// its own key space; deployments may separate environments sharing one Redis).
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The Redis key of a bucket.
    pub fn redis_key(&self, key: &CounterKey) -> String {
        // Built by hand into one allocation of the right size (no `format!` machinery).
        let mut redis_key = String::with_capacity(self.prefix.len() + key.rule.len() + 20);
        redis_key.push_str(&self.prefix);
        redis_key.push_str(":{");
        redis_key.push_str(&key.rule);
        redis_key.push(':');
        push_hex(&mut redis_key, key.key);
        redis_key.push('}');
        redis_key
    }
}

impl CounterStore for RedisStore {
    fn update<F, R>(
        &self,
        key: &CounterKey,
        now: Nanos,
        decide: F,
    ) -> impl Future<Output = Result<R, StoreError>> + Send
    where
        F: FnMut(&mut State) -> (R, Write) + Send,
        R: Send,
    {
        self.update_async(key, now, decide)
    }

    fn begin_batch(
        &self,
        sender: u64,
        seq: u64,
        node: u64,
        now: Nanos,
    ) -> impl Future<Output = Result<BatchStart, StoreError>> + Send {
        self.begin_batch_async(sender, seq, node, now)
    }

    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
        let mut connection = self.connection.clone();
        async move {
            self.timed(redis::cmd("PING").query_async::<String>(&mut connection))
                .await
                .map(drop)
                .map_err(unavailable)
        }
    }
}

/// Appends `n` as 16 lowercase hex digits.
fn push_hex(to: &mut String, n: u64) {
    for shift in (0..16).rev() {
        // A nibble is always a hex digit (lowercase, as `{:x}` writes it).
        let nibble = ((n >> (shift * 4)) & 0xf) as u32;
        to.push(char::from_digit(nibble, 16).unwrap_or('0'));
    }
}

/// The state stored in `bytes` as seen at `now`: a fresh one when absent (`bytes` empty) or
/// idle.
fn live_state(bytes: &[u8], now: Nanos) -> Result<State, StoreError> {
    if bytes.is_empty() {
        return Ok(State::default());
    }
    let corrupt = || StoreError::Unavailable("a bucket holds a value that is not a state".into());
    let (idle_at, state) = bytes.split_at_checked(8).ok_or_else(corrupt)?;
    let idle_at = idle_at
        .try_into()
        .map(u64::from_le_bytes)
        .map_err(|_| corrupt())?;
    if idle_at <= now {
        return Ok(State::default());
    }
    State::decode(state).ok_or_else(corrupt)
}

/// The stored form of `state`, live until `idle_at`.
fn encode(idle_at: Nanos, state: &State) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(8 + 24 + 8 * state.log.len());
    bytes.extend_from_slice(&idle_at.to_le_bytes());
    state.encode(&mut bytes);
    bytes
}

/// The time to live of a state written at `now` and idle from `idle_at` on: the remaining
/// time rounded up to whole milliseconds, plus [`TTL_GRACE_MS`], at most [`MAX_TTL_MS`].
///
/// Relative to `now` rather than an absolute `PXAT`: `now` is the caller's clock (a logical one
/// in tests), which Redis's clock need not agree with.
pub fn ttl_ms(idle_at: Nanos, now: Nanos) -> u64 {
    idle_at
        .saturating_sub(now)
        .div_ceil(NANOS_PER_MILLI)
        .saturating_add(TTL_GRACE_MS)
        .min(MAX_TTL_MS)
}

/// `url` without its user name and password, for logs and error messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<not a URL>".into();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://{host}{path}"),
        None => url.into(),
    }
}

/// A Redis error as an unavailable store; the description names the failure, never the URL.
fn unavailable(error: RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis: {error}"))
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests;
