//! Where usage lives between ingestion and the flush: the filter's usage batches
//! (`POST /v1/usage`) added into live aggregates per `(tenant, date, endpoint)`, which the
//! flush ([`crate::services::flush`]) moves into the usage database's `api_usage_daily`,
//! exactly once across crashes.
//!
//! One trait, [`UsageStore`], with two impls: [`MemoryUsageStore`] (in-process; what a crash
//! of the sidecar loses, it loses — the default without Redis, flushed on shutdown too) and
//! [`RedisUsageStore`] (shared by every sidecar on one Redis or Redis Cluster; survives
//! sidecar crashes). [`AnyUsageStore`] picks one at run time.
//!
//! The flush side works in three steps per tenant, each an atomic store operation
//! ([`UsageStore::stage`], [`UsageStore::snapshot`] + one database transaction,
//! [`UsageStore::release`]); [`crate::services::flush`] documents why that is exactly once.

mod memory;
mod redis;
pub mod unflushed;

use std::future::Future;

use tollgate_filter::Nanos;
use tollgate_filter::usage::{LATENCY_BUCKETS, UsageBatch};

pub use self::memory::MemoryUsageStore;
pub use self::redis::{
    INGEST_SCRIPT, RELEASE_SCRIPT, REPLAY_SCRIPT, RedisUsageStore, SNAPSHOT_SCRIPT, STAGE_SCRIPT,
    UNFLUSHED_SCRIPT,
};
pub use self::unflushed::{LiveStore, Unflushed, UnflushedUsage};
pub use crate::storage::StoreError;

/// A record's date may be at most this many days before the sidecar's today (late batches
/// after a long outage); older ones are refused (422), so a batch cannot create aggregates for
/// arbitrary days.
pub const MAX_AGE_DAYS: i64 = 7;

/// What [`UsageStore::ingest`] did with a batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ingested {
    /// Records counted now.
    pub applied: u64,
    /// Records of tenants for which this `(sender, seq)` or a newer one was applied before.
    pub duplicate: u64,
}

/// The counters of one aggregate (`api_usage_daily`'s counters).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Requests.
    pub requests: u64,
    /// Request bytes.
    pub bytes_in: u64,
    /// Response bytes.
    pub bytes_out: u64,
    /// 4xx responses.
    pub errors_4xx: u64,
    /// 5xx responses.
    pub errors_5xx: u64,
    /// Durations added up (ms).
    pub latency_ms_sum: u64,
    /// Requests per latency bucket.
    pub latency_buckets: [u64; LATENCY_BUCKETS],
}

/// The Redis hash fields of [`Counters`], in [`Counters::values`] order.
pub const COUNTER_FIELDS: [&str; 18] = [
    "requests",
    "bytes_in",
    "bytes_out",
    "errors_4xx",
    "errors_5xx",
    "latency_ms_sum",
    "lat_0",
    "lat_1",
    "lat_2",
    "lat_3",
    "lat_4",
    "lat_5",
    "lat_6",
    "lat_7",
    "lat_8",
    "lat_9",
    "lat_10",
    "lat_11",
];

impl Counters {
    /// The values in [`COUNTER_FIELDS`] order.
    pub fn values(&self) -> [u64; 18] {
        let mut values = [0; 18];
        let scalars = [
            self.requests,
            self.bytes_in,
            self.bytes_out,
            self.errors_4xx,
            self.errors_5xx,
            self.latency_ms_sum,
        ];
        for (slot, value) in values
            .iter_mut()
            .zip(scalars.into_iter().chain(self.latency_buckets))
        {
            *slot = value;
        }
        values
    }

    /// Sets the counter named `field` (one of [`COUNTER_FIELDS`]); `false` for other names.
    pub fn set(&mut self, field: &str, value: u64) -> bool {
        let slot = match field {
            "requests" => &mut self.requests,
            "bytes_in" => &mut self.bytes_in,
            "bytes_out" => &mut self.bytes_out,
            "errors_4xx" => &mut self.errors_4xx,
            "errors_5xx" => &mut self.errors_5xx,
            "latency_ms_sum" => &mut self.latency_ms_sum,
            other => {
                let Some(bucket) = other
                    .strip_prefix("lat_")
                    .and_then(|n| n.parse::<usize>().ok())
                    .and_then(|n| self.latency_buckets.get_mut(n))
                else {
                    return false;
                };
                bucket
            }
        };
        *slot = value;
        true
    }

