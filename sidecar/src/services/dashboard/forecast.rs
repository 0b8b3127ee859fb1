//! The period forecast: a straight line through the period so far. Usage so far divided by
//! the elapsed share of the period (`used × length ÷ elapsed`, in seconds, rounded down) is
//! the forecast for the whole period — an estimate, and labelled as one. For `overage: bill`
//! plans the forecast overage (forecast − quota) and its price, `overage_price.amount` per
//! started `per` requests; for `overage: block` plans the day the quota is forecast to run out
//! (the same line reaching the quota), if that is before the period ends.

use serde::Serialize;
use tollgate_filter::registry::Overage;
use tollgate_filter::usage::format_date;

use crate::storage::sql::registry::OveragePrice;

/// What the forecast says.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Forecast {
    /// Always `true`: a linear extrapolation, not a promise.
    pub estimate: bool,
    /// Requests forecast for the whole period; `None` before any time has elapsed.
    pub requests: Option<u64>,
    /// `bill` plans: requests forecast beyond the quota.
    pub overage_requests: Option<u64>,
    /// `bill` plans with a price: what the forecast overage costs.
    pub overage_amount: Option<Money>,
    /// `block` plans: the day (`YYYY-MM-DD`, UTC) the quota is forecast to run out, when that
    /// falls inside the period.
    pub quota_runs_out_on: Option<String>,
    /// The quota is used up already.
    pub quota_reached: bool,
}

/// An amount of money in the currency's smallest unit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Money {
    /// Smallest unit (cents).
    pub amount: u64,
    /// ISO 4217, lowercase.
    pub currency: String,
}

/// The plan terms a forecast needs.
#[derive(Clone, Copy, Debug)]
pub struct Terms<'a> {
    /// Requests included per period (`None`: no quota).
    pub quota: Option<u64>,
    /// Refused or billed past the quota.
    pub overage: Overage,
    /// The overage's price.
    pub price: Option<&'a OveragePrice>,
}

/// The forecast of a period `[start, end)` (Unix seconds) with `used` requests at `now`.
pub fn forecast(used: u64, terms: Terms<'_>, start: u64, end: u64, now: u64) -> Forecast {
    let length = end.saturating_sub(start);
    let elapsed = now.clamp(start, end).saturating_sub(start);
    let requests = (elapsed > 0 && length > 0).then(|| scale(used, length, elapsed));
    let mut out = Forecast {
        estimate: true,
        requests,
        ..Forecast::default()
    };
    let Some(quota) = terms.quota else {
        return out;
    };
    out.quota_reached = used >= quota;
    match terms.overage {
        Overage::Bill => {
            let over = requests.map(|r| r.saturating_sub(quota));
            out.overage_requests = over;
            out.overage_amount = over
                .zip(terms.price)
                .map(|(over, price)| price_of(over, price));
        }
        Overage::Block => {
            // The line reaches the quota `quota × elapsed ÷ used` seconds into the period.
            if used > 0 && elapsed > 0 {
                let at = start.saturating_add(scale_up(quota, elapsed, used));
                if at < end {
                    out.quota_runs_out_on = Some(day_of(at));
                }
            }
        }
    }
    out
}

/// What `over` requests cost at `price`: `amount` per started `per` requests.
pub fn price_of(over: u64, price: &OveragePrice) -> Money {
    let units = over.div_ceil(price.per.max(1));
    Money {
        amount: units.saturating_mul(price.amount),
        currency: price.currency.clone(),
    }
}

/// `value × numerator ÷ denominator`, rounded down, without overflow.
fn scale(value: u64, numerator: u64, denominator: u64) -> u64 {
    let wide = u128::from(value) * u128::from(numerator) / u128::from(denominator.max(1));
    u64::try_from(wide).unwrap_or(u64::MAX)
}

/// `value × numerator ÷ denominator`, rounded up, without overflow.
fn scale_up(value: u64, numerator: u64, denominator: u64) -> u64 {
    let wide = (u128::from(value) * u128::from(numerator)).div_ceil(u128::from(denominator.max(1)));
    u64::try_from(wide).unwrap_or(u64::MAX)
}

/// The UTC date of Unix second `at`.
pub fn day_of(at: u64) -> String {
    format_date(i64::try_from(at / 86_400).unwrap_or(i64::MAX))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400;
    // 2026-12-01 00:00 UTC, a 31-day period.
    const START: u64 = 1_796_083_200;
    const END: u64 = START + 31 * DAY;

    fn price() -> OveragePrice {
        OveragePrice {
            per: 1_000,
            amount: 50,
            currency: "usd".into(),
        }
    }

    #[test]
    fn bill_plans_forecast_the_overage_and_its_price() {
        let price = price();
        let terms = Terms {
            quota: Some(10_000),
            overage: Overage::Bill,
            price: Some(&price),
        };
        // A third of the way in (10.33 days), 4,000 used: 12,000 forecast.
        let now = START + (31 * DAY) / 3;
        let f = forecast(4_000, terms, START, END, now);
        assert_eq!(f.requests, Some(12_000));
        assert_eq!(f.overage_requests, Some(2_000));
        assert_eq!(
            f.overage_amount,
            Some(Money {
                amount: 100,
                currency: "usd".into()
            })
        );
        assert!(f.estimate && !f.quota_reached && f.quota_runs_out_on.is_none());
        // 2,001 over: three started units of 1,000.
        assert_eq!(price_of(2_001, &price).amount, 150);
        assert_eq!(price_of(0, &price).amount, 0);
    }

    #[test]
    fn block_plans_forecast_the_day_the_quota_runs_out() {
        let terms = Terms {
            quota: Some(10_000),
            overage: Overage::Block,
            price: None,
        };
        // 10 days in, 5,000 used: 10,000 is reached 20 days in, on 2026-12-21.
        let f = forecast(5_000, terms, START, END, START + 10 * DAY);
        assert_eq!(f.requests, Some(15_500));
        assert_eq!(f.quota_runs_out_on.as_deref(), Some("2026-12-21"));
        assert_eq!(f.overage_requests, None);
        // Slower: never within the period.
        let f = forecast(1_000, terms, START, END, START + 10 * DAY);
        assert_eq!(f.quota_runs_out_on, None);
        // Used up.
        let f = forecast(10_000, terms, START, END, START + 10 * DAY);
        assert!(f.quota_reached);
        assert_eq!(f.quota_runs_out_on.as_deref(), Some("2026-12-11"));
    }

    #[test]
    fn edges_do_not_divide_by_zero() {
        let terms = Terms {
            quota: None,
            overage: Overage::Block,
            price: None,
        };
        assert_eq!(forecast(5, terms, START, END, START).requests, None);
        assert_eq!(forecast(5, terms, START, END, START - 10).requests, None);
        // Past the end: the whole period elapsed, the forecast is what was used.
        assert_eq!(forecast(5, terms, START, END, END + 10).requests, Some(5));
        assert_eq!(
            forecast(u64::MAX, terms, START, END, START + 1).requests,
            Some(u64::MAX)
        );
    }
}
