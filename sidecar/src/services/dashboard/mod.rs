//! The customer dashboard's figures ([`tenant_data`]) and the operator's overview
//! ([`overview`]), read through [`UsageQueries`] only (so whatever implements it — the
//! database, or a wrapper adding usage not flushed yet — is what the dashboard shows), and
//! signing in ([`access`]). Rendering is the routes' business (`routes/dashboard`).
//!
//! One [`UsageQueries::usage_summary`] call reads the last 30 days folded per day and the top
//! endpoints (the databases fold in SQL and read only the top endpoints' histograms, so 1,000
//! endpoints × 30 days stay within the dashboard's 50 ms budget, `bench/dashboard`), one
//! [`UsageQueries::active_users`] call the 30 days' users, and [`UsageQueries::period_requests`]
//! the day or two of the billing period before those 30 days, when there are any.

pub mod access;
pub mod forecast;

use std::collections::HashMap;

use serde::Serialize;
use tollgate_filter::registry::Overage;
use tollgate_filter::usage::format_date;

use self::forecast::{Forecast, Terms, forecast};
use crate::services::registry::period;
use crate::services::usage_query::{percentile, round};
use crate::storage::sql::query::Counts;
use crate::storage::sql::registry::{PlanRecord, RegistryStore};
use crate::storage::sql::{TenantRange, UsageQueries};

/// Days in the usage graph.
pub const CHART_DAYS: u32 = 30;
/// Endpoints in the top list.
pub const TOP_ENDPOINTS: usize = 5;
const DAY: u64 = 86_400;

/// Whom a dashboard is about: a tenant and what the registry knows of it.
#[derive(Clone, Debug, Default)]
pub struct Subject {
    /// The tenant id.
    pub id: String,
    /// Its plan's name, when known.
    pub plan: Option<String>,
    /// Its plan's terms, when the plan is in the registry.
    pub terms: Option<PlanRecord>,
    /// Its billing anchor day (1–28; tenants outside the registry: 1, calendar months).
    pub anchor_day: u32,
}

/// Everything the dashboard shows, as `GET /dashboard/data` answers it.
#[derive(Clone, Debug, Serialize)]
pub struct DashboardData {
    /// The tenant id.
    pub tenant: String,
    /// Its plan.
    pub plan: Option<String>,
    /// When this was computed (Unix seconds).
    pub generated_at: u64,
    /// The current billing period.
    pub period: PeriodView,
    /// The period's usage against the monthly quota.
    pub quota: QuotaView,
    /// The forecast for the period (an estimate).
    pub forecast: Forecast,
    /// The last [`CHART_DAYS`] UTC days, oldest first, today last.
    pub days: Vec<DayView>,
    /// The top [`TOP_ENDPOINTS`] endpoints of those days by calls.
    pub top_endpoints: Vec<EndpointView>,
    /// Distinct users today.
    pub active_users_today: u64,
}

/// A billing period.
#[derive(Clone, Debug, Serialize)]
pub struct PeriodView {
    /// Its first day (`YYYY-MM-DD`).
    pub start: String,
    /// The day it ends on, at 00:00 UTC (the next period's first day).
    pub end: String,
    /// Its start, Unix seconds.
    pub start_at: u64,
    /// Its end, Unix seconds (excluded).
    pub end_at: u64,
    /// The share of it elapsed (0 to 1).
    pub elapsed_share: f64,
}

/// Usage against the quota.
#[derive(Clone, Debug, Serialize)]
pub struct QuotaView {
    /// Requests included per period (`None`: no quota).
    pub monthly_quota: Option<u64>,
    /// Requests so far this period.
    pub used: u64,
    /// Requests left (`None`: no quota).
    pub left: Option<u64>,
    /// `used` as a percentage of the quota, 2 decimals (`None`: no quota).
    pub percent_used: Option<f64>,
    /// `block` or `bill` past the quota.
    pub overage: Option<Overage>,
}

