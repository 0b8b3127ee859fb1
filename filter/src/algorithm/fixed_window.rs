//! Promise: at most `limit` permits are admitted in any aligned window `[k·window, (k+1)·window)`.
//!
//! Words: `[start of the counted window, permits counted in it, 0]`. A `now` that falls before
//! the counted window (the clock went back) is counted in that window, never in a fresh one.
//!
//! Leases: permits leased in a window may be spent until its last nanosecond.

use super::math::{bounds, refusal, take, window_start};
use super::{Grant, Quota, State};
use crate::Nanos;

/// The window a decision at `now` counts in, and what it has counted so far.
fn current(quota: &Quota, state: &State, now: Nanos) -> (Nanos, u64) {
    let [start, count, _] = state.words;
    // Aligned already, unless the window changed (or the state is not ours).
    let start = window_start(start, quota.window);
    let aligned = window_start(now, quota.window);
    if aligned <= start {
        (start, count)
    } else {
        (aligned, 0)
    }
}

pub(super) fn acquire(quota: &Quota, state: &mut State, now: Nanos, min: u64, max: u64) -> Grant {
    let (min, max) = bounds(min, max);
    let (limit, w) = (quota.limit.max(1), quota.window.max(1));
    let (start, count) = current(quota, state, now);
    let end = start.saturating_add(w);
    let available = limit.saturating_sub(count);
    let Some(granted) = take(available, min, max) else {
        let retry_at = if min > limit { u64::MAX } else { end };
        return refusal(now, available, end, retry_at);
    };
    let counted = count.saturating_add(granted);
    if granted > 0 {
        state.words = [start, counted, 0];
    }
    Grant {
        granted,
        held_back: 0,
        valid_until: start.saturating_add(w - 1),
        remaining: available - granted,
        reset: if counted == 0 { now } else { end },
        retry_at: now,
        delay: 0,
    }
}

/// Exact while the window of `granted_at` is still the counted one; a grant in a window that
/// has passed no longer weighs on anything.
pub(super) fn refund(
    quota: &Quota,
    state: &mut State,
    now: Nanos,
    granted_at: Nanos,
    permits: u64,
) {
    let _ = now;
    let [start, count, spare] = state.words;
    let start = window_start(start, quota.window);
    if window_start(granted_at, quota.window) == start {
        state.words = [start, count.saturating_sub(permits), spare];
    }
}

pub(super) fn idle_at(quota: &Quota, state: &State) -> Nanos {
    match state.words {
        [start, 0, _] => start,
        [start, _, _] => start.saturating_add(quota.window.max(1)),
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    const Q: Quota = Quota::new(3, 100, 3, 0);

    #[test]
    fn counts_per_aligned_window() {
        let mut s = State::default();
        let g = acquire(&Q, &mut s, 150, 1, 2);
        assert_eq!(
            (g.granted, g.remaining, g.reset, g.valid_until),
            (2, 1, 200, 199)
        );
        assert_eq!(acquire(&Q, &mut s, 199, 2, 2).granted, 0);
        let r = acquire(&Q, &mut s, 199, 2, 2);
        assert_eq!((r.retry_at, r.remaining, r.reset), (200, 1, 200));
        assert_eq!(acquire(&Q, &mut s, 200, 3, 3).granted, 3);
        assert_eq!(idle_at(&Q, &s), 300);
    }

    #[test]
    fn an_earlier_now_counts_in_the_recorded_window() {
        let mut s = State::default();
        assert_eq!(acquire(&Q, &mut s, 250, 3, 3).granted, 3);
        let r = acquire(&Q, &mut s, 120, 1, 1);
        assert_eq!((r.granted, r.retry_at), (0, 300));
    }

    #[test]
    fn more_than_the_limit_is_never_available() {
        let r = acquire(&Q, &mut State::default(), 0, 4, 4);
        assert_eq!(r.retry_at, u64::MAX);
    }

    #[test]
    fn refund_only_in_the_same_window() {
        let mut s = State::default();
        acquire(&Q, &mut s, 150, 3, 3);
        refund(&Q, &mut s, 160, 150, 2);
        assert_eq!(s.words[1], 1);
        acquire(&Q, &mut s, 250, 1, 1);
        refund(&Q, &mut s, 260, 150, 1);
        assert_eq!(s.words[..2], [200, 1]);
    }

    #[test]
    fn the_last_window_saturates() {
        let mut s = State::default();
        let g = acquire(&Q, &mut s, u64::MAX, 1, 1);
        assert_eq!((g.granted, g.reset), (1, u64::MAX));
    }
}
