//! Unit tests of the policy compiler: defaults, plans, normalisation, and the mistakes the
//! bad-config fixtures (`tests/fixtures/bad-config/`) cannot show with a one-line change.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
use wasm_bindgen_test::wasm_bindgen_test as test;

use serde_json::{Value, json};

use super::*;
use crate::SECOND;

fn compile(config: Value) -> Result<Policy, ConfigError> {
    Policy::from_json(config.to_string().as_bytes())
}

fn error(config: Value) -> String {
    match compile(config) {
        Ok(_) => String::from("accepted"),
        Err(e) => e.to_string(),
    }
}

fn one_rule(rule: Value) -> Value {
    json!({ "rules": [rule] })
}

#[test]
fn the_smallest_configuration_gets_every_default() {
    let policy = compile(json!({ "rules": [] })).unwrap();
    assert!(policy.rules.is_empty());
    let plans: Vec<(&str, u64)> = policy
        .plans
        .iter()
        .map(|p| (p.name.as_str(), p.requests_per_minute))
        .collect();
    assert_eq!(
        plans,
        [("free", 100), ("pro", 1_000), ("enterprise", 10_000)]
    );
    assert_eq!(policy.default_plan, Some(0));
    assert!(policy.tenants.is_empty());
    assert_eq!(
        policy.identity,
        Identity {
            api_key_header: Some("x-api-key".into()),
            jwt: None,
            xff_trusted_hops: 0
        }
    );
    assert_eq!(policy.headers, HeaderStyle::Draft6);
    assert_eq!(policy.error_format, ErrorFormat::Json);
    assert_eq!(policy.failure_mode, FailureMode::Open);
    assert_eq!(policy.sidecar, None);
    assert_eq!(policy.state_slots, 65_536);
}

#[test]
fn a_rule_gets_its_defaults() {
    let config = one_rule(json!({
        "name": "r", "key": ["client_ip"], "algorithm": "token_bucket", "limit": 10, "window": "90s"
    }));
    let rule = compile(config).unwrap().rules.remove(0);
    assert_eq!(rule.window, 90 * SECOND);
    assert_eq!((rule.burst, rule.queue, rule.cost), (None, 0, 1));
    assert_eq!((rule.scope, rule.shadow), (Scope::Local, false));
    assert_eq!(rule.matcher, Match::default());
}

#[test]
fn plans_given_replace_the_defaults_in_their_order() {
    // Written out: `json!` would sort the plans by name.
    let config = r#"{
        "plans": { "starter": { "requests_per_minute": 60 }, "scale": { "requests_per_minute": 6000 } },
        "tenants": { "k1": { "id": "t1", "plan": "scale" } },
        "rules": [{
            "name": "r", "key": ["tenant"], "algorithm": "fixed_window", "window": "1h",
            "limit": { "plan": { "scale": 500 }, "default": 5 }
        }]
    }"#;
    let policy = Policy::from_json(config.as_bytes()).unwrap();
    let names: Vec<&str> = policy.plans.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["starter", "scale"]);
    assert_eq!(policy.default_plan, None, "no plan is named free");
    assert_eq!(policy.tenants["k1"].plan, 1);
    assert_eq!(
        policy.rules[0].limit,
        LimitSpec::PerPlan {
            by_plan: vec![None, Some(500)],
            default: 5
        }
    );
}

#[test]
fn default_plan_names_any_plan() {
    let policy = compile(json!({ "rules": [], "default_plan": "pro" })).unwrap();
    assert_eq!(policy.default_plan, Some(1));
}

#[test]
fn names_are_lower_cased_and_methods_upper_cased() {
    let config = json!({
        "identity": { "api_key_header": "X-API-Key", "jwt": { "header": "X-Token" } },
        "rules": [{
            "name": "r", "key": ["header:X-Org-Id", "claim:Org"], "algorithm": "fixed_window",
            "limit": 5, "window": "1m", "match": { "path_exact": "/v1/Things", "methods": ["get", "Post"] }
        }]
    });
    let policy = compile(config).unwrap();
    assert_eq!(policy.identity.api_key_header.as_deref(), Some("x-api-key"));
    let jwt = policy.identity.jwt.unwrap();
    assert_eq!(
        (
            jwt.header.as_str(),
            jwt.tenant_claim.as_str(),
            jwt.plan_claim
        ),
        ("x-token", "tenant", None)
    );
    let rule = &policy.rules[0];
    assert_eq!(
        rule.key,
        [
            KeyPart::Header("x-org-id".into()),
            KeyPart::Claim("Org".into())
        ]
    );
    assert_eq!(rule.matcher.methods, ["GET", "POST"]);
    assert_eq!(
        rule.matcher.path_exact.as_deref(),
        Some("/v1/Things"),
        "paths keep their case"
    );
}

