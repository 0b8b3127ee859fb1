//! Which alerts are due for one tenant: pure, `now` passed in.
//!
//! - **Thresholds.** Each percentage `t` of the tenant's thresholds is reached when
//!   `used × 100 ≥ t × quota`. Every reached threshold not fired yet in this period fires,
//!   so usage that jumps past 80 % and 100 % at once fires both; a new period re-arms them
//!   (the fired set is keyed by period).
//! - **Period ending.** Within the last day of a period (`end − now ≤ 1 day`), once.
//! - **Forecast** (an estimate, linear like Lago's): `⌊used × period length ÷ elapsed⌋`, the
//!   period's requests if the rate so far goes on. With `overage: bill` the forecast overage
//!   (`forecast − quota`, at least 0) and its price (`⌈overage ÷ per⌉ × amount`); with
//!   `overage: block` when the quota is forecast to run out (`start + ⌈quota × elapsed ÷
//!   used⌉`, when that is before the period's end).

use serde_json::{Value, json};
use tollgate_filter::registry::Overage;

use super::time::rfc3339;
use crate::storage::sql::alerts::AlertKind;
use crate::storage::sql::registry::OveragePrice;

/// One day, in seconds: how long before its end a period's warning goes out.
pub const PERIOD_ENDING_WINDOW: u64 = 86_400;

/// What the decision needs to know about a tenant's plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quota {
    /// The plan's name.
    pub plan: String,
    /// Requests included per period.
    pub quota: u64,
    /// Past the quota: refused or billed.
    pub overage: Overage,
    /// The overage's price.
    pub price: Option<OveragePrice>,
}

/// One tenant's state in one period, as of `now` (Unix seconds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Situation<'a> {
    /// The tenant.
    pub tenant: &'a str,
    /// Its thresholds (percentages, increasing).
    pub thresholds: &'a [u32],
    /// Its plan's quota.
    pub quota: &'a Quota,
    /// The period: start (included), end (excluded).
    pub period: (u64, u64),
    /// Requests so far in the period.
    pub used: u64,
    /// Now.
    pub now: u64,
}

/// An alert due: its kind, threshold (0 for the period's end) and webhook `data`.
#[derive(Clone, Debug, PartialEq)]
pub struct Due {
    /// What it is about.
    pub kind: AlertKind,
    /// The percentage, 0 for [`AlertKind::PeriodEnding`].
    pub threshold: u32,
    /// The webhook's `data`.
    pub data: Value,
}

/// The alerts due for `situation` that `fired(kind, threshold)` says were not fired yet in
/// its period.
pub fn decide(situation: &Situation<'_>, fired: impl Fn(AlertKind, u32) -> bool) -> Vec<Due> {
    let Situation {
        quota, used, now, ..
    } = *situation;
    let (start, end) = situation.period;
    if quota.quota == 0 || now < start || now >= end {
        return Vec::new();
    }
    let mut due = Vec::new();
    for &threshold in situation.thresholds {
        let reached = u128::from(used) * 100 >= u128::from(threshold) * u128::from(quota.quota);
        if reached && !fired(AlertKind::ThresholdReached, threshold) {
            due.push(Due {
                kind: AlertKind::ThresholdReached,
                threshold,
                data: data(situation, Some(threshold)),
            });
        }
    }
    if end - now <= PERIOD_ENDING_WINDOW && !fired(AlertKind::PeriodEnding, 0) {
        due.push(Due {
            kind: AlertKind::PeriodEnding,
            threshold: 0,
            data: data(situation, None),
        });
    }
    due
}

/// The linear forecast of the period's requests: `⌊used × (end − start) ÷ (now − start)⌋`
/// (elapsed at least one second).
pub fn forecast(used: u64, (start, end): (u64, u64), now: u64) -> u64 {
    let elapsed = now.saturating_sub(start).max(1);
    let length = end.saturating_sub(start);
    let value = u128::from(used) * u128::from(length) / u128::from(elapsed);
    u64::try_from(value).unwrap_or(u64::MAX)
}

/// The price of `overage` requests: `⌈overage ÷ per⌉ × amount` (whole `per` units).
pub fn overage_amount(overage: u64, price: &OveragePrice) -> u64 {
    let per = price.per.max(1);
    overage.div_ceil(per).saturating_mul(price.amount)
}

/// When the quota is forecast to run out at the rate so far: `start + ⌈quota × elapsed ÷
/// used⌉`; `None` without usage.
pub fn exhausted_at(used: u64, quota: u64, start: u64, now: u64) -> Option<u64> {
    if used == 0 {
        return None;
    }
    let elapsed = u128::from(now.saturating_sub(start).max(1));
    let offset = (u128::from(quota) * elapsed).div_ceil(u128::from(used));
    Some(start.saturating_add(u64::try_from(offset).unwrap_or(u64::MAX)))
}

