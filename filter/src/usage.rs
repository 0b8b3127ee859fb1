//! Usage metering on the wire: what a filter worker sends to the sidecar's [`USAGE_PATH`], and
//! the pure aggregate ([`UsageAggregate`]) it builds those batches with.
//!
//! A worker adds every finished request into a record keyed by `(tenant, date, endpoint)` and
//! sends the records in [`UsageBatch`]es. **Exactly once:** like a sync batch, `(sender, seq)`
//! names a batch; one that got no answer is sent again *unchanged*, with the same `seq`, before
//! anything newer. The sidecar applies a batch's records per tenant at most once (a `seq` no
//! higher than the last one applied for that sender and tenant is a duplicate), so a retry of a
//! batch that was applied, or half applied, counts nothing twice.
//!
//! ```
//! use tollgate_filter::usage::{RequestUsage, UsageAggregate, UsageBatch};
//!
//! let mut aggregate = UsageAggregate::new(1_000);
//! let request = RequestUsage {
//!     tenant: "acme", plan: Some("pro"), date: "2026-11-26", endpoint: "GET /api/reports",
//!     status: 200, bytes_in: 120, bytes_out: 5_000, latency_ms: 7, user: Some(42),
//! };
//! assert!(aggregate.record(&request));
//! assert!(aggregate.record(&RequestUsage { status: 503, ..request }));
//! let batch = UsageBatch { sender: 1, seq: 1, records: aggregate.drain(1024), requests: vec![] };
//! batch.validate().unwrap();
//! assert_eq!((batch.records[0].requests, batch.records[0].errors_5xx), (2, 1));
//! assert_eq!(batch.records[0].latency_buckets[1], 2); // 5 ms < 7 ms ≤ 10 ms
//! ```

use serde::{Deserialize, Serialize};

use crate::Nanos;

/// The sidecar path that takes a [`UsageBatch`] and answers a [`UsageResponse`].
pub const USAGE_PATH: &str = "/v1/usage";

/// The most records one [`UsageBatch`] may carry.
pub const MAX_USAGE_RECORDS: usize = 1024;

/// The most request log entries one [`UsageBatch`] may carry.
pub const MAX_LOG_ENTRIES: usize = 4096;

/// The largest JSON body of one [`UsageBatch`] a filter sends (bytes): the sidecar accepts
/// 3 MiB, and a batch with [`MAX_USAGE_RECORDS`] records full of users, or
/// [`MAX_LOG_ENTRIES`] entries with the longest labels, could be more; such a batch is cut
/// short and the rest goes in the next one.
pub const MAX_BATCH_BYTES: usize = 3 * 1024 * 1024 - 64 * 1024;

/// The longest tenant id, endpoint label and plan name (bytes).
pub const MAX_LABEL_LEN: usize = 128;

/// The most distinct users one [`UsageRecord`] may carry (a worker that saw more starts a
/// second record for the same key).
pub const MAX_RECORD_USERS: usize = 256;

/// The largest value any counter of one record may have (2^48): far above what one worker
/// sees in a sync interval, and low enough that sums never overflow a signed 64-bit counter
/// (Redis `HINCRBY`, SQL `bigint`).
pub const MAX_RECORD_COUNT: u64 = 1 << 48;

/// The upper bounds, in milliseconds, of the latency histogram's buckets: element `i` of
/// [`UsageRecord::latency_buckets`] counts requests that took at most
/// `LATENCY_BUCKET_BOUNDS_MS[i]` ms (and more than the bound before it); the last element
/// counts the slower ones. The one definition (the sidecar and its tables use it).
pub const LATENCY_BUCKET_BOUNDS_MS: [u64; 11] =
    [5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000];

/// Elements of a latency histogram: one per bound plus the overflow bucket.
pub const LATENCY_BUCKETS: usize = LATENCY_BUCKET_BOUNDS_MS.len() + 1;

/// The histogram bucket of a request that took `latency_ms`.
pub fn latency_bucket(latency_ms: u64) -> usize {
    LATENCY_BUCKET_BOUNDS_MS
        .iter()
        .position(|&bound| latency_ms <= bound)
        .unwrap_or(LATENCY_BUCKET_BOUNDS_MS.len())
}

