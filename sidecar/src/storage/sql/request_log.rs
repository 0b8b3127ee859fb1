//! The detailed request log's table (`api_request_log`), as both databases keep it: what
//! [`RequestLogStore`](super::RequestLogStore) writes and reads back. PostgreSQL partitions it
//! by UTC day (`postgres/request_log.rs`: `COPY`, `CREATE TABLE … PARTITION OF`, `DROP TABLE`);
//! SQLite keeps one plain table (`sqlite/request_log.rs`: multi-row `INSERT`, `DELETE`).

use sqlx::Row;
use tollgate_filter::usage::RequestLogEntry;

/// Partitions are created for today and this many days ahead; entries further ahead are
/// `out_of_range`.
pub const DAYS_AHEAD: i64 = 2;

/// Milliseconds in a day.
pub const DAY_MS: u64 = 86_400_000;

/// The UTC day (days since 1970-01-01) of Unix milliseconds.
pub fn day_of_ms(time_ms: u64) -> i64 {
    // u64::MAX / DAY_MS fits an i64.
    (time_ms / DAY_MS) as i64
}

/// The columns read back after the time, in [`entry`] order.
pub(crate) const COLUMNS: &str =
    "tenant_id, endpoint, CAST(status AS bigint), bytes_in, bytes_out, latency_ms, user_hash";

/// One row (time in Unix ms, then [`COLUMNS`]) as an entry; values the table's checks rule out
/// (negative counts) read as 0 rather than failing.
pub(crate) fn entry<R: Row>(row: &R) -> Result<RequestLogEntry, sqlx::Error>
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