    /// Adds `other` in (saturating).
    pub fn add(&mut self, other: &Counters) {
        // Destructured, so that a new counter cannot be forgotten here.
        let Counters {
            requests,
            bytes_in,
            bytes_out,
            errors_4xx,
            errors_5xx,
            latency_ms_sum,
            latency_buckets,
        } = other;
        self.requests = self.requests.saturating_add(*requests);
        self.bytes_in = self.bytes_in.saturating_add(*bytes_in);
        self.bytes_out = self.bytes_out.saturating_add(*bytes_out);
        self.errors_4xx = self.errors_4xx.saturating_add(*errors_4xx);
        self.errors_5xx = self.errors_5xx.saturating_add(*errors_5xx);
        self.latency_ms_sum = self.latency_ms_sum.saturating_add(*latency_ms_sum);
        for (bucket, more) in self.latency_buckets.iter_mut().zip(latency_buckets) {
            *bucket = bucket.saturating_add(*more);
        }
    }
}

impl From<&tollgate_filter::usage::UsageRecord> for Counters {
    fn from(record: &tollgate_filter::usage::UsageRecord) -> Self {
        Counters {
            requests: record.requests,
            bytes_in: record.bytes_in,
            bytes_out: record.bytes_out,
            errors_4xx: record.errors_4xx,
            errors_5xx: record.errors_5xx,
            latency_ms_sum: record.latency_ms_sum,
            latency_buckets: record.latency_buckets,
        }
    }
}

/// One staged aggregate: a row to add into `api_usage_daily`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsageRow {
    /// `YYYY-MM-DD`.
    pub date: String,
    /// The endpoint label.
    pub endpoint: String,
    /// The tenant's plan as last reported ("" when never).
    pub plan: String,
    /// The counts to add.
    pub counters: Counters,
}

/// Everything staged under one flush id of one tenant: what one database transaction adds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// The tenant.
    pub tenant: String,
    /// The flush id (recorded in `usage_flushes` by the transaction that applies it).
    pub flush_id: String,
    /// Rows to add, sorted by `(date, endpoint)`.
    pub rows: Vec<UsageRow>,
    /// The day's distinct users as counted when staged, per date (sorted): a running count
    /// of the whole day, not an increment.
    pub users: Vec<(String, u64)>,
}

/// Where usage aggregates live between ingestion and the flush.
///
/// Ingestion is exactly once per `(sender, seq, tenant)`; the flush side moves a tenant's
/// aggregates out in steps that a crash may interrupt anywhere (see
/// [`crate::services::flush`]).
pub trait UsageStore: Send + Sync + 'static {
    /// Adds `batch` (already validated) at `now`: per tenant of the batch, atomically, either
    /// all of the tenant's records and a mark that `(sender, seq)` was applied for the
    /// tenant, or nothing when the tenant's mark for `sender` is already `≥ seq`.
    fn ingest(
        &self,
        batch: &UsageBatch,
        now: Nanos,
    ) -> impl Future<Output = Result<Ingested, StoreError>> + Send;

    /// Adds `batches` (already validated) at `now` exactly as if each were [`ingest`]ed in
    /// this order, each after the one before it had been answered (the usage log's replay):
    /// per `(sender, tenant)` a batch counts when its `seq` is above the mark that the batches
    /// before it left. Stops at a failure: per tenant, no batch after one whose records of the
    /// tenant were not applied is applied, so running it again (the marks skip what did land)
    /// counts every batch once. Stores may apply many batches in one step; answers the sums.
    ///
    /// [`ingest`]: UsageStore::ingest
    fn ingest_in_order(
        &self,
        batches: &[UsageBatch],
        now: Nanos,
    ) -> impl Future<Output = Result<Ingested, StoreError>> + Send {
        async move {
            let mut sum = Ingested::default();
            for batch in batches {
                let ingested = self.ingest(batch, now).await?;
                sum.applied += ingested.applied;
                sum.duplicate += ingested.duplicate;
            }
            Ok(sum)
        }
    }

    /// Tenants that may have something to flush: live aggregates, or a flush left unfinished.
    fn dirty_tenants(&self) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;

    /// Step 1 of a tenant's flush: atomically moves the tenant's live aggregates (and its
    /// distinct-user counts) into a snapshot named `flush_id` — later ingestion goes to fresh
    /// aggregates — and returns every snapshot id of the tenant not yet released, oldest first,
    /// this one (last) included if anything was staged (older ones are leftovers of an
    /// interrupted flush). Applying them in this order keeps the newest plan last.
    fn stage(
        &self,
        tenant: &str,
        flush_id: &str,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;

    /// Reads the snapshot `flush_id` of `tenant` (unchanged until released).
    fn snapshot(
        &self,
        tenant: &str,
        flush_id: &str,
    ) -> impl Future<Output = Result<Snapshot, StoreError>> + Send;

    /// Step 3: deletes the snapshot (once the database has it).
    fn release(
        &self,
        tenant: &str,
        flush_id: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// After the last snapshot of `tenant` was released: the tenant needs no more flushing
    /// unless new usage arrived meanwhile.
    fn finish(&self, tenant: &str) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Answers when the store can serve.
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// The usage store chosen at start: in this process or in Redis.
// One per process: the in-memory variant's size does not matter.
#[allow(clippy::large_enum_variant)]
pub enum AnyUsageStore {
    /// [`MemoryUsageStore`].
    Memory(MemoryUsageStore),
    /// [`RedisUsageStore`].
    Redis(RedisUsageStore),
}

macro_rules! delegate {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            AnyUsageStore::Memory($store) => $call.await,
            AnyUsageStore::Redis($store) => $call.await,
        }
    };
}

