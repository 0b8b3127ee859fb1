//! PostgreSQL: the tenant usage API's reads.

use std::collections::{BTreeMap, HashMap};

use sqlx::PgPool;
use sqlx::Row as _;

use crate::storage::sql::TenantRange;
use crate::storage::sql::query::{DailyRow, counts, last_range_per_tenant, unsigned};

/// The `api_usage_daily` rows of `tenant` from `from` to `to` (`YYYY-MM-DD`, both included).
pub(crate) async fn daily_rows(
    pool: &PgPool,
    tenant: &str,
    from: &str,
    to: &str,
) -> Result<Vec<DailyRow>, sqlx::Error> {
    const COLUMNS: &str = "endpoint, requests, bytes_in, bytes_out, errors_4xx, errors_5xx, \
                           latency_ms_sum, latency_buckets";
    let mut out = Vec::new();
    let sql = format!(
        "SELECT to_char(date, 'YYYY-MM-DD') AS day, {COLUMNS} FROM api_usage_daily \
         WHERE tenant_id = $1 AND date >= $2::date AND date <= $3::date \
         ORDER BY date, endpoint"
    );
    let rows = sqlx::query(&sql)
        .bind(tenant)
        .bind(from)
        .bind(to)
        .fetch_all(pool)
        .await?;
    for row in rows {
        let buckets: Vec<i64> = row.try_get("latency_buckets")?;
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
    pool: &PgPool,
    tenant: &str,
    from: &str,
    to: &str,
) -> Result<BTreeMap<String, u64>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT to_char(date, 'YYYY-MM-DD') AS day, users FROM api_active_users_daily \
         WHERE tenant_id = $1 AND date >= $2::date AND date <= $3::date",
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
/// go in as three arrays, `unnest`ed into a relation joined on `api_usage_daily`'s primary
/// key. Tenants without usage are absent; a tenant listed twice counts its last range.
pub(crate) async fn period_requests(
    pool: &PgPool,
    ranges: &[TenantRange],
) -> Result<HashMap<String, u64>, sqlx::Error> {
    let ranges = last_range_per_tenant(ranges);
    if ranges.is_empty() {
        return Ok(HashMap::new());
    }
    let tenants: Vec<&str> = ranges.iter().map(|r| r.tenant.as_str()).collect();
    let froms: Vec<&str> = ranges.iter().map(|r| r.from.as_str()).collect();
    let tos: Vec<&str> = ranges.iter().map(|r| r.to.as_str()).collect();
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT u.tenant_id, SUM(u.requests)::bigint \
         FROM unnest($1::text[], $2::text[]::date[], $3::text[]::date[]) AS r(tenant, first_day, last_day) \
         JOIN api_usage_daily u ON u.tenant_id = r.tenant \
          AND u.date >= r.first_day AND u.date <= r.last_day \
         GROUP BY u.tenant_id",
    )
    .bind(&tenants)
    .bind(&froms)
    .bind(&tos)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(tenant, requests)| (tenant, unsigned(requests)))
        .filter(|(_, requests)| *requests > 0)
        .collect())
}