fn data(situation: &Situation<'_>, threshold: Option<u32>) -> Value {
    let Situation {
        tenant,
        quota,
        used,
        now,
        ..
    } = *situation;
    let (start, end) = situation.period;
    let predicted = forecast(used, (start, end), now);
    let percent = u128::from(used) * 100 / u128::from(quota.quota.max(1));
    let mut data = json!({
        "tenant": tenant,
        "threshold": threshold,
        "used": used,
        "quota": quota.quota,
        "percent_used": u64::try_from(percent).unwrap_or(u64::MAX),
        "plan": quota.plan,
        "overage": quota.overage,
        "period_start": rfc3339(start),
        "period_end": rfc3339(end),
        "forecast": predicted,
        "forecast_is_estimate": true,
        "forecast_method": "linear: used / elapsed share of the period",
    });
    if threshold.is_none()
        && let Some(object) = data.as_object_mut()
    {
        match quota.overage {
            Overage::Bill => {
                let over = predicted.saturating_sub(quota.quota);
                object.insert("forecast_overage".into(), json!(over));
                if let Some(price) = &quota.price {
                    object.insert(
                        "forecast_overage_amount".into(),
                        json!({"amount": overage_amount(over, price), "currency": price.currency,
                               "per": price.per, "unit_amount": price.amount}),
                    );
                }
            }
            Overage::Block => {
                let at = exhausted_at(used, quota.quota, start, now).filter(|&at| at < end);
                object.insert("forecast_exhausted_at".into(), json!(at.map(rfc3339)));
                object.insert("quota_exhausted".into(), json!(used >= quota.quota));
            }
        }
    }
    data
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;
    /// 2026-12-01T00:00:00Z.
    const DEC_1: u64 = 1_796_083_200;
    /// 2027-01-01T00:00:00Z: a 31-day period.
    const JAN_1: u64 = DEC_1 + 31 * DAY;

    fn quota(overage: Overage) -> Quota {
        Quota {
            plan: "small".into(),
            quota: 20,
            overage,
            price: Some(OveragePrice {
                per: 1_000,
                amount: 50,
                currency: "usd".into(),
            }),
        }
    }

    fn situation<'a>(q: &'a Quota, used: u64, now: u64) -> Situation<'a> {
        Situation {
            tenant: "acme",
            thresholds: &[80, 100],
            quota: q,
            period: (DEC_1, JAN_1),
            used,
            now,
        }
    }

    fn kinds(due: &[Due]) -> Vec<(AlertKind, u32)> {
        due.iter().map(|d| (d.kind, d.threshold)).collect()
    }

    #[test]
    fn dates_are_rfc3339() {
        assert_eq!(rfc3339(DEC_1), "2026-12-01T00:00:00Z");
        assert_eq!(rfc3339(JAN_1 - 1), "2026-12-31T23:59:59Z");
    }

    #[test]
    fn thresholds_fire_when_reached_each_once_and_all_at_once_on_a_jump() {
        let q = quota(Overage::Block);
        let now = DEC_1 + 3 * DAY;
        let none = |_: AlertKind, _: u32| false;
        assert!(decide(&situation(&q, 15, now), none).is_empty()); // 75 %
        assert_eq!(
            kinds(&decide(&situation(&q, 16, now), none)),
            [(AlertKind::ThresholdReached, 80)]
        );
        // 80 % fired: only 100 % when reached.
        let fired_80 = |kind: AlertKind, t: u32| kind == AlertKind::ThresholdReached && t == 80;
        assert!(decide(&situation(&q, 19, now), fired_80).is_empty());
        assert_eq!(
            kinds(&decide(&situation(&q, 20, now), fired_80)),
            [(AlertKind::ThresholdReached, 100)]
        );
        // From 0 to 150 % at once: both.
        let due = decide(&situation(&q, 30, now), none);
        assert_eq!(
            kinds(&due),
            [
                (AlertKind::ThresholdReached, 80),
                (AlertKind::ThresholdReached, 100)
            ]
        );
        assert_eq!(due[0].data["threshold"], 80);
        assert_eq!(due[1].data["used"], 30);
        assert_eq!(due[1].data["quota"], 20);
        assert_eq!(due[1].data["percent_used"], 150);
        assert_eq!(due[1].data["tenant"], "acme");
        assert_eq!(due[1].data["period_start"], "2026-12-01T00:00:00Z");
        assert_eq!(due[1].data["period_end"], "2027-01-01T00:00:00Z");
        // Everything fired: nothing more.
        assert!(decide(&situation(&q, 40, now), |_, _| true).is_empty());
    }

    #[test]
    fn a_new_period_re_arms_the_thresholds() {
        // The fired set is per period: the caller asks about the tenant's current period only.
        let q = quota(Overage::Block);
        let fired: Vec<(u64, AlertKind, u32)> = vec![(DEC_1, AlertKind::ThresholdReached, 80)];
        let next = Situation {
            period: (JAN_1, JAN_1 + 31 * DAY),
            ..situation(&q, 17, JAN_1 + DAY)
        };
        let due = decide(&next, |kind, t| fired.contains(&(next.period.0, kind, t)));
        assert_eq!(kinds(&due), [(AlertKind::ThresholdReached, 80)]);
        assert_eq!(due[0].data["period_start"], "2027-01-01T00:00:00Z");
    }

    #[test]
    fn thresholds_above_100_and_huge_numbers_do_not_overflow() {
        let q = Quota {
            quota: u64::MAX,
            ..quota(Overage::Bill)
        };
        let s = Situation {
            thresholds: &[80, 100, 1_000],
            ..situation(&q, u64::MAX, DEC_1 + DAY)
        };
        assert_eq!(decide(&s, |_, _| false).len(), 2);
        assert_eq!(forecast(u64::MAX, (DEC_1, JAN_1), DEC_1 + DAY), u64::MAX);
    }

    #[test]
    fn the_period_ending_warning_comes_in_the_last_day_once() {
        let q = quota(Overage::Bill);
        let none = |_: AlertKind, _: u32| false;
        assert!(decide(&situation(&q, 1, JAN_1 - DAY - 1), none).is_empty());
        let due = decide(&situation(&q, 1, JAN_1 - DAY), none);
        assert_eq!(kinds(&due), [(AlertKind::PeriodEnding, 0)]);
        assert_eq!(due[0].data["threshold"], Value::Null);
        assert!(
            decide(&situation(&q, 1, JAN_1 - DAY), |k, _| k
                == AlertKind::PeriodEnding)
            .is_empty()
        );
        // Past the end the period is another one: nothing for this one.
        assert!(decide(&situation(&q, 1, JAN_1), none).is_empty());
    }

    #[test]
    fn the_forecast_is_linear_and_prices_whole_units_of_overage() {
        // 30 of 31 days gone with 3,000 requests: 3,100 forecast.
        let now = JAN_1 - DAY;
        assert_eq!(forecast(3_000, (DEC_1, JAN_1), now), 3_100);
        // Half a day in with 7 requests: 7 × 62 = 434.
        assert_eq!(forecast(7, (DEC_1, JAN_1), DEC_1 + DAY / 2), 434);
        // ⌊10 × 31 ÷ 30⌋ = 10 (10.33…).
        assert_eq!(forecast(10, (DEC_1, JAN_1), now), 10);
        let price = OveragePrice {
            per: 1_000,
            amount: 50,
            currency: "usd".into(),
        };
        assert_eq!(overage_amount(0, &price), 0);
        assert_eq!(overage_amount(1, &price), 50);
        assert_eq!(overage_amount(1_000, &price), 50);
        assert_eq!(overage_amount(1_001, &price), 100);

        let q = Quota {
            quota: 2_000,
            ..quota(Overage::Bill)
        };
        let due = decide(&situation(&q, 3_000, now), |k, _| {
            k != AlertKind::PeriodEnding
        });
        let data = &due[0].data;
        assert_eq!(data["forecast"], 3_100);
        assert_eq!(data["forecast_is_estimate"], true);
        assert_eq!(data["forecast_overage"], 1_100);
        assert_eq!(data["forecast_overage_amount"]["amount"], 100); // 2 × 1,000 × 50
        assert_eq!(data["forecast_overage_amount"]["currency"], "usd");
        assert!(data.get("forecast_exhausted_at").is_none());
    }

    #[test]
    fn blocked_plans_get_the_forecast_date_the_quota_runs_out() {
        let now = JAN_1 - DAY; // 30 days in
        // 1,500 of 2,000 in 30 days: runs out at day 40, after the end: none.
        let q = Quota {
            quota: 2_000,
            ..quota(Overage::Block)
        };
        let due = decide(&situation(&q, 1_500, now), |k, _| {
            k != AlertKind::PeriodEnding
        });
        assert_eq!(due[0].data["forecast_exhausted_at"], Value::Null);
        assert_eq!(due[0].data["quota_exhausted"], false);
        assert!(due[0].data.get("forecast_overage").is_none());
        // 1,950 of 2,000 in 30 days: 2,000 × 30 d ÷ 1,950 = 30.77 days in.
        let at = exhausted_at(1_950, 2_000, DEC_1, now).unwrap();
        assert_eq!(at, DEC_1 + (2_000u64 * 30 * DAY).div_ceil(1_950));
        let due = decide(&situation(&q, 1_950, now), |k, _| {
            k != AlertKind::PeriodEnding
        });
        assert_eq!(due[0].data["forecast_exhausted_at"], rfc3339(at));
        assert_eq!(exhausted_at(0, 2_000, DEC_1, now), None);
    }
}