/// One day of the graph.
#[derive(Clone, Debug, Serialize)]
pub struct DayView {
    /// `YYYY-MM-DD`.
    pub date: String,
    /// Requests.
    pub requests: u64,
    /// 4xx and 5xx answers.
    pub errors: u64,
    /// 4xx answers.
    pub errors_4xx: u64,
    /// 5xx answers.
    pub errors_5xx: u64,
    /// Distinct users.
    pub active_users: u64,
}

/// One endpoint of the top list.
#[derive(Clone, Debug, Serialize)]
pub struct EndpointView {
    /// Its label.
    pub endpoint: String,
    /// Calls.
    pub requests: u64,
    /// 4xx and 5xx answers.
    pub errors: u64,
    /// `errors ÷ requests`, 4 decimals.
    pub error_rate: Option<f64>,
    /// 95th percentile latency, ms, 2 decimals (estimated as the usage API does).
    pub p95_ms: Option<f64>,
}

/// The dashboard of `subject` at `now` (Unix seconds).
pub async fn tenant_data<Q: UsageQueries>(
    usage: &Q,
    subject: &Subject,
    now: u64,
) -> Result<DashboardData, sqlx::Error> {
    let today = days(now);
    let (start, end) = period::period(subject.anchor_day.clamp(1, 28), now);
    let chart_from = today - i64::from(CHART_DAYS) + 1;
    let (chart_first, last) = (format_date(chart_from), format_date(today));
    let (summary, users) = tokio::try_join!(
        usage.usage_summary(&subject.id, &chart_first, &last, TOP_ENDPOINTS),
        usage.active_users(&subject.id, &chart_first, &last),
    )?;

    // The period's requests: its days within the chart, and any before it (a period starts at
    // most a day or two before the chart's first day).
    let period_first = format_date(days(start));
    let mut used = summary
        .days
        .iter()
        .filter(|(date, _)| *date >= period_first)
        .fold(0u64, |sum, (_, c)| sum.saturating_add(c.requests));
    if days(start) < chart_from {
        let before = TenantRange {
            tenant: subject.id.clone(),
            from: period_first.clone(),
            to: format_date(chart_from - 1),
        };
        let earlier = usage.period_requests(&[before]).await?;
        used = used.saturating_add(earlier.get(&subject.id).copied().unwrap_or(0));
    }
    let terms = subject.terms.as_ref();
    let quota = terms.and_then(|t| t.monthly_quota);
    let length = end.saturating_sub(start).max(1);
    Ok(DashboardData {
        tenant: subject.id.clone(),
        plan: subject.plan.clone(),
        generated_at: now,
        period: PeriodView {
            start: period_first,
            end: format_date(days(end)),
            start_at: start,
            end_at: end,
            elapsed_share: round(
                now.clamp(start, end).saturating_sub(start) as f64 / length as f64,
                4,
            ),
        },
        quota: QuotaView {
            monthly_quota: quota,
            used,
            left: quota.map(|q| q.saturating_sub(used)),
            percent_used: quota
                .filter(|&q| q > 0)
                .map(|q| round(used as f64 * 100.0 / q as f64, 2)),
            overage: terms.map(|t| t.overage),
        },
        forecast: forecast(
            used,
            Terms {
                quota,
                overage: terms.map_or(Overage::Block, |t| t.overage),
                price: terms.and_then(|t| t.overage_price.as_ref()),
            },
            start,
            end,
            now,
        ),
        days: day_views(&summary.days, chart_from, today, &users),
        top_endpoints: summary
            .top_endpoints
            .iter()
            .map(|(endpoint, c)| endpoint_view(endpoint, c))
            .collect(),
        active_users_today: users.get(&last).copied().unwrap_or(0),
    })
}

fn days(at: u64) -> i64 {
    i64::try_from(at / DAY).unwrap_or(i64::MAX)
}

