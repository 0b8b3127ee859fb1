//! Promise: admitted requests are released (admission time + delay) at least `T = ⌈window / limit⌉` per permit apart, and never more than `queue` of them wait at any instant.
//!
//! A strict output rate, like nginx `limit_req` with `burst = queue` and without `nodelay`: a
//! request goes at `max(TAT, now)`, the time the previous one has drained, or is refused when
//! it would wait longer than `queue·T`. `queue = 0` lets through only requests `T` apart.
//!
//! Not leasable: a request gets exactly `min` permits (its cost) or none.
//!
//! Words: `[TAT, latest instant a grant was made at, the release time of that grant]`; the last
//! word is [`AMBIGUOUS`] when two grants share that instant, because a refund must know that
//! it undoes the last scheduled request and not one that others are queued behind.

use super::math::{bounds, period, refusal, span};
use super::{Grant, Quota, State};
use crate::Nanos;

/// Marks that the last grant cannot be told apart from an earlier one, so refunds are refused.
const AMBIGUOUS: Nanos = u64::MAX;

/// How many unit requests would be admitted at `now` one after the other, with the queue
/// drained at `tat`: the immediate slot (if free) plus the free queue positions.
fn free_slots(tat: Nanos, now: Nanos, patience: Nanos, t: Nanos) -> u64 {
    let wait = tat.max(now) - now;
    match patience.checked_sub(wait) {
        Some(room) => (room / t).saturating_add(1),
        None => 0,
    }
}

pub(super) fn acquire(quota: &Quota, state: &mut State, now: Nanos, min: u64, max: u64) -> Grant {
    let (cost, _) = bounds(min, max);
    let t = period(quota);
    let patience = span(quota.queue, t);
    let [tat, latest, _] = state.words;
    let start = tat.max(now);
    let delay = start - now;
    if cost == 0 {
        let remaining = free_slots(tat, now, patience, t);
        return Grant {
            granted: 0,
            held_back: 0,
            valid_until: now,
            remaining,
            reset: start,
            retry_at: now,
            delay: 0,
        };
    }
    if delay > patience {
        // The earliest r with max(tat, r) − r ≤ patience.
        let retry_at = tat.saturating_sub(patience);
        return refusal(now, free_slots(tat, now, patience, t), start, retry_at);
    }
    let new_tat = start.saturating_add(span(cost, t));
    state.words = if state.words == [0; 3] || now > latest {
        [new_tat, now, start]
    } else {
        [new_tat, latest, AMBIGUOUS]
    };
    Grant {
        granted: cost,
        held_back: 0,
        valid_until: now,
        remaining: free_slots(new_tat, now, patience, t),
        reset: new_tat,
        retry_at: now,
        delay,
    }
}

/// Exact when the refunded grant is the last one and no other grant shares its instant: the
/// next request then takes its slot. Otherwise requests already scheduled behind it would
/// collide with a rolled back `TAT`, so nothing is refunded.
pub(super) fn refund(
    quota: &Quota,
    state: &mut State,
    now: Nanos,
    granted_at: Nanos,
    permits: u64,
) {
    let _ = now;
    let [tat, latest, released] = state.words;
    if state.words == [0; 3] || latest != granted_at || released == AMBIGUOUS || released > tat {
        return;
    }
    let rolled_back = tat
        .saturating_sub(span(permits, period(quota)))
        .max(released);
    state.words = [rolled_back, latest, AMBIGUOUS];
}

pub(super) fn idle_at(quota: &Quota, state: &State) -> Nanos {
    let _ = quota;
    state.words[0]
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    /// 10 per second: T = 100 ms; two may wait.
    const Q: Quota = Quota::new(10, 1_000, 10, 2);

    #[test]
    fn queues_up_to_the_queue_then_refuses() {
        let mut s = State::default();
        let delays: Vec<_> = (0..4).map(|_| acquire(&Q, &mut s, 1_000, 1, 1)).collect();
        let got: Vec<_> = delays
            .iter()
            .map(|g| (g.granted, g.delay, g.remaining))
            .collect();
        assert_eq!(got, [(1, 0, 2), (1, 100, 1), (1, 200, 0), (0, 0, 0)]);
        assert_eq!(delays.last().map(|g| g.retry_at), Some(1_100));
        assert_eq!(acquire(&Q, &mut s, 1_100, 1, 1).delay, 200);
        assert_eq!(idle_at(&Q, &s), 1_400);
    }

    #[test]
    fn without_a_queue_only_spaced_requests_pass() {
        let q = Quota::new(10, 1_000, 10, 0);
        let mut s = State::default();
        assert_eq!(acquire(&q, &mut s, 0, 1, 1).granted, 1);
        let r = acquire(&q, &mut s, 99, 1, 1);
        assert_eq!((r.granted, r.retry_at), (0, 100));
        assert_eq!(acquire(&q, &mut s, 100, 3, 3).granted, 3);
        assert_eq!(acquire(&q, &mut s, 399, 1, 1).granted, 0);
    }

    #[test]
    fn refund_undoes_only_an_unambiguous_last_grant() {
        let mut s = State::default();
        acquire(&Q, &mut s, 1_000, 1, 1);
        acquire(&Q, &mut s, 1_010, 1, 1);
        refund(&Q, &mut s, 1_020, 1_000, 1);
        assert_eq!(s.words[0], 1_200, "an earlier grant is not refunded");
        refund(&Q, &mut s, 1_020, 1_010, 1);
        assert_eq!(s.words[0], 1_100);
        acquire(&Q, &mut s, 1_030, 1, 1);
        acquire(&Q, &mut s, 1_030, 1, 1);
        refund(&Q, &mut s, 1_040, 1_030, 1);
        assert_eq!(
            s.words[0], 1_300,
            "two grants at one instant are not told apart"
        );
    }

    #[test]
    fn an_earlier_now_waits_for_the_recorded_schedule() {
        let mut s = State::default();
        acquire(&Q, &mut s, 1_000, 1, 1);
        let g = acquire(&Q, &mut s, 950, 1, 1);
        assert_eq!((g.granted, g.delay), (1, 150));
    }

    #[test]
    fn huge_queues_saturate() {
        let q = Quota::new(1, u64::MAX, 1, u64::MAX);
        let mut s = State::default();
        assert_eq!(acquire(&q, &mut s, 5, u64::MAX, u64::MAX).granted, u64::MAX);
        let g = acquire(&q, &mut s, 6, 1, 1);
        assert_eq!((g.granted, g.delay, g.reset), (1, u64::MAX - 6, u64::MAX));
    }
}
