//! [`CounterStore::update`](crate::storage::CounterStore::update) in Redis: the optimistic
//! loop of the parent module's docs, run in turns per bucket ([`turns`](super::turns)).
//!
//! Within one store, the updates of a bucket run one at a time, first come first served, so
//! this sidecar never loses a compare-and-set to itself: with 32 concurrent checks of one
//! bucket, every check but the first would otherwise retry about as many times as there are
//! checks ahead of it. Each turn hands the next the value it last saw (read, or written by
//! its own compare-and-set; the last turn leaves it among the store's recent values, at most
//! [`RECENT`](super::turns::RECENT) keys, for the key's next update), and the next turn
//! decides on that value without a `GET`:
//!
//! - a decision that writes sends its compare-and-set keyed on that value straight away (one
//!   round trip instead of two); if another sidecar changed the bucket meanwhile, the script
//!   answers with the current value and the loop decides again, as after any conflict;
//! - a decision that writes nothing (a refusal) reads the bucket to confirm it still holds
//!   that value, and decides again on the current one otherwise: a refusal is never based on a
//!   value older than the request.
//!
//! Other sidecars are not serialized with this one: between sidecars, the compare-and-set
//! alone keeps decisions exact.

use redis::{ErrorKind, RedisError, ServerErrorKind, Value};
use tollgate_filter::Nanos;
use tollgate_filter::algorithm::State;

use super::connection::Connection;
use super::turns::Known;
use super::{MAX_ATTEMPTS, RedisStore, encode, live_state, ttl_ms, unavailable};
use crate::storage::{CounterKey, StoreError, Write};

impl RedisStore {
    pub(super) async fn update_async<F, R>(
        &self,
        key: &CounterKey,
        now: Nanos,
        mut decide: F,
    ) -> Result<R, StoreError>
    where
        F: FnMut(&mut State) -> (R, Write),
    {
        let ticket = self.turns.ticket(self.redis_key(key));
        let mut known = ticket.turn().await;
        // Taken: a failed or cancelled update leaves `None`, and the next turn reads again.
        let previous = known.take();
        let (value, last) = self
            .update_in_turn(ticket.key(), previous, now, &mut decide)
            .await?;
        *known = Some(last);
        Ok(value)
    }

    /// The loop, starting from the value the previous turn left (`None`: read it first).
    /// Returns `decide`'s value and the bucket's value as last seen.
    async fn update_in_turn<F, R>(
        &self,
        redis_key: &str,
        previous: Known,
        now: Nanos,
        decide: &mut F,
    ) -> Result<(R, Vec<u8>), StoreError>
    where
        F: FnMut(&mut State) -> (R, Write),
    {
        let mut connection = self.connection.clone();
        // Whether `seen` was read during this update (rather than left by the previous turn).
        let (mut seen, mut current) = match previous {
            Some(seen) => (seen, false),
            None => (self.get(redis_key, &mut connection).await?, true),
        };
        for _ in 0..MAX_ATTEMPTS {
            let mut state = live_state(&seen, now)?;
            let (value, write) = decide(&mut state);
            let new = match write {
                Write::State { idle_at } if idle_at > now => {
                    Some((encode(idle_at, &state), idle_at))
                }
                // Already idle: equal to an absent key (deleted, if present).
                Write::State { .. } if !seen.is_empty() => Some((Vec::new(), now)),
                _ => None,
            };
            let Some((new, idle_at)) = new else {
                if current {
                    return Ok((value, seen));
                }
                let read = self.get(redis_key, &mut connection).await?;
                if read == seen {
                    return Ok((value, seen));
                }
                (seen, current) = (read, true);
                continue;
            };
            let ttl = ttl_ms(idle_at, now);
            match self
                .cas(&mut connection, redis_key, &seen, &new, ttl)
                .await?
            {
                Value::Int(1) => return Ok((value, new)),
                Value::BulkString(value) => {
                    (seen, current) = (value, true);
                    tokio::task::yield_now().await;
                }
                other => {
                    return Err(StoreError::Unavailable(format!(
                        "unexpected answer from the compare-and-set script: {other:?}"
                    )));
                }
            }
        }
        Err(StoreError::Contended)
    }

    /// `GET key`: its value, empty when absent.
    async fn get(&self, key: &str, connection: &mut Connection) -> Result<Vec<u8>, StoreError> {
        let value: Option<Vec<u8>> = self
            .timed(redis::cmd("GET").arg(key).query_async(connection))
            .await
            .map_err(unavailable)?;
        Ok(value.unwrap_or_default())
    }

    /// The compare-and-set: `EVALSHA` built in one buffer; the script is loaded (through
    /// [`redis::Script`], which also loads it on every node of a cluster) only when Redis
    /// does not know it yet.
    async fn cas(
        &self,
        connection: &mut Connection,
        key: &str,
        seen: &[u8],
        new: &[u8],
        ttl_ms: u64,
    ) -> Result<Value, StoreError> {
        let mut evalsha = redis::cmd("EVALSHA");
        evalsha
            .arg(self.script.get_hash())
            .arg(1)
            .arg(key)
            .arg(seen)
            .arg(new)
            .arg(ttl_ms);
        // Timed as one round trip, loading included (as `Script::invoke_async` would be).
        let answer = self.timed(async {
            match evalsha.query_async(&mut *connection).await {
                Err(error) if no_script(&error) => {
                    let mut invocation = self.script.key(key);
                    invocation.arg(seen).arg(new).arg(ttl_ms);
                    invocation.invoke_async(connection).await
                }
                answer => answer,
            }
        });
        answer.await.map_err(unavailable)
    }
}

fn no_script(error: &RedisError) -> bool {
    error.kind() == ErrorKind::Server(ServerErrorKind::NoScript)
}
