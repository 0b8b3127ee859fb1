#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
use wasm_bindgen_test::wasm_bindgen_test as test;

use super::*;
use crate::engine::testing::MemStore;

const NOW: Nanos = 1_000 * SECOND;

/// A worker's limiter, an empty node store and a decision buffer.
fn fresh() -> (Limiter, MemStore, Decision) {
    (
        Limiter::new(1024, 64),
        MemStore::default(),
        Decision::default(),
    )
}

fn policy(json: &str) -> Policy {
    Policy::from_json(json.as_bytes()).unwrap()
}

const TWO_RULES: &str = r#"{
  "tenants": {"k1": {"id": "t1", "plan": "free"}, "k2": {"id": "t2", "plan": "pro"}},
  "rules": [
    {"name": "per-ip", "key": ["client_ip"], "algorithm": "fixed_window", "limit": 5, "window": "1m"},
    {"name": "per-tenant", "key": ["tenant"], "algorithm": "sliding_window_log", "limit": "plan", "window": "1m"},
    {"name": "search", "key": ["tenant"], "match": {"path_prefix": "/search"}, "algorithm": "fixed_window",
     "limit": 1, "window": "1m", "shadow": true}
  ]
}"#;

fn facts<'a>(tenant: Option<&'a str>, plan: Option<PlanId>, path: &'a str) -> Facts<'a> {
    Facts {
        path,
        method: "GET",
        client_ip: "10.0.0.1",
        tenant,
        plan,
        ..Facts::default()
    }
}

#[test]
fn a_refused_request_consumes_nothing_in_the_other_rules() {
    let policy = policy(TWO_RULES);
    let (mut limiter, mut store, mut out) = fresh();
    // The free plan allows 100 a minute per tenant; the IP allows 5: the sixth request is
    // refused by per-ip, and per-tenant must not have counted it.
    for _ in 0..5 {
        decide(
            &policy,
            1,
            &mut limiter,
            &mut store,
            &facts(Some("t1"), Some(0), "/"),
            NOW,
            &mut out,
        );
        assert_eq!(out.verdict, Verdict::Admit);
    }
    decide(
        &policy,
        1,
        &mut limiter,
        &mut store,
        &facts(Some("t1"), Some(0), "/"),
        NOW,
        &mut out,
    );
    assert!(
        matches!(out.verdict, Verdict::Refuse(_)),
        "{:?}",
        out.verdict
    );
    // Another address of the same tenant: per-tenant has exactly 95 left.
    let other = Facts {
        client_ip: "10.0.0.2",
        ..facts(Some("t1"), Some(0), "/")
    };
    decide(&policy, 1, &mut limiter, &mut store, &other, NOW, &mut out);
    let tenant = out.results.iter().find(|r| r.rule == 1).unwrap();
    assert_eq!(tenant.outcome.remaining, 94);
}

#[test]
fn anonymous_requests_skip_rules_keyed_by_tenant() {
    let policy = policy(TWO_RULES);
    let (mut limiter, mut store, mut out) = fresh();
    decide(
        &policy,
        1,
        &mut limiter,
        &mut store,
        &facts(None, None, "/search"),
        NOW,
        &mut out,
    );
    assert_eq!(
        out.results.iter().map(|r| r.rule).collect::<Vec<_>>(),
        vec![0]
    );
}

#[test]
fn shadow_rules_never_refuse() {
    let policy = policy(TWO_RULES);
    let (mut limiter, mut store, mut out) = fresh();
    for i in 0..3 {
        decide(
            &policy,
            1,
            &mut limiter,
            &mut store,
            &facts(Some("t2"), Some(1), "/search"),
            NOW,
            &mut out,
        );
        assert_eq!(out.verdict, Verdict::Admit);
        let shadow = out.results.iter().find(|r| r.rule == 2).unwrap();
        assert_eq!(shadow.outcome.admitted, i == 0);
        assert!(!shadow.refused);
    }
}

#[test]
fn plan_limits_scale_to_the_window() {
    let policy = policy(TWO_RULES);
    let rule = &policy.rules[1];
    assert_eq!(quota(&policy, rule, Some(0)).limit, 100);
    assert_eq!(quota(&policy, rule, Some(1)).limit, 1000);
    // An unknown plan falls back to the default plan (free).
    assert_eq!(quota(&policy, rule, None).limit, 100);
}

