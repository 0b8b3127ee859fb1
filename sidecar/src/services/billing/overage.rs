//! What a closed period owes: requests over the quota, priced by the plan, split at plan
//! changes. Pure: history, plans and daily requests in, an [`OverageInvoice`] plan out.
//!
//! **The plan-change rule.** A period is split into segments at each plan change
//! (`tenant_plan_history`). Usage is kept per UTC day, so a change takes effect from the start
//! of the UTC day it happened on (that whole day counts under the new plan; of several changes
//! on one day, the last wins). Each segment is billed under its plan alone: a plan that is
//! `billing: fixed` with `overage: bill`, a `monthly_quota` and an `overage_price` includes its
//! quota prorated by the segment's share of the period's days (rounded up, in the customer's
//! favour); the segment's requests over that are its overage, charged in whole units of the
//! price's `per` (rounded up) at its `amount`. Segments under other plans owe nothing. The
//! invoice has one item: the sum over segments (all billed segments must share a currency,
//! else the period is refused as `dead` to be invoiced by hand). Plans are read as they are
//! defined when the period is closed.

use std::collections::HashMap;

use tollgate_filter::registry::Overage;
use tollgate_filter::usage::{format_date, parse_date};

use crate::storage::sql::billing::overage::{OverageInvoice, OverageTenant};
use crate::storage::sql::registry::{Billing, PlanRecord};

const DAY: i64 = 86_400;

/// One segment of a period under one plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    /// The plan.
    pub plan: String,
    /// First day (Unix seconds, 00:00 UTC).
    pub start: i64,
    /// Day after the last (Unix seconds).
    pub end: i64,
}

/// The plan in force at `at`: the latest change at or before it (before the first change:
/// the first plan).
fn plan_at(history: &[(String, i64)], at: i64) -> Option<&str> {
    history
        .iter()
        .rev()
        .find(|(_, since)| *since <= at)
        .or_else(|| history.first())
        .map(|(plan, _)| plan.as_str())
}

/// `[start, end)` split at plan changes, each change from the start of its UTC day.
pub fn segments(history: &[(String, i64)], start: i64, end: i64) -> Vec<Segment> {
    let mut out: Vec<Segment> = Vec::new();
    let Some(first) = plan_at(history, start) else {
        return out;
    };
    out.push(Segment {
        plan: first.to_owned(),
        start,
        end,
    });
    for (plan, since) in history {
        let day = since - since.rem_euclid(DAY);
        if day <= start || day >= end {
            continue;
        }
        let Some(last) = out.last_mut() else { break };
        if last.start == day {
            plan.clone_into(&mut last.plan);
            continue;
        }
        last.end = day;
        out.push(Segment {
            plan: plan.clone(),
            start: day,
            end,
        });
    }
    out.dedup_by(|b, a| {
        if a.plan == b.plan && a.end == b.start {
            a.end = b.end;
            true
        } else {
            false
        }
    });
    out
}

fn day_of(at: i64) -> String {
    format_date(at.div_euclid(DAY))
}

fn div_ceil(a: i64, b: i64) -> i64 {
    if b <= 0 { 0 } else { (a + b - 1).div_euclid(b) }
}

