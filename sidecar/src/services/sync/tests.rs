//! The pure part of a sync entry: absorbing hits and reading the total.

use tollgate_filter::algorithm::{Algorithm, Quota, State};

use super::fold;
use crate::storage::Write;

const SECOND: u64 = tollgate_filter::SECOND;

const NOW: u64 = 1_000_000_000_000;
const WINDOW: u64 = 60_000_000_000;

const ALGORITHMS: [Algorithm; 5] = [
    Algorithm::FixedWindow,
    Algorithm::SlidingWindowLog,
    Algorithm::SlidingWindowCounter,
    Algorithm::TokenBucket,
    Algorithm::LeakyBucket,
];

/// What a fresh bucket of `algorithm` offers at once.
fn full(algorithm: Algorithm, quota: &Quota) -> u64 {
    algorithm.available(quota, &State::default(), 0)
}

#[test]
fn a_fresh_bucket_is_full_and_reset_now_and_nothing_is_written() {
    let quota = Quota::new(10, WINDOW, 4, 0);
    for algorithm in ALGORITHMS {
        let mut state = State::default();
        let (total, write) = fold(algorithm, &quota, &mut state, NOW, NOW, 0);
        assert_eq!(total.remaining, full(algorithm, &quota), "{algorithm:?}");
        assert_eq!(total.reset_after_ns, 0, "{algorithm:?}");
        assert_eq!(write, Write::Nothing, "{algorithm:?}");
        assert_eq!(state, State::default(), "{algorithm:?}");
    }
}

#[test]
fn hits_are_taken_up_to_what_is_left() {
    let quota = Quota::new(10, WINDOW, 10, 0);
    let mut state = State::default();
    let (total, write) = fold(Algorithm::FixedWindow, &quota, &mut state, NOW, NOW, 7);
    assert_eq!(total.remaining, 3);
    let end = NOW - NOW % WINDOW + WINDOW;
    assert_eq!(total.reset_after_ns, end - NOW);
    assert_eq!(write, Write::State { idle_at: end });
    // More hits than are left empty the bucket; they are not carried over.
    let (total, _) = fold(Algorithm::FixedWindow, &quota, &mut state, NOW, NOW, 50);
    assert_eq!(total.remaining, 0);
    let (total, write) = fold(
        Algorithm::FixedWindow,
        &quota,
        &mut state,
        NOW + 1,
        NOW + 1,
        0,
    );
    assert_eq!((total.remaining, write), (0, Write::Nothing));
    // An empty bucket takes nothing more, so nothing is written.
    let (_, write) = fold(
        Algorithm::FixedWindow,
        &quota,
        &mut state,
        NOW + 1,
        NOW + 1,
        3,
    );
    assert_eq!(write, Write::Nothing);
}

/// The promise of `reset_after_ns`: at `now + reset_after_ns` the whole quota is available
/// again, and not a nanosecond earlier.
#[test]
fn reset_is_the_first_instant_the_whole_quota_is_back() {
    let quotas = [
        Quota::new(10, WINDOW, 10, 0),
        Quota::new(10, WINDOW, 4, 0),
        Quota::new(3, 7, 2, 0),
        Quota::new(1, 1, 1, 0),
    ];
    for quota in quotas {
        for algorithm in ALGORITHMS {
            for hits in [1, 2, 5, 100] {
                for now in [NOW, NOW + WINDOW / 2, NOW + WINDOW - 1] {
                    let mut state = State::default();
                    let (total, _) = fold(algorithm, &quota, &mut state, now, now, hits);
                    let reset = now + total.reset_after_ns;
                    let whole = full(algorithm, &quota);
                    let case = format!("{algorithm:?} {quota:?} hits {hits} at {now}");
                    assert!(total.reset_after_ns > 0, "{case}");
                    assert_eq!(algorithm.available(&quota, &state, reset), whole, "{case}");
                    assert!(
                        algorithm.available(&quota, &state, reset - 1) < whole,
                        "{case}"
                    );
                    // The bucket is idle by then: nothing to remember past it.
                    assert!(
                        algorithm.idle_at(&quota, &state) <= reset.max(now),
                        "{case}"
                    );
                }
            }
        }
    }
}

#[test]
fn a_second_fold_sees_the_first() {
    let quota = Quota::new(100, WINDOW, 100, 0);
    for algorithm in [
        Algorithm::FixedWindow,
        Algorithm::SlidingWindowLog,
        Algorithm::SlidingWindowCounter,
        Algorithm::TokenBucket,
    ] {
        let mut state = State::default();
        fold(algorithm, &quota, &mut state, NOW, NOW, 30);
        let (total, _) = fold(algorithm, &quota, &mut state, NOW, NOW, 50);
        assert_eq!(total.remaining, 20, "{algorithm:?}");
    }
}

#[test]
fn hits_count_from_when_the_node_admitted_them() {
    // A full token bucket of 10 refilling one token a second; a node admitted 3 at NOW and
    // synced them 0.9 s later. Counted from NOW, the bucket has 7 + 0.9 s of refill = 7 tokens
    // at NOW + 0.9 s, then 8 at NOW + 1 s — exactly the node's own view; counted from the
    // sync, it would have 7 until NOW + 1.9 s, a token short of the node's.
    let quota = Quota::new(60, 60 * SECOND, 10, 0);
    let mut state = State::default();
    let synced = NOW + 900_000_000;
    fold(Algorithm::TokenBucket, &quota, &mut state, NOW, synced, 3);
    let (total, _) = fold(
        Algorithm::TokenBucket,
        &quota,
        &mut state,
        NOW + SECOND,
        NOW + SECOND,
        0,
    );
    assert_eq!(total.remaining, 8);
}
