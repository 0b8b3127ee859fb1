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
//! Per tenant of a batch, [`INGEST_SCRIPT`] checks the tenant's mark for the sender and either
//! applies every record of the tenant and moves the mark to `seq`, or does nothing (a
//! duplicate). Redis runs a script whole, so "applied and marked" is one step; a crash of the
//! sidecar between two tenants' scripts leaves some applied, and the filter's retry of the
//! same `(sender, seq)` applies exactly the others.
//!
//! Then one `SADD usage:dirty-tenants` of every tenant of the batch — the one cross-slot step,
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
use std::time::Duration;

use futures_util::future::try_join_all;
use redis::{RedisError, Script, Value};
use tollgate_filter::Nanos;
use tollgate_filter::usage::{UsageBatch, UsageRecord};

mod scripts;

pub use self::scripts::{INGEST_SCRIPT, RELEASE_SCRIPT, SNAPSHOT_SCRIPT, STAGE_SCRIPT};
use super::{
    Counters, Ingested, MAX_AGE_DAYS, Snapshot, StoreError, UsageRow, UsageStore, by_tenant,
};
use crate::storage::{RedisConnection as Connection, SENDER_TTL};

/// How long a command or connection attempt may take.
const TIMEOUT: Duration = Duration::from_secs(2);
const NANOS_PER_MILLI: u64 = 1_000_000;
const DAY_MS: u64 = 86_400_000;

/// A [`UsageStore`] in Redis (see the module docs for keys and scripts).
pub struct RedisUsageStore {
    connection: Connection,
    ingest: Script,
    stage: Script,
    snapshot: Script,
    release: Script,
    prefix: String,
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
            connection,
            ingest: Script::new(INGEST_SCRIPT),
            stage: Script::new(STAGE_SCRIPT),
            snapshot: Script::new(SNAPSHOT_SCRIPT),
            release: Script::new(RELEASE_SCRIPT),
            prefix: "usage".into(),
        }
    }

    /// The same store with keys under `prefix` instead of `usage` (no braces in it).
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// `usage:{t}:`, the start of every key of tenant `t`.
    pub fn tenant_base(&self, tenant: &str) -> String {
        format!("{}:{{{tenant}}}:", self.prefix)
    }

    /// The live hash of `(tenant, date, endpoint)`.
    pub fn live_key(&self, tenant: &str, date: &str, endpoint: &str) -> String {
        format!("{}{date}:{endpoint}", self.tenant_base(tenant))
    }

    /// The set of tenants with live changes.
    pub fn dirty_tenants_key(&self) -> String {
        format!("{}:dirty-tenants", self.prefix)
    }

    /// The set of tenants whose flush has started and not finished.
    pub fn flushing_tenants_key(&self) -> String {
        format!("{}:flushing-tenants", self.prefix)
    }

    async fn ingest_tenant(
        &self,
        sender: u64,
        seq: u64,
        tenant: &str,
        records: &[&UsageRecord],
    ) -> Result<bool, StoreError> {
        let base = self.tenant_base(tenant);
        let mut invocation = self.ingest.prepare_invoke();
        invocation
            .key(format!("{base}seq:{sender:016x}"))
            .key(format!("{base}dirty"));
        invocation
            .arg(format!("{seq:020}"))
            .arg(SENDER_TTL / NANOS_PER_MILLI)
            .arg((MAX_AGE_DAYS as u64 + 2) * DAY_MS)
            .arg(records.len());
        for record in records {
            invocation
                .key(format!("{base}{}:{}", record.date, record.endpoint))
                .key(format!("{base}users:{}", record.date));
            for value in Counters::from(*record).values() {
                invocation.arg(value);
            }
            invocation
                .arg(record.plan.as_deref().unwrap_or(""))
                .arg(record.users.len());
            for user in &record.users {
                invocation.arg(format!("{user:016x}"));
            }
        }
        let mut connection = self.connection.clone();
        let fresh: u8 = invocation
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(fresh == 1)
    }

    async fn ingest_async(&self, batch: &UsageBatch) -> Result<Ingested, StoreError> {
        let groups = by_tenant(batch);
        let tenants: Vec<String> = groups.iter().map(|(t, _)| (*t).to_owned()).collect();
        // One script per tenant, all in flight at once on the multiplexed connection (a
        // batch holds at most 1024 records, so at most that many tenants).
        let mut calls = Vec::with_capacity(groups.len());
        for (tenant, records) in &groups {
            calls.push(self.ingest_tenant(batch.sender, batch.seq, tenant, records));
        }
        let fresh = try_join_all(calls).await?;
        let results = fresh
            .into_iter()
            .zip(groups.iter().map(|(_, records)| records.len() as u64));
        if !tenants.is_empty() {
            let mut connection = self.connection.clone();
            redis::cmd("SADD")
                .arg(self.dirty_tenants_key())
                .arg(&tenants)
                .query_async::<()>(&mut connection)
                .await
                .map_err(unavailable)?;
        }
        Ok(results.fold(Ingested::default(), |mut sum, (fresh, n)| {
            if fresh {
                sum.applied += n;
            } else {
                sum.duplicate += n;
            }
            sum
        }))
    }

    async fn stage_async(&self, tenant: &str, flush_id: &str) -> Result<Vec<String>, StoreError> {
        let mut connection = self.connection.clone();
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
        self.stage
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
        let mut connection = self.connection.clone();
        let answer: Value = self
            .snapshot
            .key(format!("{base}flush:{flush_id}"))
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        let items: Vec<Value> = redis::from_redis_value(answer).map_err(corrupt)?;
        let mut snapshot = Snapshot {
            tenant: tenant.to_owned(),
            flush_id: flush_id.to_owned(),
            ..Snapshot::default()
        };
        let mut items = items.into_iter();
        while let (Some(key), Some(fields)) = (items.next(), items.next()) {
            let key: String = redis::from_redis_value(key).map_err(corrupt)?;
            let fields: Vec<String> = redis::from_redis_value(fields).map_err(corrupt)?;
            let rest = key
                .strip_prefix(&staged_base)
                .ok_or_else(|| bad(format!("{key} is not staged under {flush_id}")))?;
            let pairs = fields.chunks_exact(2).filter_map(|pair| match pair {
                [field, value] => Some((field.as_str(), value.as_str())),
                _ => None,
            });
            if rest == "users" {
                for (date, count) in pairs {
                    let count = count.parse().map_err(|_| bad(format!("{key}: {count}")))?;
                    snapshot.users.push((date.to_owned(), count));
                }
                continue;
            }
            let (date, endpoint) = match (rest.get(..10), rest.get(11..)) {
                (Some(date), Some(endpoint)) => (date, endpoint),
                _ => return Err(bad(format!("{key} names no date and endpoint"))),
            };
            let mut row = UsageRow {
                date: date.to_owned(),
                endpoint: endpoint.to_owned(),
                plan: String::new(),
                counters: Counters::default(),
            };
            for (field, value) in pairs {
                if field == "plan" {
                    row.plan = value.to_owned();
                } else {
                    let value = value.parse().map_err(|_| bad(format!("{key}: {value}")))?;
                    row.counters.set(field, value);
                }
            }
            snapshot.rows.push(row);
        }
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

    fn dirty_tenants(&self) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send {
        let mut connection = self.connection.clone();
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
        let mut connection = self.connection.clone();
        let mut invocation = self.release.prepare_invoke();
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
        let mut connection = self.connection.clone();
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
        let mut connection = self.connection.clone();
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
#[path = "redis_tests.rs"]
mod tests;
