//! Billing periods: a tenant with anchor day `d` (1–28) has periods from day `d` 00:00 UTC of
//! one month to day `d` of the next; the current one starts at the last such instant at or
//! before now.

use tollgate_filter::registry::Overage;
use tollgate_filter::usage::{format_date, parse_date};

const DAY: u64 = 86_400;

/// What the registry says about a tenant's billing: its anchor day and its plan's quota.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BillingTerms {
    /// The billing anchor day (1–28).
    pub anchor_day: u32,
    /// The plan's requests per period (`None`: no quota).
    pub monthly_quota: Option<u64>,
    /// What happens past the quota.
    pub overage: Overage,
}

/// The current period of anchor day `anchor` at `now` (Unix seconds): `(start, end)`, Unix
/// seconds, start included, end excluded.
pub fn period(anchor: u32, now: u64) -> (u64, u64) {
    let today = format_date(i64::try_from(now / DAY).unwrap_or(i64::MAX));
    let (year, month, day) = parts(&today);
    let (year, month) = if day >= anchor {
        (year, month)
    } else {
        previous(year, month)
    };
    let (next_year, next_month) = next(year, month);
    (
        start_of(year, month, anchor),
        start_of(next_year, next_month, anchor),
    )
}

/// The period's dates as `YYYY-MM-DD`: its first day and the day after its last.
pub fn dates(start: u64, end: u64) -> (String, String) {
    let day = |at: u64| format_date(i64::try_from(at / DAY).unwrap_or(i64::MAX));
    (day(start), day(end))
}

/// The period's dates as `YYYY-MM-DD`: its first and its last day (both included, as
/// [`TenantRange`](crate::storage::sql::TenantRange) takes them).
pub fn period_days(start: u64, end: u64) -> (String, String) {
    let day = |at: u64| format_date(i64::try_from(at / DAY).unwrap_or(i64::MAX));
    (day(start), day(end.saturating_sub(DAY)))
}

fn parts(date: &str) -> (i64, u32, u32) {
    let number = |range: std::ops::Range<usize>| {
        date.get(range)
            .and_then(|text| text.parse::<i64>().ok())
            .unwrap_or(1)
    };
    (
        number(0..4),
        u32::try_from(number(5..7)).unwrap_or(1),
        u32::try_from(number(8..10)).unwrap_or(1),
    )
}

fn previous(year: i64, month: u32) -> (i64, u32) {
    if month == 1 {
        (year - 1, 12)
    } else {
        (year, month - 1)
    }
}

fn next(year: i64, month: u32) -> (i64, u32) {
    if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    }
}

fn start_of(year: i64, month: u32, day: u32) -> u64 {
    let days = parse_date(&format!("{year:04}-{month:02}-{day:02}")).unwrap_or(0);
    u64::try_from(days).unwrap_or(0) * DAY
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn at(date: &str) -> u64 {
        u64::try_from(parse_date(date).unwrap()).unwrap() * DAY
    }

    #[test]
    fn periods_run_from_the_anchor_day_to_the_same_day_next_month() {
        assert_eq!(
            period(1, at("2026-12-06") + 5),
            (at("2026-12-01"), at("2027-01-01"))
        );
        assert_eq!(
            period(15, at("2026-12-06")),
            (at("2026-11-15"), at("2026-12-15"))
        );
        assert_eq!(
            period(15, at("2026-12-15")),
            (at("2026-12-15"), at("2027-01-15"))
        );
        assert_eq!(
            period(15, at("2026-12-15") - 1),
            (at("2026-11-15"), at("2026-12-15"))
        );
        assert_eq!(
            period(28, at("2026-01-10")),
            (at("2025-12-28"), at("2026-01-28"))
        );
        assert_eq!(
            period(28, at("2026-02-28")),
            (at("2026-02-28"), at("2026-03-28"))
        );
        assert_eq!(
            dates(at("2026-11-15"), at("2026-12-15")),
            ("2026-11-15".into(), "2026-12-15".into())
        );
        assert_eq!(
            period_days(at("2026-11-15"), at("2026-12-15")),
            ("2026-11-15".into(), "2026-12-14".into())
        );
    }
}
