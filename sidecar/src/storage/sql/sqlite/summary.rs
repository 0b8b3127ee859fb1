//! SQLite: the dashboard's folded reads ([`crate::storage::sql::summary`]).

use sqlx::Row as _;
use sqlx::SqlitePool;

use crate::storage::sql::query::{Counts, unsigned};
use crate::storage::sql::summary::{UsageSummary, add_histograms};

const SUMS: &str = "SUM(requests) AS requests, SUM(bytes_in) AS bytes_in, \
    SUM(bytes_out) AS bytes_out, SUM(errors_4xx) AS errors_4xx, SUM(errors_5xx) AS errors_5xx, \
    SUM(latency_ms_sum) AS latency_ms_sum";

fn sums(row: &sqlx::sqlite::SqliteRow) -> Result<Counts, sqlx::Error> {
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

/// `tenant`'s usage from `from` to `to` (both included) per day, and its `top` endpoints.
pub(crate) async fn usage_summary(
    pool: &SqlitePool,
    tenant: &str,
    from: &str,
    to: &str,
    top: usize,
) -> Result<UsageSummary, sqlx::Error> {
    // Two scans of the range, on two connections at once (readers do not block each other).
    let days = async {
        sqlx::query(&format!(
            "SELECT date AS day, {SUMS} FROM api_usage_daily \
             WHERE tenant_id = ? AND date >= ? AND date <= ? GROUP BY date ORDER BY date"
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
             WHERE tenant_id = ? AND date >= ? AND date <= ? GROUP BY endpoint \
             ORDER BY SUM(requests) DESC, endpoint LIMIT ?"
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
    let names: Vec<&str> = top_endpoints.iter().map(|(e, _)| e.as_str()).collect();
    let placeholders = vec!["?"; names.len()].join(", ");
    let sql = format!(
        "SELECT endpoint, latency_buckets FROM api_usage_daily \
         WHERE tenant_id = ? AND date >= ? AND date <= ? AND endpoint IN ({placeholders})"
    );
    let mut query = sqlx::query(&sql).bind(tenant).bind(from).bind(to);
    for name in &names {
        query = query.bind(*name);
    }
    let mut histograms = Vec::new();
    for row in query.fetch_all(pool).await? {
        let text: String = row.try_get("latency_buckets")?;
        let buckets: Vec<i64> = serde_json::from_str(&text).map_err(|e| {
            sqlx::Error::Protocol(format!("latency_buckets is not a JSON array: {e}"))
        })?;
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
