//! SQLite: batched multi-row `INSERT`s into the plain `api_request_log`, `DELETE` for retention.

use std::collections::HashSet;

use sqlx::{QueryBuilder, Sqlite, SqlitePool};
use tollgate_filter::usage::RequestLogEntry;

use crate::storage::sql::request_log::{COLUMNS, DAY_MS, entry};

/// Rows per `INSERT`: 8 parameters each, far below SQLite's 32766 parameters per statement.
const ROWS_PER_INSERT: usize = 500;

/// Deletes the rows of days before `today - retention_days`; returns how many.
pub(crate) async fn maintain(
    pool: &SqlitePool,
    today: i64,
    retention_days: u32,
) -> Result<u64, sqlx::Error> {
    let cutoff = today - i64::from(retention_days);
    delete_before(pool, cutoff.saturating_mul(DAY_MS as i64)).await
}

/// Writes `entries` in one transaction; returns the rows written (no partitions: `_known`
/// is PostgreSQL's).
pub(crate) async fn write(
    pool: &SqlitePool,
    entries: &[RequestLogEntry],
    _known: &mut HashSet<i64>,
) -> Result<u64, sqlx::Error> {
    insert(pool, entries).await
}

/// Writes `entries` in one transaction; returns the rows written.
async fn insert(pool: &SqlitePool, entries: &[RequestLogEntry]) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut written = 0;
    for chunk in entries.chunks(ROWS_PER_INSERT) {
        let mut insert = QueryBuilder::<Sqlite>::new(
            "INSERT INTO api_request_log \
             (time_ms, tenant_id, endpoint, status, bytes_in, bytes_out, latency_ms, user_hash) ",
        );
        insert.push_values(chunk, |mut row, entry| {
            row.push_bind(signed(entry.time_ms))
                .push_bind(entry.tenant.as_str())
                .push_bind(entry.endpoint.as_str())
                .push_bind(i64::from(entry.status))
                .push_bind(signed(entry.bytes_in))
                .push_bind(signed(entry.bytes_out))
                .push_bind(signed(entry.latency_ms))
                // The same 64 bits as a signed integer.
                .push_bind(
                    entry
                        .user
                        .map(|user| i64::from_ne_bytes(user.to_ne_bytes())),
                );
        });
        written += insert.build().execute(&mut *tx).await?.rows_affected();
    }
    tx.commit().await?;
    Ok(written)
}

/// Deletes the rows older than `cutoff_ms` (Unix milliseconds); returns how many.
async fn delete_before(pool: &SqlitePool, cutoff_ms: i64) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query("DELETE FROM api_request_log WHERE time_ms < ?")
        .bind(cutoff_ms)
        .execute(pool)
        .await?
        .rows_affected())
}

/// `tenant`'s latest `limit` requests, newest first (ties: by endpoint).
pub(crate) async fn latest(
    pool: &SqlitePool,
    tenant: &str,
    limit: u32,
) -> Result<Vec<RequestLogEntry>, sqlx::Error> {
    let sql = format!(
        "SELECT time_ms, {COLUMNS} FROM api_request_log WHERE tenant_id = ? \
         ORDER BY time_ms DESC, endpoint LIMIT ?"
    );
    let rows = sqlx::query(&sql)
        .bind(tenant)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?;
    rows.iter().map(entry).collect()
}

/// A validated counter (at most 2^48) as SQLite's integer; saturating beyond `i64::MAX`.
fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
