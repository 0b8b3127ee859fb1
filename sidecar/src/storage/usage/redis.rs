//! The Redis usage store: aggregates shared by every sidecar on one Redis (or Redis Cluster),
//! surviving sidecar crashes.
//!
//! # Keys (prefix `usage`; `{t}` is the tenant as a Redis Cluster hash tag)
//!
//! | key | type | what |
//! | --- | --- | --- |
//! | `usage:{t}:<date>:<endpoint>` | hash | live aggregate: [`COUNTER_FIELDS`](super::COUNTER_FIELDS) and `plan` |
//! | `usage:{t}:users:<date>` | HyperLogLog | the day's distinct users (expires [`MAX_AGE_DAYS`] + 2 days after its last write) |
//! | `usage:{t}:dirty` | set | live keys of the tenant changed since it was last staged |
//! | `usage:{t}:seq:<sender, 16 hex digits>` | string | the sender's latest applied `seq` for this tenant (20 digits; expires [`SENDER_TTL`] after its last batch) |
//! | `usage:{t}:staging` | list | flush ids staged and not yet released, oldest first |
//! | `usage:{t}:flush:<id>` | set | the staged keys of one flush id |
//! | `usage:{t}:flush:<id>:<date>:<endpoint>` | hash | a staged aggregate (a renamed live hash) |
//! | `usage:{t}:flush:<id>:users` | hash | date → the day's distinct users when staged |
//! | `usage:{t}:stages` | string | the tenant's stage generation: stages that moved something (see [`super::unflushed`]) |
//! | `usage:dirty-tenants` | set | tenants with live changes |
//! | `usage:flushing-tenants` | set | tenants whose flush has started and not finished |
//!
//! The users HLL is `users:<date>` rather than `<date>:users`, so that no endpoint label can
//! name it (a date starts with a digit). Tenants cannot contain `{` or `}` (the filter's
//! validation), so every key of a tenant carries exactly the tag `{t}`: one slot per tenant,
//! and each script below touches one tenant's keys only — legal on a cluster.
//!
//! # Ingestion
//!
//! Batches are applied in groups (group commit, `redis/ingest.rs`): concurrently arriving
//! batches (one per sender) are merged per live hash, and per tenant ONE [`INGEST_SCRIPT`]
//! call checks the marks of all the group's batches for that tenant and either adds the merged
//! deltas and moves every mark to its batch's `seq`, or — when some mark is already there (a
//! duplicate) — writes nothing and names the stale batches, and is called again with the
//! others merged. So per `(sender, seq, tenant)` the records and the mark are still written in
//! one step, exactly as if each batch had its own script; a crash of the sidecar between two
//! tenants' scripts leaves some applied, and the filter's retry of the same `(sender, seq)`
//! applies exactly the others. Only non-zero counters are written. A batch is answered only
//! once its group is in Redis.
//!
//! The usage log's replay hands over runs of consecutive batches instead
//! ([`UsageStore::ingest_in_order`], `redis/ingest/in_order.rs`): per tenant one script per
//! span of up to 16,384 records, many batches of a sender in one script, each mark checked at
//! the sender's first `seq` of the span and left at its last ([`REPLAY_SCRIPT`]: the same
//! script, writing aggregates that do not exist yet with one `HSET`).
//!
//! Then one `SADD usage:dirty-tenants` of every tenant of the group — the one cross-slot step,
//! hence outside the scripts. It comes *after* them and is made for duplicates too, which
//! makes it safe: the flush removes a tenant from the set *before* staging it, so usage
//! written by a script after a stage is always followed by its own `SADD` and found by the
//! next flush; and a sidecar that crashed between script and `SADD` never answered, so the
//! filter retries the batch, which is then a duplicate but repeats the `SADD`.
//!
//! # Flush steps ([`UsageStore::stage`], `snapshot`, `release`, `finish`)
//!
//! `stage`: `SADD usage:flushing-tenants t`, `SREM usage:dirty-tenants t`, then
//! [`STAGE_SCRIPT`] renames every dirty live hash to its staged name under a fresh flush id
//! (new usage then goes to a fresh hash), records the users counts (`PFCOUNT`), and answers
//! every staged id of the tenant. `snapshot` reads a staged id whole ([`SNAPSHOT_SCRIPT`]),
//! `release` deletes it ([`RELEASE_SCRIPT`]), `finish` removes the tenant from
//! `usage:flushing-tenants`. A flush interrupted anywhere leaves the tenant in one of the two
//! tenant sets, so the next flush finds its leftovers.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use redis::{RedisError, Script, Value};
use tollgate_filter::Nanos;
use tollgate_filter::usage::UsageBatch;

mod ingest;
mod scripts;
mod unflushed;

