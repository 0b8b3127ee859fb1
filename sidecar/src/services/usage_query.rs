//! The tenant usage API's logic (`GET /v1/usage/…`, [`crate::routes::usage_query`]): the
//! date ranges asked for, and the rows read through [`UsageQueries`] turned into the answers
//! (daily series, month-to-date total, top endpoints with latency percentiles). Histograms are
//! merged here, in Rust, the same way for both databases.
//!
//! **Percentiles** are estimated from the merged fixed-bucket histogram (bounds
//! [`LATENCY_BUCKET_BOUNDS_MS`]) the way Prometheus' `histogram_quantile` does: the rank of
//! quantile `q` among `n` requests is `q·n`; the first bucket whose cumulative count reaches the
//! rank holds it, and the value is interpolated linearly between that bucket's lower bound
//! (the previous bound, 0 for the first bucket) and its upper bound, assuming the bucket's
//! requests are spread evenly: `lower + (upper − lower) · (rank − below) / in_bucket`. A rank
//! in the overflow bucket (slower than every bound) reports the last bound, 10,000 ms: the
//! histogram cannot say more. No requests: no percentile (`None`).

use std::collections::BTreeMap;

use tollgate_filter::usage::{LATENCY_BUCKET_BOUNDS_MS, LATENCY_BUCKETS, format_date};

use serde_json::{Value, json};

use crate::storage::sql::query::{Counts, DailyRow};
use crate::storage::sql::{RequestLogStore, UsageQueries};

mod period;

pub use self::period::period;

/// `/daily`: per day requests, bytes in/out, 4xx, 5xx and active users of `tenant` for every
/// date of `dates` (zeros included), oldest first, and the totals.
pub async fn daily(
    database: &impl UsageQueries,
    tenant: &str,
    dates: &[String],
) -> Result<Value, sqlx::Error> {
    let (from, to) = bounds(dates);
    let rows = database.daily_rows(tenant, &from, &to).await?;
    let users = database.active_users(tenant, &from, &to).await?;
    let mut totals = Counts::default();
    let series: Vec<Value> = per_day(&rows, dates)
        .into_iter()
        .map(|(date, counts)| {
            totals.add(&counts);
            let mut day = json!({
                "date": date,
                "active_users": users.get(&date).copied().unwrap_or(0),
            });
            if let (Some(day), Value::Object(more)) = (day.as_object_mut(), counters(&counts)) {
                day.extend(more);
            }
            day
        })
        .collect();
    Ok(json!({
        "tenant": tenant,
        "from": from,
        "to": to,
        "days": series,
        "totals": counters(&totals),
    }))
}

/// `/endpoints`: the `top` endpoints of `tenant` by calls over `dates`, with their error rate
/// (4xx + 5xx over requests) and latency mean and p50/p95/p99.
pub async fn endpoints(
    database: &impl UsageQueries,
    tenant: &str,
    dates: &[String],
    top: usize,
) -> Result<Value, sqlx::Error> {
    let (from, to) = bounds(dates);
    let rows = database.daily_rows(tenant, &from, &to).await?;
    let list: Vec<Value> = top_endpoints(&rows, top)
        .iter()
        .map(|(endpoint, c)| endpoint_answer(endpoint, c))
        .collect();
    Ok(json!({
        "tenant": tenant,
        "from": from,
        "to": to,
        "endpoints": list,
    }))
}

fn endpoint_answer(endpoint: &str, c: &Counts) -> Value {
    let errors = c.errors_4xx.saturating_add(c.errors_5xx);
    let share = |n: u64| (c.requests > 0).then(|| round(n as f64 / c.requests as f64, 4));
    let p = |percent| percentile(&c.latency_buckets, percent).map(|v| round(v, 2));
    json!({
        "endpoint": endpoint,
        "requests": c.requests,
        "errors_4xx": c.errors_4xx,
        "errors_5xx": c.errors_5xx,
        "error_rate": share(errors),
        "latency_ms": {
            "mean": share(c.latency_ms_sum),
            "p50": p(50),
            "p95": p(95),
            "p99": p(99),
        },
    })
}

/// `/users`: active users of `tenant` per day of `dates` (the day's distinct JWT subjects).
pub async fn users(
    database: &impl UsageQueries,
    tenant: &str,
    dates: &[String],
) -> Result<Value, sqlx::Error> {
    let (from, to) = bounds(dates);
    let users = database.active_users(tenant, &from, &to).await?;
    let series: Vec<Value> = dates
        .iter()
        .map(|date| json!({ "date": date, "users": users.get(date).copied().unwrap_or(0) }))
        .collect();
    Ok(json!({
        "tenant": tenant,
        "from": from,
        "to": to,
        "days": series,
    }))
}

/// `/requests`: the latest `limit` requests of `tenant` in the request log, newest first.
pub async fn requests(
    database: &impl RequestLogStore,
    tenant: &str,
    limit: u32,
) -> Result<Value, sqlx::Error> {
    let entries = database.latest(tenant, limit).await?;
    let list: Vec<Value> = entries
        .iter()
        .map(|entry| {
            json!({
                "time_ms": entry.time_ms,
                "endpoint": entry.endpoint,
                "status": entry.status,
                "bytes_in": entry.bytes_in,
                "bytes_out": entry.bytes_out,
                "latency_ms": entry.latency_ms,
                "user": entry.user,
            })
        })
        .collect();
    Ok(json!({
        "tenant": tenant,
        "limit": limit,
        "requests": list,
    }))
}

