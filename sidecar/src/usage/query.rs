//! Reading the usage database for the tenant usage API (`GET /v1/usage/…`,
//! [`crate::routes::usage_query`]).
//!
//! Two portable reads — a tenant's `api_usage_daily` rows between two dates and its
//! `api_active_users_daily` counts — and pure functions that turn them into the answers
//! (daily series, month-to-date total, top endpoints with latency percentiles). The histogram
//! column is `bigint[]` in PostgreSQL and a JSON text array in SQLite, so histograms are
//! merged here, in Rust, the same way for both.
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

use sqlx::Row as _;
use tollgate_filter::usage::{LATENCY_BUCKET_BOUNDS_MS, LATENCY_BUCKETS, format_date};

use crate::db::Database;

/// One `api_usage_daily` row, as read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DailyRow {
    /// `YYYY-MM-DD`.
    pub date: String,
    /// The endpoint label.
    pub endpoint: String,
    /// The counters.
    pub counts: Counts,
}

/// Additive counters of one row or of a sum of rows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Requests.
    pub requests: u64,
    /// Request bytes.
    pub bytes_in: u64,
    /// Response bytes.
    pub bytes_out: u64,
    /// 4xx answers.
    pub errors_4xx: u64,
    /// 5xx answers.
    pub errors_5xx: u64,
    /// Sum of durations, ms.
    pub latency_ms_sum: u64,
    /// The latency histogram ([`LATENCY_BUCKETS`] elements; empty: none recorded).
    pub latency_buckets: Vec<u64>,
}

impl Counts {
    /// Adds `other` into `self` (the histograms element by element).
    pub fn add(&mut self, other: &Counts) {
        self.requests = self.requests.saturating_add(other.requests);
        self.bytes_in = self.bytes_in.saturating_add(other.bytes_in);
        self.bytes_out = self.bytes_out.saturating_add(other.bytes_out);
        self.errors_4xx = self.errors_4xx.saturating_add(other.errors_4xx);
        self.errors_5xx = self.errors_5xx.saturating_add(other.errors_5xx);
        self.latency_ms_sum = self.latency_ms_sum.saturating_add(other.latency_ms_sum);
        if self.latency_buckets.len() < other.latency_buckets.len() {
            self.latency_buckets.resize(other.latency_buckets.len(), 0);
        }
        for (sum, add) in self.latency_buckets.iter_mut().zip(&other.latency_buckets) {
            *sum = sum.saturating_add(*add);
        }
    }
}

fn unsigned(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// The `api_usage_daily` rows of `tenant` from `from` to `to` (`YYYY-MM-DD`, both included).
pub async fn daily_rows(
    database: &Database,
    tenant: &str,
    from: &str,
    to: &str,
) -> Result<Vec<DailyRow>, sqlx::Error> {
    const COLUMNS: &str = "endpoint, requests, bytes_in, bytes_out, errors_4xx, errors_5xx, \
                           latency_ms_sum, latency_buckets";
    let mut out = Vec::new();
    match database {
        Database::Postgres(pool) => {
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
        }
        Database::Sqlite(pool) => {
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
        }
    }
    Ok(out)
}

fn counts(
    get: impl Fn(&str) -> Result<i64, sqlx::Error>,
    buckets: Vec<i64>,
) -> Result<Counts, sqlx::Error> {
    Ok(Counts {
        requests: unsigned(get("requests")?),
        bytes_in: unsigned(get("bytes_in")?),
        bytes_out: unsigned(get("bytes_out")?),
        errors_4xx: unsigned(get("errors_4xx")?),
        errors_5xx: unsigned(get("errors_5xx")?),
        latency_ms_sum: unsigned(get("latency_ms_sum")?),
        latency_buckets: buckets.into_iter().map(unsigned).collect(),
    })
}

/// The active users of `tenant` per day from `from` to `to` (days without a row are absent).
pub async fn active_users(
    database: &Database,
    tenant: &str,
    from: &str,
    to: &str,
) -> Result<BTreeMap<String, u64>, sqlx::Error> {
    let rows = match database {
        Database::Postgres(pool) => sqlx::query(
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
        .collect::<Result<Vec<(String, i64)>, sqlx::Error>>()?,
        Database::Sqlite(pool) => sqlx::query(
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
        .collect::<Result<Vec<(String, i64)>, sqlx::Error>>()?,
    };
    Ok(rows
        .into_iter()
        .map(|(day, users)| (day, unsigned(users)))
        .collect())
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
