//! Storage: every trait the services read and write through, with its impls — all of the
//! sidecar's I/O to Redis and the usage database is under this module.
//!
//! - Counters (this module): where the buckets of `strict` and `global` rules live, and what
//!   `global` sync batches need besides (which batches were applied, which nodes synced
//!   lately).
//! - [`usage`]: the live usage aggregates between ingestion and the flush ([`usage::UsageStore`],
//!   in memory or in Redis).
//! - [`sql`]: the usage database, PostgreSQL or SQLite ([`sql::UsageSink`],
//!   [`sql::UsageQueries`], [`sql::RequestLogStore`]); every SQL statement is there.
//!
//! Each trait has one contract test body run against each of its impls.
//!
//! For counters, one trait, [`CounterStore`], with two impls: [`MemoryStore`] (in-process, the embedded
//! default for a single sidecar) and [`RedisStore`] (shared by every sidecar using one Redis).
//! A `strict` check and a `global` sync entry of the same `(rule, key)` use the same bucket, so
//! a rule switched from one mode to the other keeps its state.

mod memory;
mod redis;
pub mod sql;
pub mod usage;

#[cfg(test)]
pub(crate) mod contract;

use std::future::Future;

use tollgate_filter::Nanos;
use tollgate_filter::algorithm::State;

pub(crate) use self::redis::connection::Connection as RedisConnection;
pub use self::redis::{CAS_SCRIPT, NODES_SCRIPT, RedisStore, SEQ_SCRIPT, redact_url};
pub use memory::MemoryStore;

/// A node counts in [`BatchStart::nodes`] until this long after its latest batch (10 s).
pub const NODE_TTL: Nanos = 10_000_000_000;

/// A sender's latest applied `seq` is remembered at least this long after its latest batch
/// (1 h), unless the in-memory store meets more senders than it holds (see [`MemoryStore`]).
pub const SENDER_TTL: Nanos = 3_600_000_000_000;

/// What [`CounterStore::begin_batch`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchStart {
    /// The batch's `seq` is higher than any applied before for its sender: it is now marked
    /// as applied and its hits must be counted. `false`: a duplicate (or an older batch), to
    /// be answered without counting anything.
    pub fresh: bool,
    /// Distinct nodes whose latest batch is less than [`NODE_TTL`] old, this one included
    /// (≥ 1).
    pub nodes: u64,
}

/// A bucket's identity: the rule's name and the filter's hash of the request's key parts.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CounterKey {
    /// The rule's name.
    pub rule: String,
    /// The filter's bucket hash.
    pub key: u64,
}

/// What a decision closure asks the store to do with the state it was shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Write {
    /// Nothing changed: write nothing.
    Nothing,
    /// Store the state; from `idle_at` on it equals `State::default()` and may be forgotten
    /// (an in-memory eviction, a Redis TTL).
    State {
        /// See [`tollgate_filter::algorithm::Algorithm::idle_at`].
        idle_at: Nanos,
    },
}

/// Why the store could not run an update.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    /// Every slot the store may use holds an active bucket; evicting one would forget permits.
    #[error("the counter store is full ({capacity} active buckets)")]
    Full {
        /// The store's capacity.
        capacity: usize,
    },
    /// The backend did not answer (connection refused, timeout, …): transient.
    #[error("the counter store is unavailable: {0}")]
    Unavailable(String),
    /// Another writer kept changing the key; the update was retried and gave up.
    #[error("too many concurrent updates of one key")]
    Contended,
    /// The usage log could not make a usage batch durable (its bound, a full disk, …): the
    /// batch is not counted (503) and the filter sends it again ([`crate::wal`]).
    #[error("{0}")]
    UsageLog(String),
}

impl StoreError {
    /// A short, stable name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Full { .. } => "store_full",
            StoreError::Unavailable(_) => "store_unavailable",
            StoreError::Contended => "store_contended",
            StoreError::UsageLog(_) => "usage_log_unavailable",
        }
    }
}

/// A key → [`State`] store with an atomic read-decide-write per key.
///
/// [`CounterStore::update`] is the one primitive: read the key's state (a fresh
/// `State::default()` when absent or idle), let `decide` look at it and change it, then write it
/// back — atomically with respect to every other update of the same key. This is the shape of
/// the filter's shared-data slots (`engine::slots`: read with a CAS token, decide, write with
/// the token, retry on conflict), and of [`RedisStore`]: `GET`, decide, then a Lua
/// compare-and-set keyed on the old value, retried on conflict (it also works on Redis
/// Cluster).
///
/// Because an impl may retry, `decide` may run more than once, each time on a freshly read
/// state; its result is that of the run whose write succeeded. `decide` must change the state
/// only when it returns [`Write::State`] (an impl may keep or drop changes made otherwise);
/// [`tollgate_filter::algorithm::Algorithm::acquire`] changes it only when granting.
pub trait CounterStore: Send + Sync + 'static {
    /// Runs `decide` on `key`'s state at `now` (used to tell idle states from live ones) and
    /// stores the result as `decide` asks; returns `decide`'s value.
    fn update<F, R>(
        &self,
        key: &CounterKey,
        now: Nanos,
        decide: F,
    ) -> impl Future<Output = Result<R, StoreError>> + Send
    where
        F: FnMut(&mut State) -> (R, Write) + Send,
        R: Send;

    /// Starts a `global` sync batch `(sender, seq)` from `node` at `now`: marks `seq` as the
    /// sender's latest applied batch if it is higher than the one remembered (atomically, so
    /// that of two concurrent deliveries of one batch exactly one is fresh), records `node` as
    /// seen at `now`, and counts the nodes seen in the last [`NODE_TTL`] (`now` included,
    /// `now − NODE_TTL` excluded).
    ///
    /// The mark comes before the batch's hits are applied: a failure after it loses the
    /// batch's hits (the filter's retry is then a duplicate) rather than counting them twice.
    fn begin_batch(
        &self,
        sender: u64,
        seq: u64,
        node: u64,
        now: Nanos,
    ) -> impl Future<Output = Result<BatchStart, StoreError>> + Send;

    /// Answers when the store can serve updates (the readiness probe).
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
}