pub use self::scripts::{
    INGEST_SCRIPT, RELEASE_SCRIPT, REPLAY_SCRIPT, SNAPSHOT_SCRIPT, STAGE_SCRIPT, UNFLUSHED_SCRIPT,
};
use super::{Ingested, Snapshot, StoreError, UsageStore};
use crate::storage::RedisConnection as Connection;

/// How long a command or connection attempt may take.
const TIMEOUT: Duration = Duration::from_secs(2);
const NANOS_PER_MILLI: u64 = 1_000_000;
const DAY_MS: u64 = 86_400_000;

/// A [`UsageStore`] in Redis (see the module docs for keys and scripts).
pub struct RedisUsageStore {
    shared: Arc<Shared>,
    /// The group committer's queue, started by the first batch (inside its runtime).
    queue: OnceLock<ingest::Queue>,
}

/// What the store and its group committer share.
#[derive(Clone)]
struct Shared {
    connection: Connection,
    ingest: Script,
    replay: Script,
    stage: Script,
    snapshot: Script,
    release: Script,
    unflushed: Script,
    prefix: String,
    /// The usage log's marker: batches are refused while Redis lost it ([`crate::wal`]).
    marker: Option<Arc<crate::wal::Marker>>,
}

impl Shared {
    fn tenant_base(&self, tenant: &str) -> String {
        format!("{}:{{{tenant}}}:", self.prefix)
    }

    fn dirty_tenants_key(&self) -> String {
        format!("{}:dirty-tenants", self.prefix)
    }
}

impl RedisUsageStore {
    /// A store on the Redis at `url`; connects lazily (a Redis that is down makes operations
    /// fail, never this call). Must be called inside a Tokio runtime.
    pub fn new(url: &str) -> Result<Self, StoreError> {
        Connection::single(url, TIMEOUT).map(Self::with_connection)
    }

    /// A store on the Redis Cluster reachable through the comma-separated seed `urls`.
    pub fn new_cluster(urls: &str) -> Result<Self, StoreError> {
        Connection::cluster(urls, TIMEOUT).map(Self::with_connection)
    }

    fn with_connection(connection: Connection) -> Self {
        RedisUsageStore {
            shared: Arc::new(Shared {
                connection,
                ingest: Script::new(INGEST_SCRIPT),
                replay: Script::new(REPLAY_SCRIPT),
                stage: Script::new(STAGE_SCRIPT),
                snapshot: Script::new(SNAPSHOT_SCRIPT),
                release: Script::new(RELEASE_SCRIPT),
                unflushed: Script::new(UNFLUSHED_SCRIPT),
                prefix: "usage".into(),
                marker: None,
            }),
            queue: OnceLock::new(),
        }
    }

    /// The same store with keys under `prefix` instead of `usage` (no braces in it).
    pub fn with_prefix(self, prefix: impl Into<String>) -> Self {
        let mut shared = Shared::clone(&self.shared);
        shared.prefix = prefix.into();
        RedisUsageStore {
            shared: Arc::new(shared),
            queue: OnceLock::new(),
        }
    }

    /// The same store refusing batches while `marker` is missing from Redis (it lost its
    /// data and the usage log replays it first: [`crate::wal`]).
    pub fn with_marker(self, marker: Arc<crate::wal::Marker>) -> Self {
        let mut shared = Shared::clone(&self.shared);
        shared.marker = Some(marker);
        RedisUsageStore {
            shared: Arc::new(shared),
            queue: OnceLock::new(),
        }
    }

    /// `usage:{t}:`, the start of every key of tenant `t`.
    pub fn tenant_base(&self, tenant: &str) -> String {
        self.shared.tenant_base(tenant)
    }

    /// The live hash of `(tenant, date, endpoint)`.
    pub fn live_key(&self, tenant: &str, date: &str, endpoint: &str) -> String {
        format!("{}{date}:{endpoint}", self.tenant_base(tenant))
    }

    /// The set of tenants with live changes.
    pub fn dirty_tenants_key(&self) -> String {
        self.shared.dirty_tenants_key()
    }

    /// The set of tenants whose flush has started and not finished.
    pub fn flushing_tenants_key(&self) -> String {
        format!("{}:flushing-tenants", self.shared.prefix)
    }

    async fn ingest_async(&self, batch: &UsageBatch) -> Result<Ingested, StoreError> {
        let queue = self
            .queue
            .get_or_init(|| ingest::start(Arc::clone(&self.shared)));
        let parts = ingest::submit(&self.shared, queue, batch).await?;
        Ok(parts
            .into_iter()
            .fold(Ingested::default(), |mut sum, (fresh, n)| {
                if fresh {
                    sum.applied += n;
                } else {
                    sum.duplicate += n;
                }
                sum
            }))
    }