/// The invoice plan of `tenant`'s period `[start, end)`: `planned` when something is owed,
/// `no_overage` otherwise, `dead` when it cannot be priced. `days` are the tenant's
/// `(date, requests)`.
pub fn price_period(
    tenant: &OverageTenant,
    customer: &str,
    plans: &HashMap<String, PlanRecord>,
    days: &[(String, u64)],
    start: i64,
    end: i64,
    now: i64,
) -> OverageInvoice {
    let period_days = ((end - start) / DAY).max(1);
    let mut invoice = OverageInvoice {
        tenant: tenant.id.clone(),
        period_start: start,
        period_end: end,
        customer: customer.to_owned(),
        state: "no_overage".into(),
        created_at: now,
        ..OverageInvoice::default()
    };
    let mut parts = Vec::new();
    for segment in segments(&tenant.history, start, end) {
        let (from, to) = (day_of(segment.start), day_of(segment.end));
        let requests: u64 = days
            .iter()
            .filter(|(d, _)| *d >= from && *d < to)
            .map(|(_, n)| *n)
            .sum();
        let requests = i64::try_from(requests).unwrap_or(i64::MAX);
        invoice.requests += requests;
        let billed = plans.get(&segment.plan).and_then(|p| {
            let quota = i64::try_from(p.monthly_quota?).ok()?;
            let price = p.overage_price.as_ref()?;
            (p.billing == Billing::Fixed && p.overage == Overage::Bill).then_some((quota, price))
        });
        let Some((quota, price)) = billed else {
            invoice.included += requests;
            continue;
        };
        let included = div_ceil(quota * ((segment.end - segment.start) / DAY), period_days);
        let over = (requests - included).max(0);
        let per = i64::try_from(price.per).unwrap_or(i64::MAX);
        let amount = div_ceil(over, per) * i64::try_from(price.amount).unwrap_or(0);
        invoice.included += included.min(requests);
        invoice.overage += over;
        if over > 0 {
            if !invoice.currency.is_empty() && invoice.currency != price.currency {
                invoice.state = "dead".into();
                invoice.description =
                    "plan change across currencies in one period: invoice it by hand".into();
                return invoice;
            }
            price.currency.clone_into(&mut invoice.currency);
            invoice.amount += amount;
            parts.push(format!(
                "{} {from}..{to}: {over} over {included} included, {} {} per {}",
                segment.plan, price.amount, price.currency, price.per
            ));
        }
    }
    if invoice.amount > 0 {
        invoice.state = "planned".into();
        invoice.description = format!(
            "API requests over the included quota, {} to {} ({})",
            day_of(start),
            day_of(end - 1),
            parts.join("; ")
        );
    }
    invoice
}

