#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;

#[test]
fn an_allowance_is_spent_given_back_and_shrinks_after_its_lease() {
    let mut allowances = Allowances::default();
    assert_eq!(allowances.left(1, 0), None);
    allowances.grant(1, Allowance { left: 3, until: 10 }, 0);
    allowances.spend(1, 2, 0);
    assert_eq!(allowances.left(1, 5), Some(1));
    allowances.give_back(1, 1);
    allowances.spend(1, 5, 0);
    assert_eq!(allowances.left(1, 10), Some(0));
    // Past its lease an allowance keeps at most the floor.
    allowances.grant(1, Allowance { left: 7, until: 10 }, 0);
    assert_eq!(allowances.left(1, 10), Some(7));
    assert_eq!(allowances.left(1, 11), Some(IDLE_FLOOR));
    allowances.spend(1, 1, 11);
    assert_eq!(allowances.left(1, 5), Some(0));
    // Another key, and a key with no allowance, are untouched.
    allowances.spend(2, 1, 0);
    assert_eq!(allowances.left(2, 0), None);
}

#[test]
fn a_full_table_drops_lapsed_allowances_then_refuses_new_ones() {
    let mut allowances = Allowances::default();
    for key in 0..MAX_ALLOWANCES as u64 {
        allowances.grant(
            key,
            Allowance {
                left: 1,
                until: key,
            },
            0,
        );
    }
    // At 100 the allowances of keys below 100 lapsed: room is made.
    let late = MAX_ALLOWANCES as u64;
    allowances.grant(
        late,
        Allowance {
            left: 1,
            until: 1 << 40,
        },
        100,
    );
    assert_eq!(allowances.len(), MAX_ALLOWANCES - 100 + 1);
    assert_eq!(allowances.left(late, 100), Some(1));
    // Nothing lapsed yet: a new key is not kept, a known one is replaced.
    let mut full = Allowances::default();
    for key in 0..MAX_ALLOWANCES as u64 {
        full.grant(
            key,
            Allowance {
                left: 1,
                until: 1 << 40,
            },
            0,
        );
    }
    full.grant(
        late,
        Allowance {
            left: 1,
            until: 1 << 40,
        },
        0,
    );
    assert_eq!(full.left(late, 0), None);
    full.grant(
        0,
        Allowance {
            left: 9,
            until: 1 << 40,
        },
        0,
    );
    assert_eq!(full.left(0, 0), Some(9));
}

#[test]
fn the_node_count_is_at_least_one() {
    let mut allowances = Allowances::default();
    assert_eq!(allowances.nodes(), 1);
    allowances.set_nodes(0);
    assert_eq!(allowances.nodes(), 1);
    allowances.set_nodes(3);
    assert_eq!(allowances.nodes(), 3);
}

/// Decisions of a `global` rule on one worker, with and without allowances.
mod decisions {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;
    use crate::SECOND;
    use crate::decision::{Decision, Facts, Verdict, decide};
    use crate::engine::Limiter;
    use crate::engine::testing::MemStore;
    use crate::policy::Policy;

    const NOW: Nanos = 1_000 * SECOND;
    const ALGORITHMS: [&str; 5] = [
        "fixed_window",
        "sliding_window_log",
        "sliding_window_counter",
        "token_bucket",
        "leaky_bucket",
    ];

