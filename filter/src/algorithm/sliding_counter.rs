//! Promise: every admission keeps the weighted estimate `prev·(window − e)/window + cur` at or below `limit`, so no aligned window admits more than `limit`.
//!
//! `cur` and `prev` count this and the previous aligned window (admitted permits, the new ones
//! included) and `e` is the time elapsed in this one.
//!
//! Words: `[start of the current window, its count, the previous window's count]`. The
//! estimate is computed exactly with `u128`: admit `g` iff
//! `prev·(w − e) + (cur + g)·w ≤ limit·w`. A `now` before the recorded window (the clock went
//! back) is read as that window's first instant, where the estimate is largest.
//!
//! Leases: the estimate only falls as time passes within a window, so permits leased in a
//! window may be spent until its last nanosecond.

use super::math::{bounds, refusal, sat, take, window_start};
use super::{Grant, Quota, State};
use crate::Nanos;

/// The counts a decision at `now` sees.
struct View {
    start: Nanos,
    cur: u64,
    prev: u64,
    elapsed: Nanos,
}

fn view(window: Nanos, state: &State, now: Nanos) -> View {
    let [start, cur, prev] = state.words;
    // Aligned already, unless the window changed (or the state is not ours).
    let start = window_start(start, window);
    let aligned = window_start(now, window);
    if aligned == start {
        View {
            start,
            cur,
            prev,
            elapsed: now - aligned,
        }
    } else if aligned < start {
        View {
            start,
            cur,
            prev,
            elapsed: 0,
        }
    } else if start.checked_add(window) == Some(aligned) {
        View {
            start: aligned,
            cur: 0,
            prev: cur,
            elapsed: now - aligned,
        }
    } else {
        View {
            start: aligned,
            cur: 0,
            prev: 0,
            elapsed: now - aligned,
        }
    }
}

/// How many permits fit on top of `cur` with `prev` weighted at `elapsed` into the window.
fn available(limit: u64, window: Nanos, prev: u64, cur: u64, elapsed: Nanos) -> u64 {
    let w = u128::from(window);
    let weighed = u128::from(prev) * u128::from(window.saturating_sub(elapsed));
    let room = (u128::from(limit) * w).saturating_sub(weighed) / w;
    sat(room).saturating_sub(cur)
}

/// The earliest elapsed time in a window whose previous count is `prev` at which `need`
/// permits fit on top of `cur` (`window` when they never fit in it).
fn earliest(limit: u64, window: Nanos, prev: u64, cur: u64, need: u64) -> Nanos {
    let Some(left) = limit.checked_sub(cur).and_then(|l| l.checked_sub(need)) else {
        return window;
    };
    if prev == 0 {
        return 0;
    }
    // prev·(w − e) ≤ left·w  ⇔  e ≥ w − ⌊left·w / prev⌋
    let slack = u128::from(left) * u128::from(window) / u128::from(prev);
    window - sat(slack).min(window)
}

pub(super) fn acquire(quota: &Quota, state: &mut State, now: Nanos, min: u64, max: u64) -> Grant {
    let (min, max) = bounds(min, max);
    let (limit, w) = (quota.limit.max(1), quota.window.max(1));
    let v = view(w, state, now);
    let end = v.start.saturating_add(w);
    let available = available(limit, w, v.prev, v.cur, v.elapsed);
    let Some(granted) = take(available, min, max) else {
        let reset = reset_at(w, v.start, v.prev, v.cur, now);
        let retry_at = if min > limit {
            u64::MAX
        } else {
            let here = earliest(limit, w, v.prev, v.cur, min);
            if here < w {
                v.start.saturating_add(here)
            } else {
                end.saturating_add(earliest(limit, w, v.cur, 0, min))
            }
        };
        return refusal(now, available, reset, retry_at);
    };
    let cur = v.cur.saturating_add(granted);
    if granted > 0 {
        state.words = [v.start, cur, v.prev];
    }
    Grant {
        granted,
        held_back: 0,
        valid_until: v.start.saturating_add(w - 1),
        remaining: available - granted,
        reset: reset_at(w, v.start, v.prev, cur, now),
        retry_at: now,
        delay: 0,
    }
}

