//! `/v1/usage/period`: the tenant's current period so far against its quota.
//!
//! - The registry knows the tenant: its **billing period** (anchor day `d`: from day `d` of
//!   one month to the day before day `d` of the next, UTC) and, when its plan has one, the
//!   plan's **`monthly_quota`** (`quota_source: "monthly_quota"`).
//! - Otherwise (a tenant of the filter configuration only, or a plan without a monthly
//!   quota): the calendar month (registry-less) or the billing period, against the old
//!   figure `requests_per_minute × 60 × 24 × days in the period`
//!   (`quota_source: "requests_per_minute"`).
//!
//! Requests are read through [`UsageQueries`]; the server passes
//! [`LiveUsage`](crate::services::live_usage::LiveUsage), so they include usage not flushed
//! yet.

use serde_json::{Value, json};
use tollgate_filter::usage::format_date;

use super::{month_of, round};
use crate::services::registry::period::{BillingTerms, period as billing_period};
use crate::storage::sql::UsageQueries;
use crate::tenants::TenantInfo;

const DAY: u64 = 86_400;

/// The period of `today` (days since 1970): its first day and its length in days.
fn current(terms: Option<&BillingTerms>, today: i64) -> (i64, u32) {
    match terms {
        Some(terms) => {
            let now = u64::try_from(today).unwrap_or(0) * DAY;
            let (start, end) = billing_period(terms.anchor_day, now);
            let first = i64::try_from(start / DAY).unwrap_or(today);
            let length = u32::try_from((end - start) / DAY).unwrap_or(31);
            (first, length)
        }
        None => month_of(today),
    }
}

/// `/period` for `tenant` (see the module docs): `plan` is what the API knows of the tenant
/// (its plan and rate), `terms` what the registry knows (`None`: not in the registry).
pub async fn period(
    usage: &impl UsageQueries,
    tenant: &str,
    plan: Option<&TenantInfo>,
    terms: Option<&BillingTerms>,
    today: i64,
) -> Result<Value, sqlx::Error> {
    let (start, length) = current(terms, today);
    let (from, to) = (format_date(start), format_date(today));
    let rows = usage.daily_rows(tenant, &from, &to).await?;
    let requests = rows
        .iter()
        .fold(0u64, |sum, row| sum.saturating_add(row.counts.requests));
    let monthly = terms.and_then(|t| t.monthly_quota);
    let (quota, source) = match (monthly, plan) {
        (Some(quota), _) => (Some(quota), Some("monthly_quota")),
        (None, Some(p)) => (
            Some(
                p.requests_per_minute
                    .saturating_mul(60 * 24)
                    .saturating_mul(u64::from(length)),
            ),
            Some("requests_per_minute"),
        ),
        (None, None) => (None, None),
    };
    let percent = quota
        .filter(|&q| q > 0)
        .map(|q| round(requests as f64 * 100.0 / q as f64, 2));
    let mut answer = json!({
        "tenant": tenant,
        "plan": plan.map(|p| p.plan.as_str()),
        "period": {
            "start": from,
            "end": format_date(start + i64::from(length) - 1),
            "today": to,
            "days": length,
            "days_elapsed": today - start + 1,
        },
        "requests": requests,
        "requests_per_minute": plan.map(|p| p.requests_per_minute),
        "quota": quota,
        "quota_source": source,
        "remaining": quota.map(|q| q.saturating_sub(requests)),
        "percent_used": percent,
    });
    if let (Some(terms), Some(object)) = (terms, answer.as_object_mut()) {
        object.insert("billing_anchor_day".into(), json!(terms.anchor_day));
        object.insert("overage".into(), json!(terms.overage));
    }
    Ok(answer)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use tollgate_filter::registry::Overage;
    use tollgate_filter::usage::parse_date;

    use super::*;

    #[test]
    fn billing_periods_follow_the_anchor_day_and_months_the_calendar() {
        let day = |s| parse_date(s).unwrap();
        let terms = |anchor_day| BillingTerms {
            anchor_day,
            monthly_quota: Some(10),
            overage: Overage::Block,
        };
        assert_eq!(
            current(Some(&terms(15)), day("2026-12-06")),
            (day("2026-11-15"), 30)
        );
        assert_eq!(
            current(Some(&terms(6)), day("2026-12-06")),
            (day("2026-12-06"), 31)
        );
        assert_eq!(current(None, day("2026-12-06")), (day("2026-12-01"), 31));
    }
}
