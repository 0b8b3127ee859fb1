//! SQLite: step 2 of the flush, many rows per statement (multi-row `VALUES`, under SQLite's
//! parameter limit).

use sqlx::{Sqlite, SqlitePool, Transaction};

use crate::storage::sql::sink::{Applied, COLUMNS, buckets, integer, on_conflict, scalars};
use crate::storage::usage::Snapshot;

/// Adds `snapshot` into SQLite unless its flush id was applied before (see
/// [`crate::storage::sql::sink`]).
pub(crate) async fn apply(pool: &SqlitePool, snapshot: &Snapshot) -> Result<Applied, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let claimed =
        sqlx::query("INSERT INTO usage_flushes (flush_id) VALUES (?) ON CONFLICT DO NOTHING")
            .bind(&snapshot.flush_id)
            .execute(&mut *tx)
            .await?;
    if claimed.rows_affected() == 0 {
        tx.rollback().await?;
        return Ok(Applied::Before);
    }
    rows(&mut tx, snapshot).await?;
    // The meter events to report for this usage: the same transaction, one fact.
    crate::storage::sql::billing::outbox::sqlite(&mut tx, snapshot).await?;
    tx.commit().await?;
    Ok(Applied::Now)
}

/// Rows per SQLite statement: [`SQLITE_PARAMS_PER_ROW`] parameters each, under the bundled
/// SQLite's limit of 32,766 (`SQLITE_MAX_VARIABLE_NUMBER` since 3.32).
pub(crate) const SQLITE_CHUNK: usize = 2_000;
const SQLITE_PARAMS_PER_ROW: usize = 11;

/// SQLite: `rows` rows of [`SQLITE_PARAMS_PER_ROW`] `?` each in one statement.
fn upsert(rows: usize) -> String {
    let row = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))";
    format!(
        "{COLUMNS} VALUES {} {}",
        vec![row; rows].join(", "),
        on_conflict(false)
    )
}

async fn rows(tx: &mut Transaction<'_, Sqlite>, snapshot: &Snapshot) -> Result<(), sqlx::Error> {
    const _: () = assert!(SQLITE_CHUNK * SQLITE_PARAMS_PER_ROW <= 32_766);
    for chunk in snapshot.rows.chunks(SQLITE_CHUNK) {
        let sql = upsert(chunk.len());
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

/// Which of `ids` are in `usage_flushes`.
pub(crate) async fn committed(
    pool: &SqlitePool,
    ids: &[String],
) -> Result<std::collections::HashSet<String>, sqlx::Error> {
    let mut found = std::collections::HashSet::new();
    for chunk in ids.chunks(500) {
        let marks = vec!["?"; chunk.len()].join(",");
        let sql = format!("SELECT flush_id FROM usage_flushes WHERE flush_id IN ({marks})");
        let mut query = sqlx::query_scalar(&sql);
        for id in chunk {
            query = query.bind(id);
        }
        let rows: Vec<String> = query.fetch_all(pool).await?;
        found.extend(rows);
    }
    Ok(found)
}