fn bounds(dates: &[String]) -> (String, String) {
    (
        dates.first().cloned().unwrap_or_default(),
        dates.last().cloned().unwrap_or_default(),
    )
}

fn counters(counts: &Counts) -> Value {
    json!({
        "requests": counts.requests,
        "bytes_in": counts.bytes_in,
        "bytes_out": counts.bytes_out,
        "errors_4xx": counts.errors_4xx,
        "errors_5xx": counts.errors_5xx,
    })
}

/// The `days` dates ending with `today` (days since 1970), oldest first.
pub fn date_range(today: i64, days: u32) -> Vec<String> {
    (0..i64::from(days))
        .rev()
        .map(|back| format_date(today - back))
        .collect()
}

/// `rows` summed per date, for every date of `dates` (zeros where there are none).
pub fn per_day(rows: &[DailyRow], dates: &[String]) -> Vec<(String, Counts)> {
    let mut sums: BTreeMap<&str, Counts> = BTreeMap::new();
    for row in rows {
        sums.entry(row.date.as_str()).or_default().add(&row.counts);
    }
    dates
        .iter()
        .map(|date| {
            let counts = sums.remove(date.as_str()).unwrap_or_default();
            (date.clone(), counts)
        })
        .collect()
}

/// `rows` summed per endpoint, most calls first (ties by name), at most `top`.
pub fn top_endpoints(rows: &[DailyRow], top: usize) -> Vec<(String, Counts)> {
    let mut sums: BTreeMap<&str, Counts> = BTreeMap::new();
    for row in rows {
        sums.entry(row.endpoint.as_str())
            .or_default()
            .add(&row.counts);
    }
    let mut sorted: Vec<(String, Counts)> = sums
        .into_iter()
        .map(|(endpoint, counts)| (endpoint.to_owned(), counts))
        .collect();
    sorted.sort_by(|a, b| b.1.requests.cmp(&a.1.requests).then(a.0.cmp(&b.0)));
    sorted.truncate(top);
    sorted
}

/// Percentile `percent` (1 to 100) of the latency histogram `buckets`, in ms (see the module
/// docs for the method); `None` when it counts no request.
pub fn percentile(buckets: &[u64], percent: u32) -> Option<f64> {
    let total: u64 = buckets.iter().take(LATENCY_BUCKETS).sum();
    if total == 0 {
        return None;
    }
    // Exact for any realistic total (a float of an integer product, divided once).
    let rank = total.saturating_mul(u64::from(percent)) as f64 / 100.0;
    let mut below = 0u64;
    let mut lower = 0u64;
    for (i, &count) in buckets.iter().take(LATENCY_BUCKETS).enumerate() {
        let Some(&upper) = LATENCY_BUCKET_BOUNDS_MS.get(i) else {
            // The overflow bucket: slower than every bound.
            return Some(lower as f64);
        };
        if count > 0 && (below + count) as f64 >= rank {
            let within = (rank - below as f64) / count as f64;
            return Some(lower as f64 + (upper - lower) as f64 * within);
        }
        below += count;
        lower = upper;
    }
    Some(lower as f64)
}

/// `x` rounded to `digits` decimals.
pub fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

/// Days in the month of the date `days` since 1970 and the day it starts on.
pub fn month_of(days: i64) -> (i64, u32) {
    let text = format_date(days);
    let day_of_month: i64 = text.get(8..10).and_then(|d| d.parse().ok()).unwrap_or(1);
    let start = days - (day_of_month - 1);
    // The first of the next month is 28 to 31 days later.
    let mut length = 28;
    while length < 31 && format_date(start + length).get(8..10) != Some("01") {
        length += 1;
    }
    (start, length as u32)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use tollgate_filter::usage::parse_date;

    use super::*;

    #[test]
    fn percentiles_interpolate_within_buckets() {
        // 100 requests: 50 in (0, 5], 40 in (5, 10], 10 in (10, 25].
        let buckets = [50, 40, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(percentile(&buckets, 50), Some(5.0));
        assert_eq!(percentile(&buckets, 70), Some(7.5));
        assert_eq!(percentile(&buckets, 95), Some(17.5));
        assert_eq!(percentile(&buckets, 100), Some(25.0));
        // Everything slower than the last bound: the last bound.
        let slow = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3];
        assert_eq!(percentile(&slow, 50), Some(10_000.0));
        assert_eq!(percentile(&[], 50), None);
        assert_eq!(percentile(&[0; LATENCY_BUCKETS], 50), None);
    }

    #[test]
    fn months() {
        let day = |s| parse_date(s).unwrap();
        assert_eq!(month_of(day("2026-11-26")), (day("2026-11-01"), 30));
        assert_eq!(month_of(day("2024-02-29")), (day("2024-02-01"), 29));
        assert_eq!(month_of(day("2026-02-01")), (day("2026-02-01"), 28));
        assert_eq!(month_of(day("2026-12-31")), (day("2026-12-01"), 31));
        assert_eq!(
            date_range(day("2026-03-01"), 3),
            ["2026-02-27", "2026-02-28", "2026-03-01"]
        );
    }
}