impl UsageStore for AnyUsageStore {
    async fn ingest(&self, batch: &UsageBatch, now: Nanos) -> Result<Ingested, StoreError> {
        delegate!(self, store => store.ingest(batch, now))
    }

    async fn ingest_in_order(
        &self,
        batches: &[UsageBatch],
        now: Nanos,
    ) -> Result<Ingested, StoreError> {
        delegate!(self, store => store.ingest_in_order(batches, now))
    }

    async fn dirty_tenants(&self) -> Result<Vec<String>, StoreError> {
        delegate!(self, store => store.dirty_tenants())
    }

    async fn stage(&self, tenant: &str, flush_id: &str) -> Result<Vec<String>, StoreError> {
        delegate!(self, store => store.stage(tenant, flush_id))
    }

    async fn snapshot(&self, tenant: &str, flush_id: &str) -> Result<Snapshot, StoreError> {
        delegate!(self, store => store.snapshot(tenant, flush_id))
    }

    async fn release(&self, tenant: &str, flush_id: &str) -> Result<(), StoreError> {
        delegate!(self, store => store.release(tenant, flush_id))
    }

    async fn finish(&self, tenant: &str) -> Result<(), StoreError> {
        delegate!(self, store => store.finish(tenant))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        delegate!(self, store => store.ping())
    }
}

impl UnflushedUsage for AnyUsageStore {
    async fn unflushed(&self, tenant: &str) -> Result<Unflushed, StoreError> {
        delegate!(self, store => store.unflushed(tenant))
    }

    async fn generations(&self, tenants: &[String]) -> Result<Vec<u64>, StoreError> {
        delegate!(self, store => store.generations(tenants))
    }

    async fn live_users(
        &self,
        tenant: &str,
        dates: &[String],
    ) -> Result<std::collections::BTreeMap<String, u64>, StoreError> {
        delegate!(self, store => store.live_users(tenant, dates))
    }
}

/// The records of `batch` grouped by tenant, in first-seen order.
pub(crate) fn by_tenant(
    batch: &UsageBatch,
) -> Vec<(&str, Vec<&tollgate_filter::usage::UsageRecord>)> {
    let mut groups: Vec<(&str, Vec<&tollgate_filter::usage::UsageRecord>)> = Vec::new();
    for record in &batch.records {
        match groups
            .iter_mut()
            .find(|(tenant, _)| *tenant == record.tenant)
        {
            Some((_, records)) => records.push(record),
            None => groups.push((&record.tenant, vec![record])),
        }
    }
    groups
}

/// A new flush id: the time and 64 random bits, 32 hex digits (unique across sidecars).
pub fn new_flush_id(now: Nanos) -> String {
    use std::hash::{BuildHasher, Hasher};
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    format!("{now:016x}{:016x}", hasher.finish())
}

#[cfg(test)]
pub(crate) mod contract;