/// One worker's usage since its previous batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageBatch {
    /// The sending worker (random per filter instance).
    pub sender: u64,
    /// The batch's number, increasing per sender.
    pub seq: u64,
    /// At most [`MAX_USAGE_RECORDS`] records.
    pub records: Vec<UsageRecord>,
    /// The detailed request log: one entry per request, oldest first, at most
    /// [`MAX_LOG_ENTRIES`]; sent only when the filter's `usage.request_log` is on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requests: Vec<RequestLogEntry>,
}

/// One request of the detailed request log (`usage.request_log`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestLogEntry {
    /// When the request arrived: Unix milliseconds.
    pub time_ms: u64,
    /// The tenant's id (same rules as [`UsageRecord::tenant`]).
    pub tenant: String,
    /// The endpoint label (same rules as [`UsageRecord::endpoint`]).
    pub endpoint: String,
    /// The response status (100 to 599; 0 when the stream ended without a response).
    pub status: u16,
    /// Request bytes received.
    #[serde(default)]
    pub bytes_in: u64,
    /// Response bytes sent.
    #[serde(default)]
    pub bytes_out: u64,
    /// Duration in milliseconds.
    #[serde(default)]
    pub latency_ms: u64,
    /// The hashed JWT subject, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<u64>,
}

/// Usage of one `(tenant, date, endpoint)` in one batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageRecord {
    /// The tenant's id: 1 to [`MAX_LABEL_LEN`] bytes, no `{`, `}` or control characters.
    pub tenant: String,
    /// The tenant's plan, when known (1 to [`MAX_LABEL_LEN`] bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// The UTC day of the requests, `YYYY-MM-DD`.
    pub date: String,
    /// The endpoint label (a rule or route name, a path template; never raw ids): 1 to
    /// [`MAX_LABEL_LEN`] bytes, no control characters.
    pub endpoint: String,
    /// Requests served.
    pub requests: u64,
    /// Request bytes received.
    #[serde(default)]
    pub bytes_in: u64,
    /// Response bytes sent.
    #[serde(default)]
    pub bytes_out: u64,
    /// Responses with a 4xx status.
    #[serde(default)]
    pub errors_4xx: u64,
    /// Responses with a 5xx status.
    #[serde(default)]
    pub errors_5xx: u64,
    /// The requests' durations added up, in milliseconds.
    #[serde(default)]
    pub latency_ms_sum: u64,
    /// Requests per latency bucket ([`LATENCY_BUCKET_BOUNDS_MS`]).
    #[serde(default)]
    pub latency_buckets: [u64; LATENCY_BUCKETS],
    /// Hashes of the JWT subjects seen (distinct, at most [`MAX_RECORD_USERS`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<u64>,
}

/// The sidecar's answer to a [`UsageBatch`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageResponse {
    /// Records counted now.
    pub applied: u64,
    /// Records of tenants for which this batch (or a newer one) was applied before: not
    /// counted again.
    pub duplicate: u64,
}

/// Why a [`UsageBatch`] is refused; the message names the field and the fix
/// (`records[3].date: "2026-13-01" is not a date (YYYY-MM-DD)`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct UsageError {
    /// The field's path (`records`, `records[3].tenant`).
    pub field: String,
    /// What is wrong and what would be accepted.
    pub reason: String,
}

impl UsageBatch {
    /// Checks the batch's size and every record ([`UsageRecord::validate`]).
    pub fn validate(&self) -> Result<(), UsageError> {
        if self.records.len() > MAX_USAGE_RECORDS {
            return Err(UsageError {
                field: "records".into(),
                reason: format!("must hold at most {MAX_USAGE_RECORDS} records"),
            });
        }
        for (n, record) in self.records.iter().enumerate() {
            record.validate().map_err(|(field, reason)| UsageError {
                field: format!("records[{n}].{field}"),
                reason,
            })?;
        }
        if self.requests.len() > MAX_LOG_ENTRIES {
            return Err(UsageError {
                field: "requests".into(),
                reason: format!("must hold at most {MAX_LOG_ENTRIES} entries"),
            });
        }
        for (n, entry) in self.requests.iter().enumerate() {
            entry.validate().map_err(|(field, reason)| UsageError {
                field: format!("requests[{n}].{field}"),
                reason,
            })?;
        }
        Ok(())
    }
}

