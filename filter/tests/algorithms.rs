//! Each algorithm held to the one-sentence promise its module starts with, over random
//! sequences of requests, leases and refunds. The same properties run natively (`cargo test`)
//! and compiled to wasm32-unknown-unknown under Node with wasm-bindgen-test (`cargo test-wasm`).

use proptest::prelude::*;
use proptest::test_runner::{Config, FailurePersistence, TestCaseError};
use tollgate_filter::algorithm::{Algorithm, Grant, Lease, Quota, State};
#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
use wasm_bindgen_test::wasm_bindgen_test as test;

/// Failing cases are kept in `filter/proptest-regressions/` natively; a wasm VM has no files.
fn config() -> Config {
    Config {
        failure_persistence: persistence(),
        ..Config::default()
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn persistence() -> Option<Box<dyn FailurePersistence>> {
    use proptest::test_runner::FileFailurePersistence::Direct;
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/proptest-regressions/algorithms.txt"
    );
    Some(Box::new(Direct(file)))
}

#[cfg(target_arch = "wasm32")]
fn persistence() -> Option<Box<dyn FailurePersistence>> {
    None
}

const LEASABLE: [Algorithm; 3] = [
    Algorithm::FixedWindow,
    Algorithm::SlidingWindowCounter,
    Algorithm::TokenBucket,
];

fn any_algorithm() -> impl Strategy<Value = Algorithm> {
    prop_oneof![
        Just(Algorithm::FixedWindow),
        Just(Algorithm::SlidingWindowLog),
        Just(Algorithm::SlidingWindowCounter),
        Just(Algorithm::TokenBucket),
        Just(Algorithm::LeakyBucket),
    ]
}

/// Small quotas, so that short sequences cross many windows and refill periods.
fn quota() -> impl Strategy<Value = Quota> {
    (1u64..=12, 1u64..=400, 1u64..=12, 0u64..=4).prop_map(|(l, w, b, q)| Quota::new(l, w, b, q))
}

/// Mostly short gaps, sometimes several windows.
fn gap() -> impl Strategy<Value = u64> {
    prop_oneof![8 => 0u64..=20, 3 => 0u64..=200, 1 => 0u64..=2_000]
}

/// A number that is usually small and sometimes at the edges of `u64`.
fn wide() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..=8, any::<u64>(), Just(u64::MAX), Just(0)]
}

#[derive(Clone, Debug)]
enum Op {
    /// After `dt`, ask for `min..=min + extra` permits.
    Take { dt: u64, min: u64, extra: u64 },
    /// After `dt`, refund part of an earlier grant (picked by `pick`).
    Give { dt: u64, pick: usize, part: u64 },
}

fn take() -> impl Strategy<Value = Op> {
    (gap(), 0u64..=4, 0u64..=4).prop_map(|(dt, min, extra)| Op::Take { dt, min, extra })
}

fn op() -> impl Strategy<Value = Op> {
    let give = (gap(), any::<usize>(), any::<u64>()).prop_map(|(dt, pick, part)| Op::Give {
        dt,
        pick,
        part,
    });
    prop_oneof![5 => take(), 1 => give]
}

/// Permits admitted at `at` (after refunds), released `delay` later.
#[derive(Clone, Copy, Debug)]
struct Admitted {
    at: u64,
    permits: u64,
    delay: u64,
}

/// The most permits a fresh key grants one request.
fn capacity(alg: Algorithm, q: &Quota) -> u64 {
    match alg {
        Algorithm::TokenBucket => q.burst,
        Algorithm::LeakyBucket => q.queue + 1,
        _ => q.limit,
    }
}

/// Runs `ops` from a fresh key, checking every decision; returns what was admitted.
fn run(alg: Algorithm, q: &Quota, start: u64, ops: &[Op]) -> Result<Vec<Admitted>, TestCaseError> {
    let mut state = State::default();
    let mut now = start;
    let mut admitted: Vec<Admitted> = Vec::new();
    for op in ops {
        match *op {
            Op::Take { dt, min, extra } => {
                now += dt;
                let before = state.clone();
                let g = alg.acquire(q, &mut state, now, min, min + extra);
                check_decision(alg, q, &before, &state, now, min, min + extra, &g)?;
                if g.granted > 0 {
                    admitted.push(Admitted {
                        at: now,
                        permits: g.granted,
                        delay: g.delay,
                    });
                }
            }
            Op::Give { dt, pick, part } => {
                now += dt;
                let len = admitted.len().max(1);
                if let Some(a) = admitted.get_mut(pick % len).filter(|a| a.permits > 0) {
                    let permits = 1 + part % a.permits;
                    alg.refund(q, &mut state, now, a.at, permits);
                    a.permits -= permits;
                }
            }
        }
    }
    Ok(admitted)
}

