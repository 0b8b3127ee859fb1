//! Promise: in any span of length `t` the bucket admits at most `burst + ⌊t / T⌋` permits, where `T = ⌈window / limit⌉`.
//!
//! This is GCRA (the generic cell rate algorithm, as in governor): one word, the theoretical
//! arrival time `TAT`, stands for the whole bucket. The bucket holds
//! `(now + burst·T − max(TAT, now)) / T` tokens; taking `g` of them moves `TAT` forward by `g·T`.
//!
//! Words: `[TAT, latest instant a grant was made at, 0]`.
//!
//! Leases: a worker holding `ℓ` unspent permits must not let the shared bucket refill them a
//! second time. The leftover is valid until `max(TAT, now)`: up to then nobody else can take
//! more than the promise allows with those `ℓ` already counted. When that is sooner than
//! `now + ℓ·T` (a bucket that is full or nearly so), the grant also holds back the bucket's
//! refill by `p·T` ([`Grant::held_back`] tokens, consumed but not spendable) to keep the
//! leftover valid until `now + ℓ·T`; a full bucket would have lost that refill to its cap
//! anyway, and the holder hands the tokens back with its leftover when it renews the lease.

use super::math::{bounds, period, refusal, sat, span, take};
use super::{Grant, Lease, Quota, State};
use crate::Nanos;

pub(super) fn acquire(quota: &Quota, state: &mut State, now: Nanos, min: u64, max: u64) -> Grant {
    lease(quota, state, now, min, max, u64::MAX)
}

/// [`acquire`] holding back at most `hold_back` tokens of refill for the leftover.
pub(super) fn lease(
    quota: &Quota,
    state: &mut State,
    now: Nanos,
    min: u64,
    max: u64,
    hold_back: u64,
) -> Grant {
    let (min, max) = bounds(min, max);
    let t = period(quota);
    let burst = quota.burst.max(1);
    let [stored_tat, latest, _] = state.words;
    let tat = stored_tat.max(now);
    let full_at = u128::from(now) + u128::from(burst) * u128::from(t);
    let available = sat(full_at.saturating_sub(u128::from(tat)) / u128::from(t));
    let Some(wanted) = take(available, min, max) else {
        let retry_at = if min > burst {
            u64::MAX
        } else {
            // The earliest `r` with (r + burst·T − tat) / T ≥ min.
            tat.saturating_sub(span(burst - min, t)).max(now)
        };
        return refusal(now, available, tat, retry_at);
    };
    // Validity the bucket gives for free (in whole periods), then the leftover ℓ such that
    // min + ℓ + (ℓ − free) ≤ available when the leftover must be propped up by held-back refill.
    let free = (tat - now) / t;
    let room = available - min;
    // Refill is held back only for a bucket that is full or within one period of it (no free
    // validity at all): one that is being drained gives enough validity by itself.
    let hold_back = if free == 0 { hold_back } else { 0 };
    let most = if room <= free {
        room
    } else {
        (room + free) / 2
    }
    .min(free.saturating_add(hold_back));
    let leftover = (wanted - min).min(most);
    let granted = min + leftover;
    let held_back = leftover.saturating_sub(free);
    let new_tat = if granted == 0 {
        stored_tat
    } else {
        tat.saturating_add(span(granted + held_back, t))
    };
    if granted > 0 {
        state.words = [new_tat, latest.max(now), 0];
    }
    Grant {
        granted,
        held_back,
        valid_until: tat.saturating_add(span(held_back, t)),
        remaining: room - leftover - held_back,
        reset: new_tat.max(now),
        retry_at: now,
        delay: 0,
    }
}

/// Exact when no grant was made at an instant later than `granted_at`: then the refunded
/// permits are the last ones taken and `TAT` simply moves back. Otherwise a later grant may
/// have found the bucket full, which erased part of the refunded grant's effect; rolling back
/// could then hand out tokens the bucket never had, so nothing is refunded.
pub(super) fn refund(
    quota: &Quota,
    state: &mut State,
    now: Nanos,
    granted_at: Nanos,
    permits: u64,
) {
    let _ = now;
    let [tat, latest, spare] = state.words;
    if latest <= granted_at {
        state.words = [
            tat.saturating_sub(span(permits, period(quota))),
            latest,
            spare,
        ];
    }
}