impl RequestLogEntry {
    /// Checks one entry; the error is `(field, reason)`.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        check_label("tenant", &self.tenant, true)?;
        check_label("endpoint", &self.endpoint, false)?;
        if self.status != 0 && !(100..=599).contains(&self.status) {
            return Err(("status", "must be 100 to 599, or 0 for no response".into()));
        }
        for (field, value) in [
            ("bytes_in", self.bytes_in),
            ("bytes_out", self.bytes_out),
            ("latency_ms", self.latency_ms),
            ("time_ms", self.time_ms),
        ] {
            if value > MAX_RECORD_COUNT {
                return Err((field, format!("must be at most {MAX_RECORD_COUNT}")));
            }
        }
        Ok(())
    }
}

/// Checks a tenant id (`braces`: `{` and `}` refused too), plan or endpoint label.
fn check_label(
    field: &'static str,
    text: &str,
    braces: bool,
) -> Result<(), (&'static str, String)> {
    if text.is_empty() || text.len() > MAX_LABEL_LEN {
        return Err((field, format!("must be 1 to {MAX_LABEL_LEN} bytes long")));
    }
    if text.chars().any(char::is_control) || (braces && text.contains(['{', '}'])) {
        let what = if braces {
            "control characters, '{' or '}'"
        } else {
            "control characters"
        };
        return Err((field, format!("must not contain {what}")));
    }
    Ok(())
}

impl UsageRecord {
    /// An empty record of `(tenant, date, endpoint)`.
    pub fn new(tenant: &str, plan: Option<&str>, date: &str, endpoint: &str) -> Self {
        UsageRecord {
            tenant: tenant.into(),
            plan: plan.map(Into::into),
            date: date.into(),
            endpoint: endpoint.into(),
            requests: 0,
            bytes_in: 0,
            bytes_out: 0,
            errors_4xx: 0,
            errors_5xx: 0,
            latency_ms_sum: 0,
            latency_buckets: [0; LATENCY_BUCKETS],
            users: Vec::new(),
        }
    }

    /// Checks one record; the error is `(field, reason)`.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let label = check_label;
        label("tenant", &self.tenant, true)?;
        if let Some(plan) = &self.plan {
            label("plan", plan, false)?;
        }
        if parse_date(&self.date).is_none() {
            return Err((
                "date",
                format!("{:?} is not a date (YYYY-MM-DD)", self.date),
            ));
        }
        label("endpoint", &self.endpoint, false)?;
        let counters = [
            ("requests", self.requests),
            ("bytes_in", self.bytes_in),
            ("bytes_out", self.bytes_out),
            ("errors_4xx", self.errors_4xx),
            ("errors_5xx", self.errors_5xx),
            ("latency_ms_sum", self.latency_ms_sum),
        ];
        let buckets = self.latency_buckets.iter().map(|&n| ("latency_buckets", n));
        for (field, value) in counters.into_iter().chain(buckets) {
            if value > MAX_RECORD_COUNT {
                return Err((field, format!("must be at most {MAX_RECORD_COUNT}")));
            }
        }
        if self.errors_4xx.saturating_add(self.errors_5xx) > self.requests {
            return Err(("errors_4xx", "4xx and 5xx errors exceed requests".into()));
        }
        if self.latency_buckets.iter().sum::<u64>() != self.requests {
            return Err(("latency_buckets", "must add up to requests".into()));
        }
        if self.users.len() > MAX_RECORD_USERS {
            return Err((
                "users",
                format!("must hold at most {MAX_RECORD_USERS} users"),
            ));
        }
        Ok(())
    }
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` date (years 1970 to 9999), `None` when it is not
/// one.
pub fn parse_date(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    if bytes.len() != 10 || bytes.get(4) != Some(&b'-') || bytes.get(7) != Some(&b'-') {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(range)?;
        if !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days_in_month = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if year < 1970 || day < 1 || day > days_in_month {
        return None;
    }
    Some(days_from_civil(year, month, day))
}

/// The UTC date (`YYYY-MM-DD`) of `now`, Unix nanoseconds.
pub fn utc_date(now: Nanos) -> String {
    format_date((now / 86_400_000_000_000) as i64)
}

/// The date `days` after 1970-01-01, `YYYY-MM-DD`.
pub fn format_date(days: i64) -> String {
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// Howard Hinnant's days_from_civil.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

mod buffer;

pub use buffer::{RequestLog, RequestUsage, UsageAggregate, UsageBuffer};

#[cfg(test)]
mod tests;