/// What every single decision must satisfy, whatever the history.
#[allow(clippy::too_many_arguments)]
fn check_decision(
    alg: Algorithm,
    q: &Quota,
    before: &State,
    after: &State,
    now: u64,
    min: u64,
    max: u64,
    g: &Grant,
) -> Result<(), TestCaseError> {
    if g.granted == 0 {
        prop_assert_eq!(before, after, "only a grant changes the state");
    } else if alg.leasable() {
        prop_assert!(
            min <= g.granted && g.granted <= max,
            "{g:?} outside {min}..={max}"
        );
    } else {
        prop_assert_eq!(g.granted, min, "all or nothing");
        prop_assert_eq!(g.valid_until, now);
    }
    if g.granted > 0 || min == 0 {
        prop_assert_eq!(g.retry_at, now);
        prop_assert!(g.valid_until >= now);
    } else if g.retry_at == u64::MAX {
        prop_assert!(
            alg != Algorithm::LeakyBucket && min > capacity(alg, q),
            "{g:?}"
        );
    } else {
        // Allowed exactly at the reported time, and not a nanosecond before.
        prop_assert!(g.retry_at > now);
        let at = |t| alg.acquire(q, &mut after.clone(), t, min, min).granted;
        prop_assert_eq!(at(g.retry_at), min, "refused at retry_at");
        prop_assert_eq!(at(g.retry_at - 1), 0, "retry_at is not the earliest");
    }
    check_remaining(alg, q, after, now, g.remaining)?;
    // At `reset` the whole quota is back.
    prop_assert!(g.reset >= now);
    let peek = alg.acquire(q, &mut after.clone(), g.reset, 0, 0);
    prop_assert_eq!(peek.remaining, capacity(alg, q), "not all back at reset");
    Ok(())
}

/// `remaining` is exactly what can still be had at the same instant.
fn check_remaining(
    alg: Algorithm,
    q: &Quota,
    s: &State,
    now: u64,
    rem: u64,
) -> Result<(), TestCaseError> {
    let mut s = s.clone();
    match alg {
        Algorithm::LeakyBucket => {
            for _ in 0..rem {
                prop_assert_eq!(alg.acquire(q, &mut s, now, 1, 1).granted, 1);
            }
            prop_assert_eq!(alg.acquire(q, &mut s, now, 1, 1).granted, 0);
        }
        Algorithm::SlidingWindowLog => {
            let more = rem + 1;
            prop_assert_eq!(alg.acquire(q, &mut s.clone(), now, more, more).granted, 0);
            prop_assert_eq!(alg.acquire(q, &mut s, now, rem, rem).granted, rem);
        }
        _ => {
            let more = rem + 1;
            prop_assert_eq!(alg.acquire(q, &mut s.clone(), now, more, more).granted, 0);
            prop_assert_eq!(alg.acquire(q, &mut s, now, rem, rem).granted, rem);
        }
    }
    Ok(())
}