/// Hands a lease back: like [`refund`] of its usable leftover and held-back tokens, except
/// that `TAT` never drops below the lease's floor (permits spent after the grant count from
/// when they were spent, not from when they were leased).
pub(super) fn return_lease(quota: &Quota, state: &mut State, now: Nanos, lease: &Lease) -> bool {
    let [tat, latest, spare] = state.words;
    let exact = latest <= lease.granted_at;
    if exact {
        let back = tat.saturating_sub(span(lease.returnable(now), period(quota)));
        state.words = [back.max(lease.floor), latest, spare];
    }
    exact
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

    /// 10 per 10 s, burst 5: T = 1 s.
    const Q: Quota = Quota::new(10, 10_000, 5, 0);

    #[test]
    fn drains_then_refills_one_per_period() {
        let mut s = State::default();
        assert_eq!(acquire(&Q, &mut s, 1_000, 5, 5).granted, 5);
        let r = acquire(&Q, &mut s, 1_500, 1, 1);
        assert_eq!((r.granted, r.retry_at, r.remaining), (0, 2_000, 0));
        let g = acquire(&Q, &mut s, 2_000, 1, 3);
        assert_eq!((g.granted, g.remaining, g.reset), (1, 0, 7_000));
    }

    #[test]
    fn a_lease_from_a_full_bucket_holds_back_refill() {
        let mut s = State::default();
        // Full bucket of 5: one spent now, a leftover of 2 propped up by 2 held-back tokens.
        let g = acquire(&Q, &mut s, 1_000, 1, 10);
        assert_eq!(
            (g.granted, g.held_back, g.remaining, g.valid_until),
            (3, 2, 0, 3_000)
        );
        // Given back with the leftover, the bucket is as if only one permit was taken.
        refund(&Q, &mut s, 1_500, 1_000, 2 + 2);
        assert_eq!(s.words[0], 2_000);
    }

    #[test]
    fn a_lease_from_a_draining_bucket_needs_no_hold_back() {
        let mut s = State::default();
        assert_eq!(acquire(&Q, &mut s, 0, 3, 3).granted, 3);
        // TAT is 3 s away: a leftover of 1 is valid until then for free.
        let g = acquire(&Q, &mut s, 0, 1, 2);
        assert_eq!((g.granted, g.held_back, g.valid_until), (2, 0, 3_000));
    }

    #[test]
    fn refuses_forever_what_exceeds_the_burst() {
        let r = acquire(&Q, &mut State::default(), 0, 6, 6);
        assert_eq!((r.granted, r.retry_at, r.remaining), (0, u64::MAX, 5));
    }

    #[test]
    fn a_clock_going_back_never_adds_tokens() {
        let mut s = State::default();
        assert_eq!(acquire(&Q, &mut s, 10_000, 5, 5).granted, 5);
        let r = acquire(&Q, &mut s, 0, 1, 1);
        assert_eq!((r.granted, r.retry_at), (0, 11_000));
    }

    #[test]
    fn refund_after_a_later_grant_is_refused() {
        let mut s = State::default();
        acquire(&Q, &mut s, 1_000, 2, 2);
        acquire(&Q, &mut s, 2_000, 1, 1);
        let before = s.clone();
        refund(&Q, &mut s, 2_000, 1_000, 2);
        assert_eq!(s, before);
        refund(&Q, &mut s, 2_000, 2_000, 1);
        assert_eq!(s.words[0], 3_000);
    }

    #[test]
    fn huge_numbers_saturate() {
        let q = Quota::new(1, u64::MAX, u64::MAX, 0);
        let mut s = State::default();
        let g = acquire(&q, &mut s, u64::MAX, 1, u64::MAX);
        assert_eq!(g.granted + g.held_back, u64::MAX);
        assert_eq!(idle_at(&q, &s), u64::MAX);
    }
}
