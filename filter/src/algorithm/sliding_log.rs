//! Promise: at most `limit` permits are admitted in any half-open span `[t, t + window)`.
//!
//! The log keeps one timestamp per admitted permit, sorted; an entry `t` counts while
//! `now − window < t`. A `now` earlier than the newest entry (the clock went back) is read as
//! that entry's instant, which keeps the log sorted and the promise in recorded time.
//!
//! Not leasable: a request gets exactly `min` permits or none (the caller passes
//! `min == max`). The log is bounded by `limit`, and never grows past [`MAX_ENTRIES`] whatever
//! the limit: a larger limit behaves as that bound.

use super::math::{bounds, refusal};
use super::{Grant, Quota, State};
use crate::Nanos;

/// The most entries one key's log may hold (8 MiB of timestamps); larger limits are capped here
/// so that no input can exhaust memory.
pub(super) const MAX_ENTRIES: u64 = 1 << 20;

/// Logs this module wrote are sorted already; one from elsewhere is sorted before use, so that
/// expiry and retry times stay right (linear, like encoding the log for storage).
fn sort(log: &mut [Nanos]) {
    if !log.is_sorted() {
        log.sort_unstable();
    }
}

/// The instant a decision at `now` is made at, and how many leading entries have expired then.
fn expired(window: Nanos, log: &[Nanos], now: Nanos) -> (Nanos, usize) {
    let at = log.last().map_or(now, |&newest| newest.max(now));
    let gone = match at.checked_sub(window) {
        Some(cutoff) => log.partition_point(|&t| t <= cutoff),
        None => 0,
    };
    (at, gone)
}

pub(super) fn acquire(quota: &Quota, state: &mut State, now: Nanos, min: u64, max: u64) -> Grant {
    let (min, _) = bounds(min, max);
    let (limit, w) = (quota.limit.clamp(1, MAX_ENTRIES), quota.window.max(1));
    sort(&mut state.log);
    let (at, gone) = expired(w, &state.log, now);
    let live = state.log.get(gone..).unwrap_or_default();
    let available = limit.saturating_sub(live.len() as u64);
    let reset = live.last().map_or(now, |&newest| newest.saturating_add(w));
    if min > available {
        let retry_at = if min > limit {
            u64::MAX
        } else {
            // The entries that must expire first: the oldest `live + min − limit`.
            let must_go = (live.len() as u64)
                .saturating_add(min)
                .saturating_sub(limit);
            let last_to_go = usize::try_from(must_go).ok().and_then(|n| n.checked_sub(1));
            last_to_go
                .and_then(|i| live.get(i))
                .map_or(at, |&t| t.saturating_add(w))
        };
        return refusal(now, available, reset, retry_at);
    }
    if min == 0 {
        return Grant {
            granted: 0,
            held_back: 0,
            valid_until: now,
            remaining: available,
            reset,
            retry_at: now,
            delay: 0,
        };
    }
    let log = &mut state.log;
    log.drain(..gone.min(log.len()));
    // min ≤ available ≤ MAX_ENTRIES, so this fits in usize; an allocator that says no refuses.
    let count = usize::try_from(min).unwrap_or(usize::MAX);
    if log.try_reserve(count).is_err() {
        return refusal(now, available, reset, at);
    }
    log.extend(core::iter::repeat_n(at, count));
    Grant {
        granted: min,
        held_back: 0,
        valid_until: now,
        remaining: available - min,
        reset: at.saturating_add(w),
        retry_at: now,
        delay: 0,
    }
}

/// Exact: removes up to `permits` entries stamped `granted_at`, newest first. Entries stamped
/// otherwise (the grant was made while the clock was behind) stay, on the safe side.
pub(super) fn refund(
    quota: &Quota,
    state: &mut State,
    now: Nanos,
    granted_at: Nanos,
    permits: u64,
) {
    let _ = (quota, now);
    let log = &mut state.log;
    sort(log);
    let first = log.partition_point(|&t| t < granted_at);
    let end = log.partition_point(|&t| t <= granted_at).max(first);
    let stamped = (end - first) as u64;
    let n = usize::try_from(permits.min(stamped)).unwrap_or(0);
    log.drain(end - n..end);
}

pub(super) fn idle_at(quota: &Quota, state: &State) -> Nanos {
    state
        .log
        .last()
        .map_or(0, |&newest| newest.saturating_add(quota.window.max(1)))
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    const Q: Quota = Quota::new(3, 100, 3, 0);

    #[test]
    fn entries_expire_one_window_later() {
        let mut s = State::default();
        assert_eq!(acquire(&Q, &mut s, 10, 2, 2).granted, 2);
        let g = acquire(&Q, &mut s, 50, 1, 1);
        assert_eq!(
            (g.granted, g.remaining, g.reset, g.valid_until),
            (1, 0, 150, 50)
        );
        let r = acquire(&Q, &mut s, 109, 2, 2);
        assert_eq!((r.granted, r.retry_at, r.reset), (0, 110, 150));
        assert_eq!(s.log, [10, 10, 50], "a refusal leaves the log alone");
        assert_eq!(acquire(&Q, &mut s, 110, 2, 2).granted, 2);
        assert_eq!(s.log, [50, 110, 110]);
        assert_eq!(idle_at(&Q, &s), 210);
    }

    #[test]
    fn more_than_the_limit_never_fits() {
        let r = acquire(&Q, &mut State::default(), 0, 4, 4);
        assert_eq!((r.granted, r.retry_at), (0, u64::MAX));
    }

    #[test]
    fn an_earlier_now_is_stamped_at_the_newest_entry() {
        let mut s = State::default();
        acquire(&Q, &mut s, 500, 1, 1);
        acquire(&Q, &mut s, 100, 1, 1);
        assert_eq!(s.log, [500, 500]);
    }

    #[test]
    fn refund_removes_only_entries_of_that_instant() {
        let mut s = State {
            words: [0; 3],
            log: vec![10, 20, 20, 30],
        };
        refund(&Q, &mut s, 40, 20, 5);
        assert_eq!(s.log, [10, 30]);
        refund(&Q, &mut s, 40, 15, 1);
        assert_eq!(s.log, [10, 30]);
    }

    #[test]
    fn huge_limits_are_bounded() {
        let q = Quota::new(u64::MAX, u64::MAX, 1, 0);
        let mut s = State::default();
        assert_eq!(
            acquire(&q, &mut s, u64::MAX, u64::MAX, u64::MAX).retry_at,
            u64::MAX
        );
        assert_eq!(acquire(&q, &mut s, 0, 3, 3).granted, 3);
        assert_eq!(acquire(&q, &mut s, 1, 1, 1).remaining, MAX_ENTRIES - 4);
    }
}
