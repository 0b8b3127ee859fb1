//! The usage database (PostgreSQL or SQLite, [`Database`]) behind these traits — every SQL
//! statement of the sidecar lives under this module:
//!
//! - [`UsageSink`]: step 2 of the usage flush, a staged snapshot added in one transaction,
//!   exactly once per flush id ([`sink`]).
//! - [`UsageQueries`]: what the tenant usage API reads ([`query`]).
//! - [`RequestLogStore`]: the detailed request log, written in batches, kept to its
//!   retention, read back ([`request_log`]).
//! - [`AlertStore`]: the quota alerts' outbox, decisions and deliveries written together,
//!   every delivery attempt kept ([`alerts`]).
//!
//! Each trait has one impl per database (`postgres/`, `sqlite/`: the SQL of that dialect) and
//! [`Database`] picks one at run time, matching on the database here and nowhere else. One
//! contract test body per trait runs against both databases (`contract/`, `tests.rs`).

pub mod alerts;
pub mod billing;
pub mod dashboard;
mod database;
mod postgres;
pub mod query;
pub mod registry;
pub mod request_log;
pub mod sink;
mod sqlite;
pub mod summary;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;

use tollgate_filter::usage::RequestLogEntry;

use self::alerts::{
    AlertStore, Attempt, DeliveryRecord, DueDelivery, FiredKey, NewAlert, Outcome, Recorded,
};
pub use self::database::{CONNECT_TIMEOUT, DEFAULT_URL, Database, DbError, redact};
pub use self::postgres::request_log::{copy_text, partition_name};
use self::query::DailyRow;
use self::registry::{Changes, KeyRecord, PlanRecord, Put, RegistryStore, TenantRecord};
use self::sink::Applied;
use self::summary::UsageSummary;
use crate::storage::usage::Snapshot;
/// The upper bounds, in milliseconds, of the latency histogram's buckets
/// (`api_usage_daily.latency_buckets`): element `i` counts requests that took at most
/// `LATENCY_BUCKET_BOUNDS_MS[i]` ms and more than the bound before it; one more element
/// counts the slower ones. Defined once, with the filter's usage protocol.
pub use tollgate_filter::usage::LATENCY_BUCKET_BOUNDS_MS;

/// Where flushed usage goes: `api_usage_daily`, `api_active_users_daily` and `usage_flushes`.
pub trait UsageSink: Send + Sync + 'static {
    /// Adds `snapshot` in one transaction together with its flush id, unless the id was
    /// applied before ([`Applied::Before`]: nothing is added again).
    fn apply(
        &self,
        snapshot: &Snapshot,
    ) -> impl Future<Output = Result<Applied, sqlx::Error>> + Send;

    /// How many tenants' snapshots may be applied at once (each holds one connection during
    /// its transaction; SQLite has one writer anyway).
    fn writers(&self) -> usize;

    /// Which of `ids` are recorded flush ids (their snapshots were applied): what the usage
    /// log's replay skips.
    fn committed(
        &self,
        ids: &[String],
    ) -> impl Future<Output = Result<HashSet<String>, sqlx::Error>> + Send;
}

/// What the tenant usage API reads.
pub trait UsageQueries: Send + Sync + 'static {
    /// The `api_usage_daily` rows of `tenant` from `from` to `to` (`YYYY-MM-DD`, both
    /// included), by date and endpoint.
    fn daily_rows(
        &self,
        tenant: &str,
        from: &str,
        to: &str,
    ) -> impl Future<Output = Result<Vec<DailyRow>, sqlx::Error>> + Send;

    /// The active users of `tenant` per day from `from` to `to` (days without a row are
    /// absent).
    fn active_users(
        &self,
        tenant: &str,
        from: &str,
        to: &str,
    ) -> impl Future<Output = Result<BTreeMap<String, u64>, sqlx::Error>> + Send;

    /// The requests of each tenant of `ranges` over its own date range (tenants' billing
    /// periods differ): what quota checks and alerts read, for many tenants at once. Tenants
    /// without usage are absent. This default asks [`daily_rows`](Self::daily_rows) once per
    /// range; implementations should answer in bulk.
    fn period_requests(
        &self,
        ranges: &[TenantRange],
    ) -> impl Future<Output = Result<HashMap<String, u64>, sqlx::Error>> + Send {
        async move {
            let mut totals = HashMap::new();
            for range in ranges {
                let rows = self
                    .daily_rows(&range.tenant, &range.from, &range.to)
                    .await?;
                let requests = rows
                    .iter()
                    .fold(0u64, |sum, row| sum.saturating_add(row.counts.requests));
                if requests > 0 {
                    totals.insert(range.tenant.clone(), requests);
                }
            }
            Ok(totals)
        }
    }

    /// `tenant`'s usage from `from` to `to` (`YYYY-MM-DD`, both included) per day, and its
    /// `top` endpoints by calls with their histograms: what the dashboard reads. This default
    /// folds [`daily_rows`](Self::daily_rows); the databases fold in SQL and read only the top
    /// endpoints' histograms (a wrapper that adds to `daily_rows` is right with the default).
    fn usage_summary(
        &self,
        tenant: &str,
        from: &str,
        to: &str,
        top: usize,
    ) -> impl Future<Output = Result<UsageSummary, sqlx::Error>> + Send {
        async move {
            let rows = self.daily_rows(tenant, from, to).await?;
            Ok(UsageSummary::fold(&rows, top))
        }
    }
}

