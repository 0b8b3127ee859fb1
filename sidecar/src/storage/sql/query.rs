//! What the tenant usage API reads from the usage database: a tenant's `api_usage_daily` rows
//! between two dates ([`DailyRow`]) and its `api_active_users_daily` counts, through
//! [`UsageQueries`](super::UsageQueries). The histogram column is `bigint[]` in PostgreSQL and
//! a JSON text array in SQLite; both read into the same [`Counts`].

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
    /// The latency histogram ([`LATENCY_BUCKETS`](tollgate_filter::usage::LATENCY_BUCKETS) elements; empty: none recorded).
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

pub(crate) fn unsigned(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

pub(crate) fn counts(
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

/// `ranges` with one range per tenant, the last one listed (what a bulk statement joins on:
/// a tenant listed twice would be counted twice).
pub(crate) fn last_range_per_tenant(ranges: &[super::TenantRange]) -> Vec<&super::TenantRange> {
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<&super::TenantRange> = ranges
        .iter()
        .rev()
        .filter(|r| seen.insert(r.tenant.as_str()))
        .collect();
    out.reverse();
    out
}
