//! Step 2 of the flush: one staged [`Snapshot`] added into the usage database in ONE
//! transaction, together with its flush id in `usage_flushes`.
//!
//! The id is inserted first (`ON CONFLICT DO NOTHING`): when it is already there — the snapshot
//! was applied by an earlier, interrupted flush, or by another sidecar's flush right now (in
//! PostgreSQL the second insert waits for the first transaction and then sees its row) — the
//! transaction is rolled back and nothing is added. Otherwise every row is added with an
//! additive upsert (`requests = api_usage_daily.requests + excluded.requests`, the latency
//! histogram element by element) — many rows per statement: PostgreSQL unnests column arrays
//! (`INSERT … SELECT … FROM UNNEST($2::text[], …)`, [`POSTGRES_CHUNK`] rows at a time), SQLite
//! takes multi-row `VALUES` ([`SQLITE_CHUNK`] rows, under its parameter limit), the day's distinct users with `GREATEST`/`max` (a running
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

/// Rows per PostgreSQL statement: one `UNNEST` of arrays, whatever the count (chunks only
/// bound one statement's size).
const POSTGRES_CHUNK: usize = 5_000;

/// Rows per SQLite statement: [`SQLITE_PARAMS_PER_ROW`] parameters each, under the bundled
/// SQLite's limit of 32,766 (`SQLITE_MAX_VARIABLE_NUMBER` since 3.32).
const SQLITE_CHUNK: usize = 2_000;
const SQLITE_PARAMS_PER_ROW: usize = 11;

/// `plan = …, requests = api_usage_daily.requests + excluded.requests, …, latency_buckets =
/// <element by element>, updated_at = <now>`: what a conflicting row gets.
fn on_conflict(postgres: bool) -> String {
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
    let (buckets, now) = if postgres {
        (format!("ARRAY[{sum_buckets}]"), "now()")
    } else {
        (
            format!("json_array({sum_buckets})"),
            "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
        )
    };
    format!(
        "ON CONFLICT (tenant_id, date, endpoint) DO UPDATE SET \
         plan = CASE WHEN excluded.plan = '' THEN api_usage_daily.plan ELSE excluded.plan END, \
         {}, latency_buckets = {buckets}, updated_at = {now}",
        additions()
    )
}

const COLUMNS: &str = "INSERT INTO api_usage_daily (tenant_id, date, endpoint, plan, requests, \
                       bytes_in, bytes_out, errors_4xx, errors_5xx, latency_ms_sum, \
                       latency_buckets, updated_at)";

/// PostgreSQL: every row of a chunk in one statement, column arrays unnested (`$1` the tenant,
/// `$2`–`$4` text arrays, `$5`–`$10` the counters, `$11`–`$22` the histogram by element).
fn postgres_upsert() -> String {
    let buckets: Vec<String> = (0..LATENCY_BUCKETS).map(|i| format!("t.l{i}")).collect();
    let bucket_args: Vec<String> = (0..LATENCY_BUCKETS)
        .map(|i| format!("${}::int8[]", 11 + i))
        .collect();
    format!(
        "{COLUMNS} SELECT $1, t.date::date, t.endpoint, t.plan, t.requests, t.bytes_in, \
         t.bytes_out, t.errors_4xx, t.errors_5xx, t.latency_ms_sum, ARRAY[{}]::int8[], now() \
         FROM UNNEST($2::text[], $3::text[], $4::text[], $5::int8[], $6::int8[], $7::int8[], \
         $8::int8[], $9::int8[], $10::int8[], {}) AS t(date, endpoint, plan, requests, \
         bytes_in, bytes_out, errors_4xx, errors_5xx, latency_ms_sum, {}) {}",
        buckets.join(", "),
        bucket_args.join(", "),
        (0..LATENCY_BUCKETS)
            .map(|i| format!("l{i}"))
            .collect::<Vec<_>>()
            .join(", "),
        on_conflict(true)
    )
}

/// SQLite: `rows` rows of [`SQLITE_PARAMS_PER_ROW`] `?` each in one statement.
fn sqlite_upsert(rows: usize) -> String {
    let row = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))";
    format!(
        "{COLUMNS} VALUES {} {}",
        vec![row; rows].join(", "),
        on_conflict(false)
    )
}

async fn postgres_rows(
    tx: &mut Transaction<'_, Postgres>,
    snapshot: &Snapshot,
) -> Result<(), sqlx::Error> {
    let sql = postgres_upsert();
    for chunk in snapshot.rows.chunks(POSTGRES_CHUNK) {
        let mut text: [Vec<&str>; 3] = Default::default();
        let mut counters: [Vec<i64>; 6] = Default::default();
        let mut histogram: [Vec<i64>; LATENCY_BUCKETS] = Default::default();
        for row in chunk {
            for (column, value) in text.iter_mut().zip([&row.date, &row.endpoint, &row.plan]) {
                column.push(value);
            }
            for (column, value) in counters.iter_mut().zip(scalars(row)?) {
                column.push(value);
            }
            for (column, value) in histogram.iter_mut().zip(buckets(row)?) {
                column.push(value);
            }
        }
        let mut query = sqlx::query(&sql).bind(&snapshot.tenant);
        for column in &text {
            query = query.bind(column);
        }
        for column in counters.iter().chain(&histogram) {
            query = query.bind(column);
        }
        query.execute(&mut **tx).await?;
    }
    if !snapshot.users.is_empty() {
        let (dates, users): (Vec<&str>, Vec<i64>) = snapshot
            .users
            .iter()
            .map(|(date, users)| Ok((date.as_str(), integer(*users)?)))
            .collect::<Result<Vec<_>, sqlx::Error>>()?
            .into_iter()
            .unzip();
        sqlx::query(
            "INSERT INTO api_active_users_daily (tenant_id, date, users) \
             SELECT $1, t.date::date, t.users FROM UNNEST($2::text[], $3::int8[]) AS t(date, users) \
             ON CONFLICT (tenant_id, date) DO UPDATE SET \
             users = GREATEST(api_active_users_daily.users, excluded.users), updated_at = now()",
        )
        .bind(&snapshot.tenant)
        .bind(dates)
        .bind(users)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

async fn sqlite_rows(
    tx: &mut Transaction<'_, Sqlite>,
    snapshot: &Snapshot,
) -> Result<(), sqlx::Error> {
    const _: () = assert!(SQLITE_CHUNK * SQLITE_PARAMS_PER_ROW <= 32_766);
    for chunk in snapshot.rows.chunks(SQLITE_CHUNK) {
        let sql = sqlite_upsert(chunk.len());
        let mut query = sqlx::query(&sql);
        for row in chunk {
            let [requests, bytes_in, bytes_out, e4, e5, latency] = scalars(row)?;
            let buckets = serde_json::to_string(&buckets(row)?)
                .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
            query = query
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
                .bind(buckets);
        }
        query.execute(&mut **tx).await?;
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

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests;
