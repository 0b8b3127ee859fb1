//! Step 2 of the flush: one staged [`Snapshot`] added into the usage database in ONE
//! transaction, together with its flush id in `usage_flushes`.
//!
//! The id is inserted first (`ON CONFLICT DO NOTHING`): when it is already there — the snapshot
//! was applied by an earlier, interrupted flush, or by another sidecar's flush right now (in
//! PostgreSQL the second insert waits for the first transaction and then sees its row) — the
//! transaction is rolled back and nothing is added. Otherwise every row is added with an
//! additive upsert (`requests = api_usage_daily.requests + excluded.requests`, the latency
//! histogram element by element), the day's distinct users with `GREATEST`/`max` (a running
//! HyperLogLog count, not an increment), and the whole commits at once.

use sqlx::{Postgres, Sqlite, Transaction};
use tollgate_filter::usage::LATENCY_BUCKETS;

use super::{Snapshot, UsageRow};
use crate::db::Database;

/// What [`apply`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The snapshot's rows were added and its id recorded.
    Now,
    /// Its id was already recorded: nothing was added again.
    Before,
}

/// Adds `snapshot` into the database unless its flush id was applied before.
pub async fn apply(database: &Database, snapshot: &Snapshot) -> Result<Applied, sqlx::Error> {
    match database {
        Database::Postgres(pool) => {
            let mut tx = pool.begin().await?;
            let claimed = sqlx::query(
                "INSERT INTO usage_flushes (flush_id) VALUES ($1) ON CONFLICT DO NOTHING",
            )
            .bind(&snapshot.flush_id)
            .execute(&mut *tx)
            .await?;
            if claimed.rows_affected() == 0 {
                tx.rollback().await?;
                return Ok(Applied::Before);
            }
            postgres_rows(&mut tx, snapshot).await?;
            tx.commit().await?;
        }
        Database::Sqlite(pool) => {
            let mut tx = pool.begin().await?;
            let claimed = sqlx::query(
                "INSERT INTO usage_flushes (flush_id) VALUES (?) ON CONFLICT DO NOTHING",
            )
            .bind(&snapshot.flush_id)
            .execute(&mut *tx)
            .await?;
            if claimed.rows_affected() == 0 {
                tx.rollback().await?;
                return Ok(Applied::Before);
            }
            sqlite_rows(&mut tx, snapshot).await?;
            tx.commit().await?;
        }
    }
    Ok(Applied::Now)
}

/// The scalar counters of `row` as SQL integers, in column order.
fn scalars(row: &UsageRow) -> Result<[i64; 6], sqlx::Error> {
    let c = &row.counters;
    let mut out = [0; 6];
    for (slot, value) in out.iter_mut().zip([
        c.requests,
        c.bytes_in,
        c.bytes_out,
        c.errors_4xx,
        c.errors_5xx,
        c.latency_ms_sum,
    ]) {
        *slot = integer(value)?;
    }
    Ok(out)
}

fn integer(value: u64) -> Result<i64, sqlx::Error> {
    i64::try_from(value).map_err(|_| sqlx::Error::Protocol(format!("{value} exceeds bigint")))
}

fn buckets(row: &UsageRow) -> Result<Vec<i64>, sqlx::Error> {
    row.counters
        .latency_buckets
        .iter()
        .map(|&n| integer(n))
        .collect()
}

const COUNTER_COLUMNS: [&str; 6] = [
    "requests",
    "bytes_in",
    "bytes_out",
    "errors_4xx",
    "errors_5xx",
    "latency_ms_sum",
];

/// `requests = api_usage_daily.requests + excluded.requests, …`
fn additions() -> String {
    COUNTER_COLUMNS
        .iter()
        .map(|c| format!("{c} = api_usage_daily.{c} + excluded.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The upsert of one row, `$n` placeholders for PostgreSQL or `?` for SQLite.
fn upsert(postgres: bool) -> String {
    let sum_buckets = (0..LATENCY_BUCKETS)
        .map(|i| {
            if postgres {
                let n = i + 1; // PostgreSQL arrays count from 1
                format!(
                    "coalesce(api_usage_daily.latency_buckets[{n}], 0) + \
                     excluded.latency_buckets[{n}]"
                )
            } else {
                format!(
                    "coalesce(json_extract(api_usage_daily.latency_buckets, '$[{i}]'), 0) + \
                     json_extract(excluded.latency_buckets, '$[{i}]')"
                )
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    let (values, buckets, now) = if postgres {
        (
            "$1, $2::date, $3, $4, $5, $6, $7, $8, $9, $10, $11, now()",
            format!("ARRAY[{sum_buckets}]"),
            "now()",
        )
    } else {
        (
            "?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
            format!("json_array({sum_buckets})"),
            "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
        )
    };
    format!(
        "INSERT INTO api_usage_daily (tenant_id, date, endpoint, plan, requests, bytes_in, \
         bytes_out, errors_4xx, errors_5xx, latency_ms_sum, latency_buckets, updated_at) \
         VALUES ({values}) \
         ON CONFLICT (tenant_id, date, endpoint) DO UPDATE SET \
         plan = CASE WHEN excluded.plan = '' THEN api_usage_daily.plan ELSE excluded.plan END, \
         {}, latency_buckets = {buckets}, updated_at = {now}",
        additions()
    )
}

async fn postgres_rows(
    tx: &mut Transaction<'_, Postgres>,
    snapshot: &Snapshot,
) -> Result<(), sqlx::Error> {
    let sql = upsert(true);
    for row in &snapshot.rows {
        let [requests, bytes_in, bytes_out, e4, e5, latency] = scalars(row)?;
        sqlx::query(&sql)
            .bind(&snapshot.tenant)
            .bind(&row.date)
            .bind(&row.endpoint)
            .bind(&row.plan)
            .bind(requests)
            .bind(bytes_in)
            .bind(bytes_out)
            .bind(e4)
            .bind(e5)
            .bind(latency)
            .bind(buckets(row)?)
            .execute(&mut **tx)
            .await?;
    }
    for (date, users) in &snapshot.users {
        sqlx::query(
            "INSERT INTO api_active_users_daily (tenant_id, date, users) \
             VALUES ($1, $2::date, $3) ON CONFLICT (tenant_id, date) DO UPDATE SET \
             users = GREATEST(api_active_users_daily.users, excluded.users), updated_at = now()",
        )
        .bind(&snapshot.tenant)
        .bind(date)
        .bind(integer(*users)?)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

async fn sqlite_rows(
    tx: &mut Transaction<'_, Sqlite>,
    snapshot: &Snapshot,
) -> Result<(), sqlx::Error> {
    let sql = upsert(false);
    for row in &snapshot.rows {
        let [requests, bytes_in, bytes_out, e4, e5, latency] = scalars(row)?;
        let buckets = serde_json::to_string(&buckets(row)?)
            .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
        sqlx::query(&sql)
            .bind(&snapshot.tenant)
            .bind(&row.date)
            .bind(&row.endpoint)
            .bind(&row.plan)
            .bind(requests)
            .bind(bytes_in)
            .bind(bytes_out)
            .bind(e4)
            .bind(e5)
            .bind(latency)
            .bind(buckets)
            .execute(&mut **tx)
            .await?;
    }
    for (date, users) in &snapshot.users {
        sqlx::query(
            "INSERT INTO api_active_users_daily (tenant_id, date, users) VALUES (?, ?, ?) \
             ON CONFLICT (tenant_id, date) DO UPDATE SET \
             users = max(api_active_users_daily.users, excluded.users), \
             updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
        )
        .bind(&snapshot.tenant)
        .bind(date)
        .bind(integer(*users)?)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}