/// One tenant and a date range (`YYYY-MM-DD`, both included), for
/// [`UsageQueries::period_requests`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantRange {
    /// The tenant id.
    pub tenant: String,
    /// The first date.
    pub from: String,
    /// The last date.
    pub to: String,
}

/// The detailed request log (`api_request_log`).
pub trait RequestLogStore: Send + Sync + 'static {
    /// Brings the storage up to date for `today` (UTC days since 1970): PostgreSQL gets the
    /// partitions of today and the next [`request_log::DAYS_AHEAD`] days, and loses those of
    /// days before `today - retention_days` (`DROP TABLE`); SQLite loses the rows before that
    /// day (`DELETE`). Returns how many partitions were dropped or rows deleted.
    fn maintain(
        &self,
        today: i64,
        retention_days: u32,
    ) -> impl Future<Output = Result<u64, sqlx::Error>> + Send;

    /// Writes `entries`, all or nothing: one `COPY` (PostgreSQL; the partitions of their days
    /// not in `known` are created first, then remembered there) or one transaction of
    /// `INSERT`s (SQLite). Returns the rows written.
    fn write(
        &self,
        entries: &[RequestLogEntry],
        known: &mut HashSet<i64>,
    ) -> impl Future<Output = Result<u64, sqlx::Error>> + Send;

    /// `tenant`'s latest `limit` requests, newest first (ties: by endpoint).
    fn latest(
        &self,
        tenant: &str,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<RequestLogEntry>, sqlx::Error>> + Send;
}

/// Calls `module::function(pool, args…)` of the database's own dialect.
macro_rules! by_database {
    ($database:expr, $module:ident :: $function:ident ( $($arg:expr),* )) => {
        match $database {
            Database::Postgres(pool) => postgres::$module::$function(pool, $($arg),*).await,
            Database::Sqlite(pool) => sqlite::$module::$function(pool, $($arg),*).await,
        }
    };
}

/// Tenants flushed into PostgreSQL at once (the pool has five connections).
const POSTGRES_WRITERS: usize = 4;

impl UsageSink for Database {
    async fn apply(&self, snapshot: &Snapshot) -> Result<Applied, sqlx::Error> {
        by_database!(self, sink::apply(snapshot))
    }

    async fn committed(&self, ids: &[String]) -> Result<HashSet<String>, sqlx::Error> {
        by_database!(self, sink::committed(ids))
    }

    fn writers(&self) -> usize {
        match self {
            Database::Postgres(_) => POSTGRES_WRITERS,
            Database::Sqlite(_) => 1,
        }
    }
}

impl UsageQueries for Database {
    async fn daily_rows(
        &self,
        tenant: &str,
        from: &str,
        to: &str,
    ) -> Result<Vec<DailyRow>, sqlx::Error> {
        by_database!(self, query::daily_rows(tenant, from, to))
    }

    async fn active_users(
        &self,
        tenant: &str,
        from: &str,
        to: &str,
    ) -> Result<BTreeMap<String, u64>, sqlx::Error> {
        by_database!(self, query::active_users(tenant, from, to))
    }

    /// One statement for every range (see the dialects' `query::period_requests`).
    async fn period_requests(
        &self,
        ranges: &[TenantRange],
    ) -> Result<HashMap<String, u64>, sqlx::Error> {
        by_database!(self, query::period_requests(ranges))
    }

    async fn usage_summary(
        &self,
        tenant: &str,
        from: &str,
        to: &str,
        top: usize,
    ) -> Result<UsageSummary, sqlx::Error> {
        by_database!(self, summary::usage_summary(tenant, from, to, top))
    }
}

impl RequestLogStore for Database {
    async fn maintain(&self, today: i64, retention_days: u32) -> Result<u64, sqlx::Error> {
        by_database!(self, request_log::maintain(today, retention_days))
    }

    async fn write(
        &self,
        entries: &[RequestLogEntry],
        known: &mut HashSet<i64>,
    ) -> Result<u64, sqlx::Error> {
        if entries.is_empty() {
            return Ok(0);
        }
        by_database!(self, request_log::write(entries, known))
    }

    async fn latest(&self, tenant: &str, limit: u32) -> Result<Vec<RequestLogEntry>, sqlx::Error> {
        by_database!(self, request_log::latest(tenant, limit))
    }
}

