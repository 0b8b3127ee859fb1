//! PostgreSQL: step 2 of the flush, many rows per statement (column arrays unnested:
//! `INSERT … SELECT … FROM UNNEST($2::text[], …)`).

use sqlx::{PgPool, Postgres, Transaction};
use tollgate_filter::usage::LATENCY_BUCKETS;

use crate::storage::sql::sink::{Applied, COLUMNS, buckets, integer, on_conflict, scalars};
use crate::storage::usage::Snapshot;

/// Adds `snapshot` into PostgreSQL unless its flush id was applied before (see
/// [`crate::storage::sql::sink`]).
pub(crate) async fn apply(pool: &PgPool, snapshot: &Snapshot) -> Result<Applied, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let claimed =
        sqlx::query("INSERT INTO usage_flushes (flush_id) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(&snapshot.flush_id)
            .execute(&mut *tx)
            .await?;
    if claimed.rows_affected() == 0 {
        tx.rollback().await?;
        return Ok(Applied::Before);
    }
    rows(&mut tx, snapshot).await?;
    // The meter events to report for this usage: the same transaction, one fact.
    crate::storage::sql::billing::outbox::postgres(&mut tx, snapshot).await?;
    tx.commit().await?;
    Ok(Applied::Now)
}

/// Rows per PostgreSQL statement: one `UNNEST` of arrays, whatever the count (chunks only
/// bound one statement's size).
pub(crate) const POSTGRES_CHUNK: usize = 5_000;

/// PostgreSQL: every row of a chunk in one statement, column arrays unnested (`$1` the tenant,
/// `$2`–`$4` text arrays, `$5`–`$10` the counters, `$11`–`$22` the histogram by element).
fn upsert() -> String {
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

async fn rows(tx: &mut Transaction<'_, Postgres>, snapshot: &Snapshot) -> Result<(), sqlx::Error> {
    let sql = upsert();
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

/// Which of `ids` are in `usage_flushes`.
pub(crate) async fn committed(
    pool: &PgPool,
    ids: &[String],
) -> Result<std::collections::HashSet<String>, sqlx::Error> {
    let mut found = std::collections::HashSet::new();
    for chunk in ids.chunks(500) {
        let rows: Vec<String> =
            sqlx::query_scalar("SELECT flush_id FROM usage_flushes WHERE flush_id = ANY($1)")
                .bind(chunk)
                .fetch_all(pool)
                .await?;
        found.extend(rows);
    }
    Ok(found)
}