#[test]
fn null_api_key_header_turns_api_keys_off() {
    let policy = compile(json!({ "rules": [], "identity": { "api_key_header": null } })).unwrap();
    assert_eq!(policy.identity.api_key_header, None);
}

#[test]
fn sidecar_authority_defaults_to_the_cluster() {
    let policy =
        compile(json!({ "rules": [], "sidecar": { "cluster": "127.0.0.1:9090" } })).unwrap();
    assert_eq!(
        policy.sidecar,
        Some(Sidecar {
            cluster: "127.0.0.1:9090".into(),
            authority: "127.0.0.1:9090".into(),
            timeout_ms: 100,
            sync_interval_ms: 200,
            nodes: None,
            token: None,
        })
    );
}

#[test]
fn cost_is_checked_against_each_plan_scaled_to_the_window() {
    let rule = json!({
        "name": "r", "key": ["tenant"], "algorithm": "fixed_window", "limit": "plan", "window": "1s", "cost": 3
    });
    // free: 100/min over 1s = 1 (rounded down, at least 1).
    assert_eq!(
        error(one_rule(rule)),
        "rules[0].cost: 3 is more than plan \"free\"'s limit of 1 per window (no request could ever \
         be admitted: lower the cost or raise the limit)"
    );
}

#[test]
fn sliding_log_is_checked_against_each_plan() {
    let rule = json!({
        "name": "r", "key": ["tenant"], "algorithm": "sliding_window_log", "limit": "plan", "window": "1h"
    });
    assert!(error(one_rule(rule)).starts_with(
        "rules[0].limit: plan \"pro\"'s limit of 60000 per window is more than \
             sliding_window_log can hold"
    ));
}

#[test]
fn plan_limits_need_plans() {
    let rule = json!({ "name": "r", "key": ["tenant"], "algorithm": "fixed_window", "limit": "plan", "window": "1m" });
    let config = json!({ "plans": {}, "rules": [rule] });
    assert_eq!(
        error(config),
        "rules[0].limit: \"plan\" needs at least one plan (define plans, or give a number)"
    );
}

#[test]
fn claims_need_a_jwt() {
    let rule = json!({ "name": "r", "key": ["claim:org"], "algorithm": "fixed_window", "limit": 1, "window": "1m" });
    assert_eq!(
        error(one_rule(rule)),
        "rules[0].key[0]: \"claim:org\" needs identity.jwt to read claims from (configure it, or remove this key part)"
    );
}

#[test]
fn repeated_plans_and_api_keys_are_refused() {
    let plans = r#"{"rules": [], "plans": {"a": {"requests_per_minute": 1}, "a": {"requests_per_minute": 2}}}"#;
    assert_eq!(
        Policy::from_json(plans.as_bytes()).unwrap_err().to_string(),
        "plans.a: given twice (define each plan once)"
    );
    let tenants = r#"{"rules": [], "tenants": {"k": {"id": "a", "plan": "free"}, "k": {"id": "b", "plan": "pro"}}}"#;
    assert_eq!(
        Policy::from_json(tenants.as_bytes())
            .unwrap_err()
            .to_string(),
        "tenants.k: given twice (list each API key once)"
    );
}