impl RegistryStore for Database {
    async fn put_plan(&self, plan: &PlanRecord, now: u64) -> Result<Put, sqlx::Error> {
        by_database!(self, registry::put_plan(plan, now))
    }
    async fn plan(&self, name: &str) -> Result<Option<PlanRecord>, sqlx::Error> {
        by_database!(self, registry::plan(name))
    }
    async fn plans(&self) -> Result<Vec<PlanRecord>, sqlx::Error> {
        by_database!(self, registry::plans())
    }
    async fn put_tenant(&self, tenant: &TenantRecord, now: u64) -> Result<(Put, u64), sqlx::Error> {
        by_database!(self, registry::put_tenant(tenant, now))
    }
    async fn tenant(&self, id: &str) -> Result<Option<TenantRecord>, sqlx::Error> {
        by_database!(self, registry::tenant(id))
    }
    async fn tenants(
        &self,
        prefix: &str,
        after: &str,
        limit: u32,
    ) -> Result<Vec<TenantRecord>, sqlx::Error> {
        by_database!(self, registry::tenants(prefix, after, limit))
    }
    async fn plan_history(&self, tenant: &str) -> Result<Vec<(String, u64)>, sqlx::Error> {
        by_database!(self, registry::plan_history(tenant))
    }
    async fn set_quota_state(
        &self,
        tenant: &str,
        period_start: u64,
        exhausted: bool,
        now: u64,
    ) -> Result<bool, sqlx::Error> {
        by_database!(
            self,
            registry::set_quota_state(tenant, period_start, exhausted, now)
        )
    }
    async fn insert_key(&self, key: &KeyRecord, now: u64) -> Result<(), sqlx::Error> {
        by_database!(self, registry::insert_key(key, now))
    }
    async fn key(&self, key_id: &str) -> Result<Option<KeyRecord>, sqlx::Error> {
        by_database!(self, registry::key(key_id))
    }
    async fn key_by_hash(&self, sha256: &str) -> Result<Option<KeyRecord>, sqlx::Error> {
        by_database!(self, registry::key_by_hash(sha256))
    }
    async fn keys(&self, tenant: &str) -> Result<Vec<KeyRecord>, sqlx::Error> {
        by_database!(self, registry::keys(tenant))
    }
    async fn live_keys(&self, now: u64) -> Result<Vec<KeyRecord>, sqlx::Error> {
        by_database!(self, registry::live_keys(now))
    }
    async fn revoke_key(&self, key_id: &str, now: u64) -> Result<bool, sqlx::Error> {
        by_database!(self, registry::revoke_key(key_id, now))
    }
    async fn expire_key(
        &self,
        key_id: &str,
        expires_at: u64,
        now: u64,
    ) -> Result<bool, sqlx::Error> {
        by_database!(self, registry::expire_key(key_id, expires_at, now))
    }
    async fn changes(&self, since: u64) -> Result<Changes, sqlx::Error> {
        by_database!(self, registry::changes(since))
    }
    async fn delete_tenant(&self, id: &str, now: u64) -> Result<bool, sqlx::Error> {
        by_database!(self, registry::delete_tenant(id, now))
    }
    async fn prune_changes(&self, keep: u64) -> Result<u64, sqlx::Error> {
        by_database!(self, registry::prune_changes(keep))
    }
    async fn requests_between(
        &self,
        tenant: &str,
        from: &str,
        to: &str,
    ) -> Result<u64, sqlx::Error> {
        by_database!(self, registry::requests_between(tenant, from, to))
    }
}

impl AlertStore for Database {
    async fn fired_since(&self, period_start: u64) -> Result<Vec<FiredKey>, sqlx::Error> {
        by_database!(self, alerts::fired_since(period_start))
    }
    async fn record(
        &self,
        alerts: &[NewAlert],
        now: u64,
        now_ms: u64,
    ) -> Result<Recorded, sqlx::Error> {
        by_database!(self, alerts::record(alerts, now, now_ms))
    }
    async fn due(&self, now_ms: u64, limit: u32) -> Result<Vec<DueDelivery>, sqlx::Error> {
        by_database!(self, alerts::due(now_ms, limit))
    }
    async fn claim(&self, id: &str, expected: u64, lease_until: u64) -> Result<bool, sqlx::Error> {
        by_database!(self, alerts::claim(id, expected, lease_until))
    }
    async fn finish(
        &self,
        attempt: &Attempt,
        outcome: Outcome,
        now: u64,
    ) -> Result<(), sqlx::Error> {
        by_database!(self, alerts::finish(attempt, outcome, now))
    }
    async fn disable_webhook(
        &self,
        tenant: &str,
        url: &str,
        now: u64,
        reason: &str,
    ) -> Result<u64, sqlx::Error> {
        by_database!(self, alerts::disable_webhook(tenant, url, now, reason))
    }
    async fn disabled_webhooks(&self) -> Result<Vec<(String, String)>, sqlx::Error> {
        by_database!(self, alerts::disabled_webhooks())
    }
    async fn deliveries(&self, tenant: &str) -> Result<Vec<DeliveryRecord>, sqlx::Error> {
        by_database!(self, alerts::deliveries(tenant))
    }
    async fn attempts(&self, id: &str) -> Result<Vec<Attempt>, sqlx::Error> {
        by_database!(self, alerts::attempts(id))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod contract;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests;