    async fn stage_async(&self, tenant: &str, flush_id: &str) -> Result<Vec<String>, StoreError> {
        let mut connection = self.shared.connection.clone();
        redis::cmd("SADD")
            .arg(self.flushing_tenants_key())
            .arg(tenant)
            .query_async::<()>(&mut connection)
            .await
            .map_err(unavailable)?;
        redis::cmd("SREM")
            .arg(self.dirty_tenants_key())
            .arg(tenant)
            .query_async::<()>(&mut connection)
            .await
            .map_err(unavailable)?;
        let base = self.tenant_base(tenant);
        self.shared
            .stage
            .key(format!("{base}dirty"))
            .key(format!("{base}staging"))
            .key(format!("{base}flush:{flush_id}"))
            .key(format!("{base}flush:{flush_id}:users"))
            .arg(&base)
            .arg(flush_id)
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)
    }

    async fn snapshot_async(&self, tenant: &str, flush_id: &str) -> Result<Snapshot, StoreError> {
        let base = self.tenant_base(tenant);
        let staged_base = format!("{base}flush:{flush_id}:");
        let mut connection = self.shared.connection.clone();
        let answer: Value = self
            .shared
            .snapshot
            .key(format!("{base}flush:{flush_id}"))
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        let items: Vec<Value> = redis::from_redis_value(answer).map_err(corrupt)?;
        let (rows, users) = unflushed::parse_hashes(items, &staged_base)?;
        let mut snapshot = Snapshot {
            tenant: tenant.to_owned(),
            flush_id: flush_id.to_owned(),
            rows,
            users,
        };
        snapshot
            .rows
            .sort_by(|a, b| (&a.date, &a.endpoint).cmp(&(&b.date, &b.endpoint)));
        snapshot.users.sort();
        Ok(snapshot)
    }
}

impl UsageStore for RedisUsageStore {
    fn ingest(
        &self,
        batch: &UsageBatch,
        _now: Nanos,
    ) -> impl Future<Output = Result<Ingested, StoreError>> + Send {
        self.ingest_async(batch)
    }

    fn ingest_in_order(
        &self,
        batches: &[UsageBatch],
        _now: Nanos,
    ) -> impl Future<Output = Result<Ingested, StoreError>> + Send {
        ingest::in_order(&self.shared, batches)
    }

    fn dirty_tenants(&self) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send {
        let mut connection = self.shared.connection.clone();
        async move {
            let mut tenants = Vec::new();
            for key in [self.dirty_tenants_key(), self.flushing_tenants_key()] {
                let members: Vec<String> = redis::cmd("SMEMBERS")
                    .arg(key)
                    .query_async(&mut connection)
                    .await
                    .map_err(unavailable)?;
                tenants.extend(members);
            }
            tenants.sort();
            tenants.dedup();
            Ok(tenants)
        }
    }

    fn stage(
        &self,
        tenant: &str,
        flush_id: &str,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send {
        self.stage_async(tenant, flush_id)
    }

    fn snapshot(
        &self,
        tenant: &str,
        flush_id: &str,
    ) -> impl Future<Output = Result<Snapshot, StoreError>> + Send {
        self.snapshot_async(tenant, flush_id)
    }

    fn release(
        &self,
        tenant: &str,
        flush_id: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let base = self.tenant_base(tenant);
        let mut connection = self.shared.connection.clone();
        let mut invocation = self.shared.release.prepare_invoke();
        invocation
            .key(format!("{base}flush:{flush_id}"))
            .key(format!("{base}staging"))
            .arg(flush_id);
        async move {
            invocation
                .invoke_async::<()>(&mut connection)
                .await
                .map_err(unavailable)
        }
    }

    fn finish(&self, tenant: &str) -> impl Future<Output = Result<(), StoreError>> + Send {
        let mut connection = self.shared.connection.clone();
        let command = redis::cmd("SREM")
            .arg(self.flushing_tenants_key())
            .arg(tenant)
            .clone();
        async move {
            command
                .query_async::<()>(&mut connection)
                .await
                .map_err(unavailable)
        }
    }

    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
        let mut connection = self.shared.connection.clone();
        async move {
            redis::cmd("PING")
                .query_async::<String>(&mut connection)
                .await
                .map(drop)
                .map_err(unavailable)
        }
    }
}

fn unavailable(error: RedisError) -> StoreError {
    StoreError::Unavailable(format!("redis: {error}"))
}

fn corrupt(error: impl std::fmt::Display) -> StoreError {
    bad(error.to_string())
}

fn bad(what: String) -> StoreError {
    StoreError::Unavailable(format!("unexpected usage data in Redis: {what}"))
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests;
