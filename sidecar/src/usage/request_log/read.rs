//! Reading the log back: a tenant's latest requests (`GET /v1/usage/requests`).

use sqlx::Row;
use tollgate_filter::usage::RequestLogEntry;

use crate::db::Database;

/// The columns after the time, in [`entry`] order.
const COLUMNS: &str =
    "tenant_id, endpoint, CAST(status AS bigint), bytes_in, bytes_out, latency_ms, user_hash";

/// `tenant`'s latest `limit` requests, newest first (ties: by endpoint).
pub async fn latest(
    database: &Database,
    tenant: &str,
    limit: u32,
) -> Result<Vec<RequestLogEntry>, sqlx::Error> {
    let limit = i64::from(limit);
    match database {
        Database::Postgres(pool) => {
            let sql = format!(
                "SELECT CAST(extract(epoch FROM time) * 1000 AS bigint), {COLUMNS} \
                 FROM api_request_log WHERE tenant_id = $1 \
                 ORDER BY time DESC, endpoint LIMIT $2"
            );
            let rows = sqlx::query(&sql)
                .bind(tenant)
                .bind(limit)
                .fetch_all(pool)
                .await?;
            rows.iter().map(entry).collect()
        }
        Database::Sqlite(pool) => {
            let sql = format!(
                "SELECT time_ms, {COLUMNS} FROM api_request_log WHERE tenant_id = ? \
                 ORDER BY time_ms DESC, endpoint LIMIT ?"
            );
            let rows = sqlx::query(&sql)
                .bind(tenant)
                .bind(limit)
                .fetch_all(pool)
                .await?;
            rows.iter().map(entry).collect()
        }
    }
}

/// One row (time in Unix ms, then [`COLUMNS`]) as an entry; values the table's checks rule out
/// (negative counts) read as 0 rather than failing.
fn entry<R: Row>(row: &R) -> Result<RequestLogEntry, sqlx::Error>
where
    usize: sqlx::ColumnIndex<R>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let count = |n: usize| -> Result<u64, sqlx::Error> {
        Ok(u64::try_from(row.try_get::<i64, _>(n)?).unwrap_or(0))
    };
    Ok(RequestLogEntry {
        time_ms: count(0)?,
        tenant: row.try_get(1)?,
        endpoint: row.try_get(2)?,
        status: u16::try_from(row.try_get::<i64, _>(3)?).unwrap_or(0),
        bytes_in: count(4)?,
        bytes_out: count(5)?,
        latency_ms: count(6)?,
        // The same 64 bits, back to unsigned.
        user: row
            .try_get::<Option<i64>, _>(7)?
            .map(|hash| u64::from_ne_bytes(hash.to_ne_bytes())),
    })
}
