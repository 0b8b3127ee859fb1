//! Overflow-free integer helpers shared by the algorithms.

use super::{Grant, Quota};
use crate::Nanos;

/// The emission interval `T = ⌈window / limit⌉` (≥ 1): rounding up keeps the rate at or below
/// `limit / window`.
pub(super) fn period(quota: &Quota) -> Nanos {
    quota.window.max(1).div_ceil(quota.limit.max(1))
}

/// `count · period` in nanoseconds, saturated at `u64::MAX`.
pub(super) fn span(count: u64, period: Nanos) -> Nanos {
    sat(u128::from(count) * u128::from(period))
}

/// A `u128` brought back to `u64`, saturating.
pub(super) fn sat(value: u128) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}

/// `(min, max)` with `max` raised to `min`: a request never asks for fewer than its minimum.
pub(super) fn bounds(min: u64, max: u64) -> (u64, u64) {
    (min, max.max(min))
}

/// How many of `available` permits a request for `min..=max` gets: `None` when fewer than
/// `min` are available.
pub(super) fn take(available: u64, min: u64, max: u64) -> Option<u64> {
    (available >= min).then_some(available.min(max))
}

/// The start of the aligned window `[k·w, (k+1)·w)` holding `at`.
pub(super) fn window_start(at: Nanos, window: Nanos) -> Nanos {
    at - at % window.max(1)
}

/// A refusal: nothing granted, nothing to spend.
pub(super) fn refusal(now: Nanos, remaining: u64, reset: Nanos, retry_at: Nanos) -> Grant {
    Grant {
        granted: 0,
        held_back: 0,
        valid_until: now,
        remaining,
        reset,
        retry_at,
        delay: 0,
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn period_rounds_up_and_never_divides_by_zero() {
        assert_eq!(period(&Quota::new(3, 10, 1, 0)), 4);
        assert_eq!(
            period(&Quota {
                limit: 0,
                window: 0,
                burst: 0,
                queue: 0
            }),
            1
        );
        assert_eq!(period(&Quota::new(u64::MAX, 1, 1, 0)), 1);
        assert_eq!(period(&Quota::new(1, u64::MAX, 1, 0)), u64::MAX);
    }

    #[test]
    fn helpers_saturate() {
        assert_eq!(span(u64::MAX, u64::MAX), u64::MAX);
        assert_eq!(span(3, 4), 12);
        assert_eq!(window_start(u64::MAX, 10), u64::MAX - 5);
        assert_eq!(window_start(7, 0), 7);
        assert_eq!(bounds(3, 1), (3, 3));
        assert_eq!(take(2, 3, 5), None);
        assert_eq!(take(9, 3, 5), Some(5));
    }
}
