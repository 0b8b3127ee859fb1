//! SQLite: the tenant usage API's reads.

use std::collections::{BTreeMap, HashMap};

use sqlx::Row as _;
use sqlx::SqlitePool;

use crate::storage::sql::TenantRange;
use crate::storage::sql::query::{DailyRow, counts, last_range_per_tenant, unsigned};

/// The `api_usage_daily` rows of `tenant` from `from` to `to` (`YYYY-MM-DD`, both included).
pub(crate) async fn daily_rows(
    pool: &SqlitePool,
    tenant: &str,
    from: &str,
    to: &str,
) -> Result<Vec<DailyRow>, sqlx::Error> {
    const COLUMNS: &str = "endpoint, requests, bytes_in, bytes_out, errors_4xx, errors_5xx, \
                           latency_ms_sum, latency_buckets";
    let mut out = Vec::new();
    let sql = format!(
        "SELECT date AS day, {COLUMNS} FROM api_usage_daily \
         WHERE tenant_id = ? AND date >= ? AND date <= ? ORDER BY date, endpoint"
    );
    let rows = sqlx::query(&sql)
        .bind(tenant)
        .bind(from)
        .bind(to)
        .fetch_all(pool)
        .await?;
    for row in rows {
        let text: String = row.try_get("latency_buckets")?;
        let buckets: Vec<i64> = serde_json::from_str(&text).map_err(|e| {
            sqlx::Error::Protocol(format!("latency_buckets is not a JSON array: {e}"))
        })?;
        out.push(DailyRow {
            date: row.try_get("day")?,
            endpoint: row.try_get("endpoint")?,
            counts: counts(|c| row.try_get::<i64, _>(c), buckets)?,
        });
    }
    Ok(out)
}

/// The active users of `tenant` per day from `from` to `to` (days without a row are absent).
pub(crate) async fn active_users(
    pool: &SqlitePool,
    tenant: &str,
    from: &str,
    to: &str,
) -> Result<BTreeMap<String, u64>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT date AS day, users FROM api_active_users_daily \
         WHERE tenant_id = ? AND date >= ? AND date <= ?",
    )
    .bind(tenant)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|row| Ok((row.try_get("day")?, row.try_get::<i64, _>("users")?)))
    .collect::<Result<Vec<(String, i64)>, sqlx::Error>>()?;
    Ok(rows
        .into_iter()
        .map(|(day, users)| (day, unsigned(users)))
        .collect())
}

/// The requests of each tenant of `ranges` over its own dates, in one statement: the ranges
/// go in as one JSON array of `[tenant, from, to]`, read by `json_each` and joined on
/// `api_usage_daily`'s primary key. Tenants without usage are absent; a tenant listed twice
/// counts its last range.
pub(crate) async fn period_requests(
    pool: &SqlitePool,
    ranges: &[TenantRange],
) -> Result<HashMap<String, u64>, sqlx::Error> {
    let ranges = last_range_per_tenant(ranges);
    if ranges.is_empty() {
        return Ok(HashMap::new());
    }
    let list: Vec<[&str; 3]> = ranges
        .iter()
        .map(|r| [r.tenant.as_str(), r.from.as_str(), r.to.as_str()])
        .collect();
    let json = serde_json::to_string(&list)
        .map_err(|e| sqlx::Error::Protocol(format!("ranges as JSON: {e}")))?;
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT u.tenant_id, SUM(u.requests) FROM json_each(?) AS r \
         JOIN api_usage_daily u ON u.tenant_id = json_extract(r.value, '$[0]') \
          AND u.date >= json_extract(r.value, '$[1]') AND u.date <= json_extract(r.value, '$[2]') \
         GROUP BY u.tenant_id",
    )
    .bind(json)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(tenant, requests)| (tenant, unsigned(requests)))
        .filter(|(_, requests)| *requests > 0)
        .collect())
}