/// When the estimate reaches 0 if nothing more is admitted.
fn reset_at(window: Nanos, start: Nanos, prev: u64, cur: u64, now: Nanos) -> Nanos {
    if cur > 0 {
        start.saturating_add(window).saturating_add(window)
    } else if prev > 0 {
        start.saturating_add(window)
    } else {
        now
    }
}

/// Exact while the window of `granted_at` is the current or the previous one. (A grant whose
/// `now` lay before the recorded window was counted in it; taking it off the previous count
/// instead lowers the estimate by less, so the refund stays on the safe side.)
pub(super) fn refund(
    quota: &Quota,
    state: &mut State,
    now: Nanos,
    granted_at: Nanos,
    permits: u64,
) {
    let _ = now;
    let w = quota.window.max(1);
    let [start, cur, prev] = state.words;
    let start = window_start(start, w);
    let at = window_start(granted_at, w);
    if at == start {
        state.words = [start, cur.saturating_sub(permits), prev];
    } else if at.checked_add(w) == Some(start) {
        state.words = [start, cur, prev.saturating_sub(permits)];
    }
}

pub(super) fn idle_at(quota: &Quota, state: &State) -> Nanos {
    let [start, cur, prev] = state.words;
    match (cur, prev) {
        (0, 0) => start,
        _ => reset_at(quota.window.max(1), start, prev, cur, start),
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    const Q: Quota = Quota::new(10, 100, 10, 0);

    #[test]
    fn the_previous_window_weighs_less_as_time_passes() {
        let mut s = State::default();
        assert_eq!(acquire(&Q, &mut s, 50, 10, 10).granted, 10);
        // At 125 the previous 10 weigh 7.5: 2 fit.
        let g = acquire(&Q, &mut s, 125, 1, 5);
        assert_eq!(
            (g.granted, g.remaining, g.valid_until, g.reset),
            (2, 0, 199, 300)
        );
        // 3 more fit once 10·(100 − e) ≤ (10 − 2 − 3)·100, at e = 50.
        let r = acquire(&Q, &mut s, 130, 3, 3);
        assert_eq!((r.granted, r.retry_at), (0, 150));
        assert_eq!(acquire(&Q, &mut s, 150, 3, 3).granted, 3);
    }

    #[test]
    fn retry_may_fall_in_the_next_window() {
        let mut s = State::default();
        assert_eq!(acquire(&Q, &mut s, 0, 10, 10).granted, 10);
        // Next window: 10·(100 − e) ≤ (10 − 4)·100 at e = 40.
        let r = acquire(&Q, &mut s, 99, 4, 4);
        assert_eq!((r.retry_at, r.reset), (140, 200));
        assert_eq!(acquire(&Q, &mut s, 139, 4, 4).granted, 0);
        assert_eq!(acquire(&Q, &mut s, 140, 4, 4).granted, 4);
    }

    #[test]
    fn an_earlier_now_weighs_the_previous_window_fully() {
        let mut s = State {
            words: [100, 0, 10],
            log: Vec::new(),
        };
        assert_eq!(acquire(&Q, &mut s, 199, 1, 1).granted, 1);
        assert_eq!(acquire(&Q, &mut s, 50, 1, 1).granted, 0);
    }

    #[test]
    fn refund_reaches_back_one_window() {
        let mut s = State::default();
        acquire(&Q, &mut s, 50, 4, 4);
        acquire(&Q, &mut s, 150, 1, 1);
        refund(&Q, &mut s, 160, 50, 4);
        assert_eq!(s.words, [100, 1, 0]);
        assert_eq!(idle_at(&Q, &s), 300);
    }

    #[test]
    fn huge_windows_do_not_overflow() {
        let q = Quota::new(u64::MAX, u64::MAX, 1, 0);
        let mut s = State::default();
        assert_eq!(
            acquire(&q, &mut s, u64::MAX - 1, 1, u64::MAX).granted,
            u64::MAX
        );
        let r = acquire(&q, &mut s, u64::MAX, 1, 1);
        assert_eq!((r.granted, r.retry_at), (0, u64::MAX));
    }
}
