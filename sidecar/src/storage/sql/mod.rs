//! The usage database (PostgreSQL or SQLite, [`Database`]) behind three traits — every SQL
//! statement of the sidecar lives under this module:
//!
//! - [`UsageSink`]: step 2 of the usage flush, a staged snapshot added in one transaction,
//!   exactly once per flush id ([`sink`]).
//! - [`UsageQueries`]: what the tenant usage API reads ([`query`]).
//! - [`RequestLogStore`]: the detailed request log, written in batches, kept to its
//!   retention, read back ([`request_log`]).
//!
//! Each trait has one impl per database (`postgres/`, `sqlite/`: the SQL of that dialect) and
//! [`Database`] picks one at run time, matching on the database here and nowhere else. One
//! contract test body per trait runs against both databases (`contract/`, `tests.rs`).

mod database;
mod postgres;
pub mod query;
pub mod request_log;
pub mod sink;
mod sqlite;

use std::collections::{BTreeMap, HashSet};
use std::future::Future;

use tollgate_filter::usage::RequestLogEntry;

pub use self::database::{CONNECT_TIMEOUT, DEFAULT_URL, Database, DbError, redact};
pub use self::postgres::request_log::{copy_text, partition_name};
use self::query::DailyRow;
use self::sink::Applied;
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod contract;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
