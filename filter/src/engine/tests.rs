#![allow(clippy::indexing_slicing)]

use std::collections::HashMap;

use proptest::prelude::*;
#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;

use super::testing::MemStore;

const MINUTE: Nanos = 60 * crate::SECOND;

fn ask(algorithm: Algorithm, limit: u64, burst: u64) -> Ask {
    Ask {
        key: 42,
        algorithm,
        quota: Quota::new(limit, MINUTE, burst, 0),
        cost: 1,
    }
}

#[test]
fn two_workers_asking_until_refused_admit_exactly_the_limit() {
    for algorithm in [
        Algorithm::FixedWindow,
        Algorithm::TokenBucket,
        Algorithm::SlidingWindowCounter,
        Algorithm::SlidingWindowLog,
    ] {
        let mut store = MemStore::default();
        let mut workers = [Limiter::new(1024, 64), Limiter::new(1024, 64)];
        let ask = ask(algorithm, 500, 500);
        let now = 10 * MINUTE;
        let mut admitted = 0;
        for i in 0..2000 {
            if workers[i % 2].acquire(&mut store, &ask, now).admitted {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 500, "{algorithm:?}");
    }
}

#[test]
fn two_workers_hammering_a_token_bucket_get_its_whole_burst() {
    // 200 an hour: nothing refills during the test, so every permit lost to a lease shows.
    let mut store = MemStore::default();
    let mut workers = [Limiter::new(1024, 64), Limiter::new(1024, 64)];
    let ask = Ask {
        key: 9,
        algorithm: Algorithm::TokenBucket,
        quota: Quota::new(200, 3600 * crate::SECOND, 200, 0),
        cost: 1,
    };
    let mut admitted = 0;
    for i in 0..2000u64 {
        let worker = usize::from((i * 7 / 3) % 2 == 0);
        if workers[worker]
            .acquire(&mut store, &ask, MINUTE + i * 10_000)
            .admitted
        {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 200);
}

proptest! {
    /// A bucket with fewer than LEASE_FLOOR spare permits is never leased, so in any
    /// interleaving of two workers the first refusal comes exactly after `burst` admissions
    /// (nothing refills within the test): no permit sits idle in the other worker's lease.
    #[test]
    fn small_buckets_are_exact_across_workers(
        order in proptest::collection::vec(0usize..2, 1..120),
        burst in 1u64..=LEASE_FLOOR,
        algorithm in prop_oneof![
            Just(Algorithm::FixedWindow),
            Just(Algorithm::TokenBucket),
            Just(Algorithm::SlidingWindowCounter),
            Just(Algorithm::SlidingWindowLog),
        ],
    ) {
        let mut store = MemStore::default();
        let mut workers = [Limiter::new(1024, 64), Limiter::new(1024, 64)];
        let ask = Ask { key: 5, algorithm, quota: Quota::new(burst, 3600 * crate::SECOND, burst, 0), cost: 1 };
        let mut admitted = 0;
        for (i, worker) in order.iter().enumerate() {
            let outcome = workers[*worker].acquire(&mut store, &ask, MINUTE + i as u64 * 1_000);
            if outcome.admitted {
                admitted += 1;
            } else {
                prop_assert_eq!(admitted, burst, "refused at {} with room left", i);
            }
        }
        prop_assert!(admitted <= burst);
    }
}

#[test]
fn lease_size_follows_the_spare_permits() {
    assert_eq!(lease_max(1, 100, 10), 1, "too few spare: no lease");
    assert_eq!(lease_max(1, 100, LEASE_FLOOR), 1);
    assert_eq!(
        lease_max(1, 100, LEASE_FLOOR + 1),
        LEASE_FLOOR / LEASE_SHARE
    );
    assert_eq!(lease_max(1, 5, 10_000), 5, "never more than wanted");
    assert_eq!(lease_max(3, 300, 3 + 80), 9, "whole batches of the cost");
    assert_eq!(lease_max(u64::MAX, u64::MAX, u64::MAX), u64::MAX);
}

#[test]
fn leases_make_most_requests_local() {
    let mut store = MemStore::default();
    let mut worker = Limiter::new(1024, 64);
    let ask = ask(Algorithm::FixedWindow, 1_000_000, 1_000_000);
    for i in 0..10_000 {
        assert!(worker.acquire(&mut store, &ask, MINUTE + i).admitted);
    }
    assert!(worker.stats.shared_reads < 100, "{:?}", worker.stats);
}

#[test]
fn refusals_are_remembered_until_retry() {
    let mut store = MemStore::default();
    let mut worker = Limiter::new(1024, 64);
    let ask = ask(Algorithm::FixedWindow, 3, 3);
    let now = MINUTE;
    for _ in 0..3 {
        assert!(worker.acquire(&mut store, &ask, now).admitted);
    }
    let refused = worker.acquire(&mut store, &ask, now);
    assert!(!refused.admitted);
    assert_eq!(refused.retry_at, 2 * MINUTE);
    let reads = worker.stats.shared_reads;
    for _ in 0..100 {
        assert!(!worker.acquire(&mut store, &ask, now + 1).admitted);
    }
    assert_eq!(worker.stats.shared_reads, reads);
    assert!(worker.acquire(&mut store, &ask, 2 * MINUTE).admitted);
}

#[test]
fn refunds_restore_permits() {
    for algorithm in [
        Algorithm::FixedWindow,
        Algorithm::TokenBucket,
        Algorithm::SlidingWindowLog,
        Algorithm::LeakyBucket,
    ] {
        let mut store = MemStore::default();
        let mut worker = Limiter::new(1024, 64);
        let ask = Ask {
            quota: Quota::new(2, MINUTE, 2, 5),
            ..ask(algorithm, 2, 2)
        };
        let now = MINUTE;
        let first = worker.acquire(&mut store, &ask, now);
        assert!(first.admitted, "{algorithm:?}");
        worker.refund(&mut store, &ask, &first, now);
        let again = worker.acquire(&mut store, &ask, now);
        assert!(again.admitted, "{algorithm:?}");
        assert_eq!(again.delay, first.delay, "{algorithm:?}");
    }
}

#[test]
fn a_flood_of_keys_stays_within_the_slots() {
    let mut store = MemStore::default();
    let mut worker = Limiter::new(1024, 256);
    for key in 0..100_000u64 {
        let ask = Ask {
            key: key.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            ..ask(Algorithm::TokenBucket, 600, 50)
        };
        assert!(
            worker
                .acquire(&mut store, &ask, MINUTE + key * 1000)
                .admitted
        );
    }
    assert!(store.entries.len() <= 1024);
    assert!(worker.cache.len() <= 256);
}

#[test]
fn idle_buckets_give_their_slot_without_eviction() {
    let mut store = MemStore::default();
    let mut worker = Limiter::new(1024, 64);
    // 10 per minute: a bucket idle for a minute is full again and may be forgotten.
    for key in 1..=20_000u64 {
        let ask = Ask {
            key,
            ..ask(Algorithm::TokenBucket, 10, 10)
        };
        assert!(worker.acquire(&mut store, &ask, key * MINUTE).admitted);
    }
    assert_eq!(worker.stats.evicted_active, 0);
}

proptest! {
    /// Two workers in any interleaving never admit more than a fixed window's limit.
    #[test]
    fn interleaved_workers_never_over_admit(order in proptest::collection::vec((0usize..2, 0u64..5_000_000_000), 1..600), limit in 1u64..200) {
        let mut store = MemStore::default();
        let mut workers = [Limiter::new(1024, 64), Limiter::new(1024, 64)];
        let ask = ask(Algorithm::FixedWindow, limit, limit);
        let mut now = 0;
        let mut per_window: HashMap<u64, u64> = HashMap::new();
        for (worker, step) in order {
            now += step;
            if workers[worker].acquire(&mut store, &ask, now).admitted {
                *per_window.entry(now / MINUTE).or_default() += 1;
            }
        }
        prop_assert!(per_window.values().all(|&n| n <= limit), "{per_window:?}");
    }
}

proptest! {
    /// Two leasing workers in any interleaving keep the token bucket's promise:
    /// at most `burst + ⌊t/T⌋` admissions in any span of length `t`.
    #[test]
    fn interleaved_workers_keep_the_token_bucket_promise(
        order in proptest::collection::vec((0usize..2, 0u64..40), 1..400),
        limit in 1u64..40,
        // Up to well past LEASE_FLOOR, so that leases are made and spent late.
        burst in 1u64..(3 * LEASE_FLOOR),
    ) {
        let mut store = MemStore::default();
        let mut workers = [Limiter::new(1024, 64), Limiter::new(1024, 64)];
        let ask = Ask { key: 7, algorithm: Algorithm::TokenBucket, quota: Quota::new(limit, 1000, burst, 0), cost: 1 };
        let period = 1000u64.div_ceil(limit);
        let mut now = 1;
        let mut admitted = Vec::new();
        for (worker, step) in order {
            now += step;
            if workers[worker].acquire(&mut store, &ask, now).admitted {
                admitted.push(now);
            }
        }
        for (i, &a) in admitted.iter().enumerate() {
            for (j, &b) in admitted.iter().enumerate().skip(i) {
                let count = (j - i + 1) as u64;
                prop_assert!(count <= burst + (b - a) / period, "{count} in [{a}, {b}]");
            }
        }
    }
}

#[test]
fn folding_a_global_total_lowers_the_node_bucket_and_never_raises_it() {
    for algorithm in [
        Algorithm::FixedWindow,
        Algorithm::TokenBucket,
        Algorithm::SlidingWindowCounter,
        Algorithm::SlidingWindowLog,
    ] {
        let mut store = MemStore::default();
        let mut worker = Limiter::new(1024, 64);
        let ask = ask(algorithm, 100, 100);
        let now = 10 * MINUTE;
        // This worker holds a lease (for the leasable algorithms) when the total comes in.
        for _ in 0..10 {
            assert!(
                worker.acquire(&mut store, &ask, now).admitted,
                "{algorithm:?}"
            );
        }
        // Other nodes took most of the limit: 5 are left globally.
        assert!(
            worker.fold(&mut store, &ask, 5, now).is_some(),
            "{algorithm:?}"
        );
        let admitted = (0..50)
            .filter(|_| worker.acquire(&mut store, &ask, now).admitted)
            .count();
        assert_eq!(admitted, 5, "{algorithm:?}");
        // A total above what the node has left changes nothing.
        assert_eq!(
            worker.fold(&mut store, &ask, 50, now),
            Some(0),
            "{algorithm:?}"
        );
        assert!(
            !worker.acquire(&mut store, &ask, now).admitted,
            "{algorithm:?}"
        );
    }
}

#[test]
fn folding_empties_a_leaky_bucket_that_other_nodes_used() {
    let mut store = MemStore::default();
    let mut worker = Limiter::new(1024, 64);
    let ask = ask(Algorithm::LeakyBucket, 60, 60);
    let now = 10 * MINUTE;
    assert_eq!(worker.fold(&mut store, &ask, 0, now), Some(1));
    assert!(!worker.acquire(&mut store, &ask, now).admitted);
    assert!(
        worker
            .acquire(&mut store, &ask, now + crate::SECOND)
            .admitted
    );
}

#[test]
fn folding_keeps_a_lease_that_cannot_go_back() {
    // Two workers share a token bucket of 20 that does not refill during the test; one of them
    // folds a global total that changes nothing, at every point of the run. A lease that could
    // not be handed back exactly (the other worker took since) must stay spendable: together
    // they still admit the whole burst.
    let ask = Ask {
        key: 5,
        algorithm: Algorithm::TokenBucket,
        quota: Quota::new(100, 3600 * crate::SECOND, 20, 0),
        cost: 1,
    };
    let now = 10 * MINUTE;
    for fold_at in 0..30u64 {
        let mut store = MemStore::default();
        let mut workers = [Limiter::new(1024, 64), Limiter::new(1024, 64)];
        let mut admitted = 0;
        for step in 0..60u64 {
            let worker = usize::from(step % 5 == 4);
            if step == fold_at {
                assert!(workers[0].fold(&mut store, &ask, 20, now).is_some());
            }
            if workers[worker].acquire(&mut store, &ask, now).admitted {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 20, "fold at step {fold_at}");
    }
}

/// Worker A decides one request while worker B's whole decision is slipped in before A's
/// `nth` shared-data write (for every `nth`), on both hosts' CAS semantics: a bucket of one
/// permit admits exactly one of the two, and the store never fails.
#[test]
fn a_competing_write_between_get_and_set_never_over_admits() {
    for strict in [true, false] {
        for nth in 0..8 {
            let mut store = if strict {
                MemStore::default()
            } else {
                MemStore::envoy()
            };
            let ask = ask(Algorithm::FixedWindow, 1, 1);
            let now = 10 * MINUTE;
            let b_admitted = std::rc::Rc::new(std::cell::Cell::new(false));
            let seen = std::rc::Rc::clone(&b_admitted);
            store.compete_before_write(
                nth,
                Box::new(move |store: &mut MemStore| {
                    let mut b = Limiter::new(1024, 64);
                    seen.set(b.acquire(store, &ask, now).admitted);
                    assert_eq!(b.stats.store_failures, 0);
                }),
            );
            let mut a = Limiter::new(1024, 64);
            let a_admitted = a.acquire(&mut store, &ask, now).admitted;
            let host = if strict { "strict" } else { "envoy" };
            assert_eq!(
                a.stats.store_failures, 0,
                "{host}: competitor before write {nth}: the store failed (fail open)"
            );
            if store.competitor_pending() {
                continue; // A made fewer writes than that: nothing slipped in.
            }
            assert_eq!(
                u32::from(a_admitted) + u32::from(b_admitted.get()),
                1,
                "{host}: competitor before write {nth}: a={a_admitted} b={}",
                b_admitted.get()
            );
        }
    }
}