fn day_views(
    sums: &[(String, Counts)],
    from: i64,
    to: i64,
    users: &std::collections::BTreeMap<String, u64>,
) -> Vec<DayView> {
    let sums: HashMap<&str, &Counts> = sums.iter().map(|(d, c)| (d.as_str(), c)).collect();
    (from..=to)
        .map(|day| {
            let date = format_date(day);
            let empty = Counts::default();
            let c = sums.get(date.as_str()).copied().unwrap_or(&empty);
            DayView {
                requests: c.requests,
                errors: c.errors_4xx.saturating_add(c.errors_5xx),
                errors_4xx: c.errors_4xx,
                errors_5xx: c.errors_5xx,
                active_users: users.get(&date).copied().unwrap_or(0),
                date,
            }
        })
        .collect()
}

/// One top endpoint as the usage API reports it (error rate to 4 decimals, p95 to 2).
fn endpoint_view(endpoint: &str, c: &Counts) -> EndpointView {
    let errors = c.errors_4xx.saturating_add(c.errors_5xx);
    EndpointView {
        endpoint: endpoint.to_owned(),
        requests: c.requests,
        errors,
        error_rate: (c.requests > 0).then(|| round(errors as f64 / c.requests as f64, 4)),
        p95_ms: percentile(&c.latency_buckets, 95).map(|v| round(v, 2)),
    }
}

/// One tenant of the operator's overview.
#[derive(Clone, Debug, Serialize)]
pub struct OverviewRow {
    /// The tenant id.
    pub tenant: String,
    /// Its plan.
    pub plan: String,
    /// `active` or `suspended`.
    pub status: tollgate_filter::registry::TenantStatus,
    /// Requests included per period.
    pub monthly_quota: Option<u64>,
    /// Requests so far this period.
    pub used: u64,
    /// `used` as a percentage of the quota, 2 decimals (`None`: no quota).
    pub percent_used: Option<f64>,
    /// The period's first day.
    pub period_start: String,
    /// The day the period ends on (00:00 UTC).
    pub period_end: String,
}

/// Registry tenants listed per page while building the overview.
const PAGE: u32 = 1_000;

/// Every registry tenant with its period's usage, the largest share of quota used first
/// (tenants without a quota last, by requests), ties by id.
pub async fn overview<Q: UsageQueries, D: RegistryStore>(
    usage: &Q,
    registry: &D,
    now: u64,
) -> Result<Vec<OverviewRow>, sqlx::Error> {
    let plans: HashMap<String, PlanRecord> = registry
        .plans()
        .await?
        .into_iter()
        .map(|p| (p.name.clone(), p))
        .collect();
    let mut tenants = Vec::new();
    let mut after = String::new();
    loop {
        let page = registry.tenants("", &after, PAGE).await?;
        let full = page.len() == PAGE as usize;
        if let Some(last) = page.last() {
            after = last.id.clone();
        }
        tenants.extend(page);
        if !full {
            break;
        }
    }
    let today = format_date(days(now));
    let periods: Vec<(u64, u64)> = tenants
        .iter()
        .map(|t| period::period(t.billing_anchor_day.clamp(1, 28), now))
        .collect();
    let ranges: Vec<TenantRange> = tenants
        .iter()
        .zip(&periods)
        .map(|(t, (start, _))| TenantRange {
            tenant: t.id.clone(),
            from: format_date(days(*start)),
            to: today.clone(),
        })
        .collect();
    let used = usage.period_requests(&ranges).await?;
    let mut rows: Vec<OverviewRow> = tenants
        .into_iter()
        .zip(periods)
        .map(|(t, (start, end))| {
            let quota = plans.get(&t.plan).and_then(|p| p.monthly_quota);
            let used = used.get(&t.id).copied().unwrap_or(0);
            OverviewRow {
                percent_used: quota
                    .filter(|&q| q > 0)
                    .map(|q| round(used as f64 * 100.0 / q as f64, 2)),
                monthly_quota: quota,
                used,
                period_start: format_date(days(start)),
                period_end: format_date(days(end)),
                status: t.status,
                plan: t.plan,
                tenant: t.id,
            }
        })
        .collect();
    rows.sort_by(|a, b| {
        let share = |r: &OverviewRow| r.percent_used.unwrap_or(-1.0);
        share(b)
            .total_cmp(&share(a))
            .then(b.used.cmp(&a.used))
            .then(a.tenant.cmp(&b.tenant))
    });
    Ok(rows)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests;