/// The promise each algorithm's module states, checked on what was admitted.
fn promise(alg: Algorithm, q: &Quota, admitted: &[Admitted]) -> Result<(), TestCaseError> {
    let (l, w) = (q.limit, q.window);
    let sum = |f: &dyn Fn(&Admitted) -> bool| {
        admitted
            .iter()
            .filter(|a| f(a))
            .map(|a| a.permits)
            .sum::<u64>()
    };
    for a in admitted.iter().filter(|a| a.permits > 0) {
        match alg {
            Algorithm::FixedWindow => {
                let in_window = sum(&|b| b.at / w == a.at / w);
                prop_assert!(in_window <= l, "{in_window} in the window of {}", a.at);
            }
            Algorithm::SlidingWindowLog => {
                let in_span = sum(&|b| a.at <= b.at && b.at < a.at + w);
                prop_assert!(in_span <= l, "{in_span} in [{}, +{w})", a.at);
            }
            Algorithm::SlidingWindowCounter => {
                let k = a.at / w;
                let prev = sum(&|b| b.at / w + 1 == k);
                let cur = sum(&|b| b.at / w == k && b.at <= a.at);
                let e = a.at % w;
                let estimate =
                    u128::from(prev) * u128::from(w - e) + u128::from(cur) * u128::from(w);
                prop_assert!(
                    estimate <= u128::from(l) * u128::from(w),
                    "prev {prev} cur {cur} at {}",
                    a.at
                );
            }
            Algorithm::TokenBucket => {
                let t = w.div_ceil(l);
                for b in admitted.iter().filter(|b| b.at >= a.at) {
                    let in_span = sum(&|c| a.at <= c.at && c.at <= b.at);
                    let bound = q.burst + (b.at - a.at) / t;
                    prop_assert!(
                        in_span <= bound,
                        "{in_span} > {bound} in [{}, {}]",
                        a.at,
                        b.at
                    );
                }
            }
            Algorithm::LeakyBucket => {
                let t = w.div_ceil(l);
                let release = a.at + a.delay;
                let next = admitted
                    .iter()
                    .filter(|b| b.permits > 0 && b.at + b.delay > release)
                    .map(|b| b.at + b.delay)
                    .min();
                if let Some(next) = next {
                    prop_assert!(
                        next - release >= a.permits * t,
                        "released {release} then {next}"
                    );
                }
                let same = admitted
                    .iter()
                    .filter(|b| b.permits > 0 && b.at + b.delay == release);
                prop_assert_eq!(same.count(), 1, "two releases at {}", release);
                let waiting = admitted
                    .iter()
                    .filter(|b| b.permits > 0 && b.at <= a.at && b.at + b.delay > a.at)
                    .count() as u64;
                prop_assert!(waiting <= q.queue, "{waiting} waiting at {}", a.at);
            }
        }
    }
    Ok(())
}

/// Workers 0 and 1 lease `cost..=cost + batch` and spend locally while their [`Lease`] allows,
/// giving back what is still usable when they next need more; worker 2 asks for every request.
fn leases(alg: Algorithm, q: &Quota, batch: u64, script: &[(u64, usize, u64)]) -> Vec<Admitted> {
    let mut state = State::default();
    let mut leases = [Lease::default(); 2];
    let mut now = 0;
    let mut spent = Vec::new();
    for &(dt, worker, cost) in script {
        now += dt;
        let spend = Admitted {
            at: now,
            permits: cost,
            delay: 0,
        };
        let Some(lease) = leases.get_mut(worker) else {
            if alg.acquire(q, &mut state, now, cost, cost).granted > 0 {
                spent.push(spend);
            }
            continue;
        };
        if lease.spend(cost, now) {
            spent.push(spend);
            continue;
        }
        alg.return_lease(q, &mut state, now, lease);
        let g = alg.acquire(q, &mut state, now, cost, cost + batch);
        *lease = Lease::of(alg, q, &g, cost, now);
        if g.granted > 0 {
            spent.push(spend);
        }
    }
    spent
}

/// Plain requests from `now` on: every decision, and the time after the last one.
fn takes(alg: Algorithm, q: &Quota, s: &mut State, mut now: u64, ops: &[Op]) -> (Vec<Grant>, u64) {
    let mut grants = Vec::new();
    for op in ops {
        if let Op::Take { dt, min, extra } = *op {
            now += dt;
            grants.push(alg.acquire(q, s, now, min, min + extra));
        }
    }
    (grants, now)
}

#[test]
fn promises_hold_for_every_algorithm() {
    let ops = prop::collection::vec(op(), 1..80);
    proptest!(config(), |(alg in any_algorithm(), q in quota(), start in 0u64..1_000, ops in ops)| {
        promise(alg, &q, &run(alg, &q, start, &ops)?)?;
    });
}

