//! PostgreSQL: the dashboard's folded reads ([`crate::storage::sql::summary`]).

use sqlx::PgPool;
use sqlx::Row as _;

use crate::storage::sql::query::{Counts, unsigned};
use crate::storage::sql::summary::{UsageSummary, add_histograms};

const SUMS: &str = "SUM(requests)::bigint AS requests, SUM(bytes_in)::bigint AS bytes_in, \
    SUM(bytes_out)::bigint AS bytes_out, SUM(errors_4xx)::bigint AS errors_4xx, \
    SUM(errors_5xx)::bigint AS errors_5xx, SUM(latency_ms_sum)::bigint AS latency_ms_sum";

fn sums(row: &sqlx::postgres::PgRow) -> Result<Counts, sqlx::Error> {
    let get = |c: &str| {
        row.try_get::<Option<i64>, _>(c)
            .map(|v| unsigned(v.unwrap_or(0)))
    };
    Ok(Counts {
        requests: get("requests")?,
        bytes_in: get("bytes_in")?,
        bytes_out: get("bytes_out")?,
        errors_4xx: get("errors_4xx")?,
        errors_5xx: get("errors_5xx")?,
        latency_ms_sum: get("latency_ms_sum")?,
        latency_buckets: Vec::new(),
    })
}

/// `tenant`'s usage from `from` to `to` (both included) per day, and its `top` endpoints
/// (ties by name in byte order: `COLLATE "C"`, as Rust compares).
pub(crate) async fn usage_summary(
    pool: &PgPool,
    tenant: &str,
    from: &str,
    to: &str,
    top: usize,
) -> Result<UsageSummary, sqlx::Error> {
    // Two scans of the range, on two connections at once (readers do not block each other).
    let days = async {
        sqlx::query(&format!(
            "SELECT to_char(date, 'YYYY-MM-DD') AS day, {SUMS} FROM api_usage_daily \
             WHERE tenant_id = $1 AND date >= $2::date AND date <= $3::date \
             GROUP BY date ORDER BY date"
        ))
        .bind(tenant)
        .bind(from)
        .bind(to)
        .fetch_all(pool)
        .await?
        .iter()
        .map(|row| Ok((row.try_get("day")?, sums(row)?)))
        .collect::<Result<Vec<_>, sqlx::Error>>()
    };
    let top = async {
        sqlx::query(&format!(
            "SELECT endpoint, {SUMS} FROM api_usage_daily \
             WHERE tenant_id = $1 AND date >= $2::date AND date <= $3::date GROUP BY endpoint \
             ORDER BY SUM(requests) DESC, endpoint COLLATE \"C\" LIMIT $4"
        ))
        .bind(tenant)
        .bind(from)
        .bind(to)
        .bind(i64::try_from(top).unwrap_or(i64::MAX))
        .fetch_all(pool)
        .await?
        .iter()
        .map(|row| Ok((row.try_get("endpoint")?, sums(row)?)))
        .collect::<Result<Vec<(String, Counts)>, sqlx::Error>>()
    };
    let (days, mut top_endpoints) = tokio::try_join!(days, top)?;
    if top_endpoints.is_empty() {
        return Ok(UsageSummary {
            days,
            top_endpoints,
        });
    }
    let names: Vec<String> = top_endpoints.iter().map(|(e, _)| e.clone()).collect();
    let rows = sqlx::query(
        "SELECT endpoint, latency_buckets FROM api_usage_daily \
         WHERE tenant_id = $1 AND date >= $2::date AND date <= $3::date \
         AND endpoint = ANY($4)",
    )
    .bind(tenant)
    .bind(from)
    .bind(to)
    .bind(&names)
    .fetch_all(pool)
    .await?;
    let mut histograms = Vec::new();
    for row in rows {
        let buckets: Vec<i64> = row.try_get("latency_buckets")?;
        histograms.push((
            row.try_get("endpoint")?,
            buckets.into_iter().map(unsigned).collect(),
        ));
    }
    add_histograms(&mut top_endpoints, histograms);
    Ok(UsageSummary {
        days,
        top_endpoints,
    })
}