#[test]
fn strict_rules_follow_the_failure_mode_without_a_sidecar() {
    let closed = policy(
        r#"{"failure_mode": "closed", "rules": [{"name": "s", "key": ["client_ip"],
            "algorithm": "fixed_window", "limit": 5, "window": "1m", "scope": "strict"}]}"#,
    );
    let (mut limiter, mut store, mut out) = fresh();
    decide(
        &closed,
        1,
        &mut limiter,
        &mut store,
        &facts(None, None, "/"),
        NOW,
        &mut out,
    );
    assert_eq!(out.verdict, Verdict::Unavailable(0));
    let open = policy(&TWO_RULES.replace(
        "\"window\": \"1m\"}",
        "\"window\": \"1m\", \"scope\": \"strict\"}",
    ));
    decide(
        &open,
        1,
        &mut limiter,
        &mut store,
        &facts(None, None, "/"),
        NOW,
        &mut out,
    );
    assert_eq!(out.verdict, Verdict::Admit);
}

#[test]
fn keys_differ_by_rule_and_by_value() {
    let policy = policy(TWO_RULES);
    let a = bucket_key(1, 0, &policy.rules[0], &facts(None, None, "/"));
    let b = bucket_key(
        1,
        0,
        &policy.rules[0],
        &Facts {
            client_ip: "10.0.0.2",
            ..facts(None, None, "/")
        },
    );
    let c = bucket_key(1, 1, &policy.rules[0], &facts(None, None, "/"));
    assert!(a != b && a != c && b != c);
    assert_eq!(
        bucket_key(1, 1, &policy.rules[1], &facts(None, None, "/")),
        None
    );
}

const STRICT_WITH_SIDECAR: &str = r#"{
  "sidecar": {"cluster": "tollgate_sidecar"}, "failure_mode": "closed",
  "rules": [
    {"name": "per-ip", "key": ["client_ip"], "algorithm": "fixed_window", "limit": 1, "window": "1m"},
    {"name": "exact", "key": ["client_ip"], "algorithm": "token_bucket", "limit": 5, "window": "1m",
     "burst": 7, "scope": "strict"}
  ]
}"#;

#[test]
fn strict_rules_with_a_sidecar_are_left_pending() {
    let policy = policy(STRICT_WITH_SIDECAR);
    let (mut limiter, mut store, mut out) = fresh();
    let facts = facts(None, None, "/");
    decide(&policy, 1, &mut limiter, &mut store, &facts, NOW, &mut out);
    assert_eq!(out.verdict, Verdict::Admit);
    assert_eq!(out.results.len(), 1);
    assert_eq!(out.pending.len(), 1);
    let check = &out.pending[0];
    assert_eq!(check.rule, 1);
    assert_eq!(check.request.rule, "exact");
    assert_eq!(check.request.key, check.ask.key);
    assert_eq!(check.request.algorithm, WireAlgorithm::TokenBucket);
    assert_eq!(check.request.limit, 5);
    assert_eq!(check.request.window_ns, 60 * SECOND);
    assert_eq!(check.request.burst, Some(7));
    assert_eq!(check.request.cost, 1);
    assert_eq!(check.request.quota().unwrap(), check.ask.quota);

    // The local rule refuses the second request: nothing is left for the sidecar.
    decide(&policy, 1, &mut limiter, &mut store, &facts, NOW, &mut out);
    assert!(matches!(out.verdict, Verdict::Refuse(_)));
    assert!(out.pending.is_empty());
}

#[test]
fn a_silent_sidecar_cuts_global_rules_to_the_node_share() {
    let policy = policy(
        r#"{"sidecar": {"cluster": "c"}, "rules": [
            {"name": "g", "key": ["client_ip"], "algorithm": "fixed_window", "limit": 9, "window": "1h", "scope": "global"},
            {"name": "l", "key": ["client_ip"], "algorithm": "fixed_window", "limit": 9, "window": "1h"}]}"#,
    );
    let (mut limiter, mut store, mut out) = fresh();
    out.global_share = 3;
    let mut admitted = 0;
    for _ in 0..9 {
        decide(
            &policy,
            1,
            &mut limiter,
            &mut store,
            &facts(None, None, "/"),
            NOW,
            &mut out,
        );
        if out.verdict == Verdict::Admit {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 3);
    let global = &out.results[0];
    assert_eq!((global.ask.quota.limit, global.configured.limit), (3, 9));
    assert_eq!(out.results[1].ask.quota, out.results[1].configured);
}