#[test]
fn a_fresh_key_admits_what_fits_at_once() {
    proptest!(config(), |(alg in any_algorithm(), q in quota(), now: u64, want in 1u64..=16)| {
        let g = alg.acquire(&q, &mut State::default(), now, want, want);
        if alg == Algorithm::LeakyBucket || want <= capacity(alg, &q) {
            prop_assert_eq!((g.granted, g.delay), (want, 0));
        } else {
            prop_assert_eq!((g.granted, g.retry_at), (0, u64::MAX));
        }
    });
}

#[test]
fn leases_never_break_the_promise() {
    let leasable = prop::sample::select(LEASABLE.to_vec());
    let script = prop::collection::vec((gap(), 0usize..3, 1u64..=3), 1..100);
    proptest!(config(), |(alg in leasable, q in quota(), batch in 1u64..=6, script in script)| {
        promise(alg, &q, &leases(alg, &q, batch, &script))?;
    });
}

#[test]
fn refund_right_after_a_grant_is_exact() {
    let ops = || prop::collection::vec(take(), 0..30);
    let grant = (1u64..300, 0u64..=4, 0u64..=4, 0u64..300);
    proptest!(config(), |(alg in any_algorithm(), q in quota(), start in 0u64..1_000,
                          prefix in ops(), (dt0, min, extra, dt1) in grant, suffix in ops())| {
        let mut with = State::default();
        let (_, t0) = takes(alg, &q, &mut with, start, &prefix);
        let mut without = with.clone();
        let g = alg.acquire(&q, &mut with, t0 + dt0, min, min + extra);
        alg.refund(&q, &mut with, t0 + dt0 + dt1, t0 + dt0, g.granted + g.held_back);
        let later = t0 + dt0 + dt1;
        prop_assert_eq!(takes(alg, &q, &mut with, later, &suffix), takes(alg, &q, &mut without, later, &suffix));
    });
}

#[test]
fn arbitrary_inputs_never_panic() {
    let quota = (wide(), wide(), wide(), wide());
    let state = (any::<[u64; 3]>(), prop::collection::vec(any::<u64>(), 0..6));
    let calls = prop::collection::vec((wide(), wide(), wide(), any::<bool>(), wide()), 1..20);
    proptest!(config(), |(alg in any_algorithm(), (limit, window, burst, queue) in quota,
                          (words, log) in state, calls in calls)| {
        let q = Quota { limit, window, burst, queue };
        let mut state = State { words, log };
        for (now, min, max, give, at) in calls {
            if give {
                alg.refund(&q, &mut state, now, at, min);
                continue;
            }
            let g = alg.acquire(&q, &mut state, now, min, max);
            prop_assert!(g.granted == 0 || (min <= g.granted && g.granted <= max.max(min)));
            let later = if g.granted > 0 { g.valid_until } else { g.retry_at };
            prop_assert!(later >= now, "{g:?} at {now}");
            let _ = alg.idle_at(&q, &state);
        }
    });
}

/// `available` is what one-permit requests at the same instant would get, one after another.
fn one_by_one(alg: Algorithm, q: &Quota, state: &State, now: u64) -> u64 {
    let q = Quota { queue: 0, ..*q };
    let mut state = state.clone();
    (0..=capacity(alg, &q) + 1)
        .take_while(|_| alg.acquire(&q, &mut state, now, 1, 1).granted == 1)
        .count() as u64
}

#[test]
fn available_and_absorb_agree_with_acquire() {
    let ops = prop::collection::vec(take(), 0..30);
    proptest!(config(), |(alg in any_algorithm(), q in quota(), start in 0u64..1_000, ops in ops,
                          dt in gap(), others in 0u64..=20)| {
        let mut state = State::default();
        let (_, t) = takes(alg, &q, &mut state, start, &ops);
        let now = t + dt;
        let before = alg.available(&q, &state, now);
        prop_assert_eq!(before, one_by_one(alg, &q, &state, now));
        // Permits admitted elsewhere are taken as far as they fit; the bucket is then exactly
        // that much emptier (and never waits in a queue for them).
        let taken = alg.absorb(&q, &mut state, now, others);
        prop_assert_eq!(taken, others.min(before));
        prop_assert_eq!(alg.available(&q, &state, now), before - taken);
    });
}