/// The closed periods of anchor day `anchor` that ended at or before `now`, from the one
/// holding `since` on (at most the last 24).
pub fn closed_periods(anchor: u32, since: i64, now: i64) -> Vec<(i64, i64)> {
    let to_u = |t: i64| u64::try_from(t.max(0)).unwrap_or(0);
    let to_i = |t: u64| i64::try_from(t).unwrap_or(i64::MAX);
    let mut out = Vec::new();
    let (mut start, mut end) = crate::services::registry::period::period(anchor, to_u(since));
    while to_i(end) <= now {
        out.push((to_i(start), to_i(end)));
        (start, end) = crate::services::registry::period::period(anchor, end);
    }
    let skip = out.len().saturating_sub(24);
    out.split_off(skip)
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)` → Unix seconds.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let days = parse_date(text.get(..10)?)?;
    if !matches!(text.get(10..11)?, "T" | "t" | " ") {
        return None;
    }
    let number = |range: std::ops::Range<usize>| text.get(range)?.parse::<i64>().ok();
    let (h, m, s) = (number(11..13)?, number(14..16)?, number(17..19)?);
    if text.get(13..14)? != ":" || text.get(16..17)? != ":" || h > 23 || m > 59 || s > 60 {
        return None;
    }
    let mut rest = text.get(19..)?;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.chars().take_while(char::is_ascii_digit).count();
        rest = frac.get(digits..)?;
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.get(..1)? {
                "+" => 1,
                "-" => -1,
                _ => return None,
            };
            let (oh, om) = (
                rest.get(1..3)?.parse::<i64>().ok()?,
                rest.get(4..6)?.parse::<i64>().ok()?,
            );
            if rest.len() != 6 || rest.get(3..4)? != ":" {
                return None;
            }
            sign * (oh * 3600 + om * 60)
        }
    };
    Some(days * DAY + h * 3600 + m * 60 + s - offset)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::storage::sql::registry::OveragePrice;

    fn at(date: &str) -> i64 {
        parse_date(date).unwrap() * DAY
    }

    fn plan(name: &str, quota: u64, per: u64, amount: u64, currency: &str) -> PlanRecord {
        PlanRecord {
            name: name.into(),
            requests_per_minute: 100,
            burst: None,
            monthly_quota: Some(quota),
            overage: Overage::Bill,
            overage_price: Some(OveragePrice {
                per,
                amount,
                currency: currency.into(),
            }),
            billing: Billing::Fixed,
            meter_event_name: "api_requests".into(),
        }
    }

    fn tenant(history: &[(&str, i64)]) -> OverageTenant {
        OverageTenant {
            id: "acme".into(),
            customer: Some("cus_acme".into()),
            anchor: 1,
            created_at: history[0].1,
            history: history.iter().map(|(p, t)| ((*p).into(), *t)).collect(),
        }
    }

    #[test]
    fn overage_is_rounded_up_to_whole_units() {
        let plans = HashMap::from([("pro".to_owned(), plan("pro", 1_000, 100, 25, "usd"))]);
        let t = tenant(&[("pro", at("2026-10-20"))]);
        let days = vec![
            ("2026-11-03".to_owned(), 800),
            ("2026-11-20".to_owned(), 401),
        ];
        let i = price_period(
            &t,
            "cus_acme",
            &plans,
            &days,
            at("2026-11-01"),
            at("2026-12-01"),
            9,
        );
        assert_eq!((i.requests, i.included, i.overage), (1_201, 1_000, 201));
        assert_eq!(
            (i.amount, i.currency.as_str(), i.state.as_str()),
            (75, "usd", "planned")
        );
        let under = vec![("2026-11-03".to_owned(), 1_000)];
        let i = price_period(
            &t,
            "cus_acme",
            &plans,
            &under,
            at("2026-11-01"),
            at("2026-12-01"),
            9,
        );
        assert_eq!((i.amount, i.state.as_str()), (0, "no_overage"));
    }

    #[test]
    fn a_plan_change_splits_the_period_at_the_start_of_its_day() {
        let plans = HashMap::from([
            ("small".to_owned(), plan("small", 300, 10, 1, "usd")),
            ("big".to_owned(), plan("big", 3_000, 10, 1, "usd")),
        ]);
        // November has 30 days; the upgrade at 2026-11-11 12:00 counts from 2026-11-11.
        let t = tenant(&[
            ("small", at("2026-10-01")),
            ("big", at("2026-11-11") + 43_200),
        ]);
        let s = segments(&t.history, at("2026-11-01"), at("2026-12-01"));
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].end, s[1].start), (at("2026-11-11"), at("2026-11-11")));
        let days = vec![
            ("2026-11-10".to_owned(), 150),
            ("2026-11-11".to_owned(), 2_500),
        ];
        let i = price_period(
            &t,
            "cus_acme",
            &plans,
            &days,
            at("2026-11-01"),
            at("2026-12-01"),
            9,
        );
        // small: 10 days → 100 included, 50 over → 5 units; big: 20 days → 2,000, 500 over → 50.
        assert_eq!((i.overage, i.amount), (550, 55));
        assert!(
            i.description.contains("small") && i.description.contains("big"),
            "{}",
            i.description
        );
    }

    #[test]
    fn periods_and_times() {
        let p = closed_periods(15, at("2026-10-20"), at("2026-12-15"));
        assert_eq!(
            p,
            vec![
                (at("2026-10-15"), at("2026-11-15")),
                (at("2026-11-15"), at("2026-12-15"))
            ]
        );
        assert_eq!(
            parse_rfc3339("2026-12-01T00:00:00Z"),
            Some(at("2026-12-01"))
        );
        assert_eq!(
            parse_rfc3339("2026-12-01T02:00:00.5+02:00"),
            Some(at("2026-12-01"))
        );
        assert_eq!(parse_rfc3339("2026-12-01"), None);
    }
}