    fn policy(algorithm: &str, extra: &str) -> Policy {
        let json = format!(
            r#"{{"sidecar": {{"cluster": "c"}}, "rules": [
                {{"name": "g", "key": ["client_ip"], "algorithm": "{algorithm}", "limit": 30,
                  "window": "1h", "scope": "global"}}{extra}]}}"#
        );
        Policy::from_json(json.as_bytes()).unwrap()
    }

    /// How many of `n` requests at `now` the worker admits.
    fn admitted(policy: &Policy, limiter: &mut Limiter, store: &mut MemStore, n: u64) -> u64 {
        let mut out = Decision::default();
        let facts = Facts {
            path: "/",
            method: "GET",
            client_ip: "10.0.0.1",
            ..Facts::default()
        };
        (0..n)
            .filter(|_| {
                decide(policy, 1, limiter, store, &facts, NOW, &mut out);
                out.verdict == Verdict::Admit
            })
            .count() as u64
    }

    fn key(policy: &Policy, limiter: &mut Limiter) -> u64 {
        let mut out = Decision::default();
        let facts = Facts {
            path: "/",
            method: "GET",
            client_ip: "10.0.0.1",
            ..Facts::default()
        };
        decide(
            policy,
            1,
            limiter,
            &mut MemStore::default(),
            &facts,
            NOW,
            &mut out,
        );
        out.results[0].ask.key
    }

    #[test]
    fn an_unsynced_bucket_starts_from_the_node_share_on_every_algorithm() {
        for algorithm in ALGORITHMS {
            let policy = policy(algorithm, "");
            let mut limiter = Limiter::new(1024, 64);
            limiter.allowances.set_nodes(3);
            let mut store = MemStore::default();
            let got = admitted(&policy, &mut limiter, &mut store, 40);
            // The leaky bucket lets one through at a time (no queue); the others a third of 30.
            let expected = if algorithm == "leaky_bucket" { 1 } else { 10 };
            assert_eq!(got, expected, "{algorithm}");
            // With an allowance the whole quota counts what the starter share spent alike (a
            // token bucket's rate is not divided): the rest of the 30.
            let key = key(&policy, &mut limiter);
            let until = NOW + SECOND;
            limiter.allow(key, Allowance { left: 100, until }, NOW);
            let more = admitted(&policy, &mut limiter, &mut store, 40);
            let rest = if algorithm == "leaky_bucket" { 0 } else { 20 };
            assert_eq!(more, rest, "{algorithm}");
        }
    }

    #[test]
    fn an_allowance_opens_the_whole_quota_and_caps_it_on_every_algorithm() {
        for algorithm in ALGORITHMS {
            let policy = policy(algorithm, "");
            let mut limiter = Limiter::new(1024, 64);
            limiter.allowances.set_nodes(3);
            let key = key(&policy, &mut limiter);
            let until = NOW + SECOND;
            limiter.allow(key, Allowance { left: 20, until }, NOW);
            let mut store = MemStore::default();
            let got = admitted(&policy, &mut limiter, &mut store, 40);
            let expected = if algorithm == "leaky_bucket" { 1 } else { 20 };
            assert_eq!(
                got, expected,
                "{algorithm}: the allowance, beyond the node share"
            );
            assert_eq!(limiter.allowances.left(key, NOW), Some(20 - expected));
        }
    }

    #[test]
    fn a_spent_allowance_refuses_and_reports_what_it_leaves() {
        let policy = policy("fixed_window", "");
        let mut limiter = Limiter::new(1024, 64);
        let key = key(&policy, &mut limiter);
        let until = NOW + 3 * SECOND / 2;
        limiter.allow(key, Allowance { left: 2, until }, NOW);
        let mut out = Decision::default();
        let facts = Facts {
            path: "/",
            method: "GET",
            client_ip: "10.0.0.1",
            ..Facts::default()
        };
        let mut store = MemStore::default();
        decide(&policy, 1, &mut limiter, &mut store, &facts, NOW, &mut out);
        assert_eq!(out.verdict, Verdict::Admit);
        assert_eq!(
            out.results[0].outcome.remaining, 1,
            "capped by the allowance"
        );
        decide(&policy, 1, &mut limiter, &mut store, &facts, NOW, &mut out);
        decide(&policy, 1, &mut limiter, &mut store, &facts, NOW, &mut out);
        assert_eq!(out.verdict, Verdict::Refuse(1));
        assert!(out.results[0].refused);
        // A new allowance lifts the refusal at once.
        limiter.allow(key, Allowance { left: 1, until }, NOW);
        decide(&policy, 1, &mut limiter, &mut store, &facts, NOW, &mut out);
        assert_eq!(out.verdict, Verdict::Admit);
    }

    #[test]
    fn a_request_another_rule_refuses_gives_its_allowance_back() {
        let local = r#", {"name": "l", "key": ["client_ip"], "algorithm": "fixed_window",
                         "limit": 1, "window": "1h"}"#;
        let policy = policy("fixed_window", local);
        let mut limiter = Limiter::new(1024, 64);
        let key = key(&policy, &mut limiter);
        limiter.allow(
            key,
            Allowance {
                left: 5,
                until: NOW + SECOND,
            },
            NOW,
        );
        let got = admitted(&policy, &mut limiter, &mut MemStore::default(), 3);
        assert_eq!(got, 1);
        assert_eq!(limiter.allowances.left(key, NOW), Some(4));
    }

    #[test]
    fn a_silent_sidecar_ignores_allowances() {
        let policy = policy("fixed_window", "");
        let mut limiter = Limiter::new(1024, 64);
        let key = key(&policy, &mut limiter);
        limiter.allow(
            key,
            Allowance {
                left: 25,
                until: NOW + SECOND,
            },
            NOW,
        );
        let mut out = Decision {
            global_share: 3,
            ..Decision::default()
        };
        let facts = Facts {
            path: "/",
            method: "GET",
            client_ip: "10.0.0.1",
            ..Facts::default()
        };
        let mut store = MemStore::default();
        let mut got = 0;
        for _ in 0..30 {
            decide(&policy, 1, &mut limiter, &mut store, &facts, NOW, &mut out);
            got += u64::from(out.verdict == Verdict::Admit);
        }
        assert_eq!(got, 10);
        assert_eq!(limiter.allowances.left(key, NOW), Some(25));
    }
}