#[test]
fn the_document_itself_must_be_a_configuration_object() {
    assert_eq!(
        Policy::from_json(b"  \n").unwrap_err().to_string(),
        "(root): the configuration is empty (it must be a JSON object such as {\"rules\": []})"
    );
    assert_eq!(
        error(json!([])),
        "(root): expected a configuration object such as {\"rules\": []}, found a list"
    );
    assert_eq!(
        Policy::from_json(br#"{"rules": []} x"#)
            .unwrap_err()
            .to_string(),
        "(root): invalid JSON at line 1 column 15: trailing characters"
    );
}

#[test]
fn missing_required_fields_say_what_to_give() {
    let rule =
        json!({ "name": "r", "key": ["client_ip"], "algorithm": "fixed_window", "window": "1m" });
    assert_eq!(
        error(one_rule(rule)),
        "rules[0].limit: missing (use a positive integer, \"plan\", or {\"plan\": {\"<plan>\": n}, \"default\": n})"
    );
    let rule =
        json!({ "name": "r", "key": ["client_ip"], "algorithm": "fixed_window", "limit": 1 });
    assert_eq!(
        error(one_rule(rule)),
        "rules[0].window: missing (give a duration such as \"1s\", \"1m\", \"1h\", \"1d\")"
    );
}

#[test]
fn a_list_is_never_read_as_an_object() {
    // serde's derived structs would take the fields in order from a list.
    let config = json!({ "rules": [], "sidecar": ["tollgate", "tollgate", 100, 200] });
    assert_eq!(error(config), "sidecar: expected an object, found a list");
    let config = json!({ "rules": [["r", ["client_ip"], null, "fixed_window", 1, "1s"]] });
    assert_eq!(error(config), "rules[0]: expected an object, found a list");
}

#[test]
fn keys_in_paths_are_quoted_when_they_would_not_read_as_one_segment() {
    let config =
        json!({ "rules": [], "tenants": { "key.with.dots": { "id": "t", "plan": "gold" } } });
    assert_eq!(
        error(config),
        "tenants.\"key.with.dots\".plan: unknown plan \"gold\" (use one of free, pro, enterprise)"
    );
}

#[test]
fn usage_is_on_with_a_sidecar_and_the_request_log_off_by_default() {
    let sidecar = json!({ "cluster": "tollgate_sidecar" });
    let policy = compile(json!({ "rules": [], "sidecar": sidecar })).unwrap();
    assert_eq!(
        policy.usage,
        Some(Usage {
            interval_ms: 1_000,
            request_log: false
        })
    );
    let config = json!({ "rules": [], "sidecar": sidecar, "usage": { "request_log": true } });
    assert_eq!(
        compile(config).unwrap().usage,
        Some(Usage {
            interval_ms: 1_000,
            request_log: true
        })
    );
    let off = json!({ "rules": [], "sidecar": sidecar, "usage": { "request_log": false } });
    assert!(!compile(off).unwrap().usage.unwrap().request_log);
}

#[test]
fn the_request_log_needs_usage_and_a_boolean() {
    assert_eq!(
        error(json!({ "rules": [], "usage": { "enabled": false, "request_log": true } })),
        "usage.request_log: the request log is sent with usage: turn usage on (a `sidecar` and \
         usage.enabled not false) or set request_log to false"
    );
    assert_eq!(
        error(json!({ "rules": [], "usage": { "request_log": true } })),
        "usage.request_log: the request log is sent with usage: turn usage on (a `sidecar` and \
         usage.enabled not false) or set request_log to false"
    );
    let sidecar = json!({ "cluster": "tollgate_sidecar" });
    assert_eq!(
        error(json!({ "rules": [], "sidecar": sidecar, "usage": { "request_log": "yes" } })),
        "usage.request_log: expected a boolean, found string \"yes\""
    );
}

#[test]
fn the_hash_seed_follows_the_rules_not_the_tenants_nor_the_layout() {
    let rule = json!({ "name": "per-tenant", "key": ["tenant"], "algorithm": "token_bucket",
        "limit": "plan", "window": "1m", "burst": 10 });
    let base = compile(json!({ "rules": [rule.clone()],
        "tenants": { "key-a-0001": { "id": "a", "plan": "free" } } }))
    .unwrap()
    .seed;
    // A new tenant, a plan change, other settings, another layout: the same buckets.
    let grown = json!({ "state_slots": 4096,
        "plans": { "free": { "requests_per_minute": 200 } },
        "tenants": { "key-a-0001": { "id": "a", "plan": "free" },
                     "key-b-0001": { "id": "b", "plan": "free" } },
        "rules": [rule.clone()] });
    assert_eq!(compile(grown.clone()).unwrap().seed, base);
    let pretty = serde_json::to_string_pretty(&grown).unwrap();
    assert_eq!(Policy::from_json(pretty.as_bytes()).unwrap().seed, base);
    let reordered = r#"{"rules": [{"window": "1m", "burst": 10, "limit": "plan",
        "algorithm": "token_bucket", "key": ["tenant"], "name": "per-tenant"}]}"#;
    assert_eq!(Policy::from_json(reordered.as_bytes()).unwrap().seed, base);
    // Other rules: other buckets.
    let mut changed = rule.clone();
    changed["burst"] = json!(20);
    assert_ne!(compile(json!({ "rules": [changed] })).unwrap().seed, base);
    // A key secret decides alone, whatever the rules.
    let secret = "0123456789abcdef0123";
    let with_secret = compile(json!({ "rules": [rule], "key_secret": secret }))
        .unwrap()
        .seed;
    assert_ne!(with_secret, base);
    assert_eq!(
        compile(json!({ "rules": [], "key_secret": secret }))
            .unwrap()
            .seed,
        with_secret
    );
}

#[test]
fn a_short_key_secret_is_refused() {
    assert_eq!(
        error(json!({ "rules": [], "key_secret": "short" })),
        "key_secret: must be 16 to 1024 bytes long (a random string, the same on every node)"
    );
    assert!(error(json!({ "rules": [], "key_secret": 7 })).starts_with("key_secret: "));
}
