//! Following the registry, against the strict mock host: feeds applied in version order,
//! the sidecar away, and what the registry makes of a request (401, 403, quota 429, plans).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
use wasm_bindgen_test::wasm_bindgen_test as test;

use serde_json::{Value, json};

use crate::SECOND;
use crate::registry::table::sha256;
use crate::worker::mock::{MockHost, Node};
use crate::worker::request::Action;

const SIDECAR: &str = r#""sidecar": {"cluster": "sidecar", "timeout_ms": 100, "token": "node-secret"}, "usage": {"enabled": false}"#;
/// Now, in Unix seconds, on the mock host.
const NOW: u64 = 1_000;

fn hex(key: &str) -> String {
    sha256(key).iter().map(|b| format!("{b:02x}")).collect()
}

/// A node whose one rule limits each tenant to its plan's rate per minute.
fn node(extra: &str) -> Node {
    let config = format!(
        r#"{{ {SIDECAR}, {extra} "plans": {{"free": {{"requests_per_minute": 2}}}},
             "rules": [{{"name": "per-tenant", "key": ["tenant"], "algorithm": "fixed_window",
                         "limit": "plan", "window": "1m"}}] }}"#
    );
    Node::new(MockHost::default(), &config)
}

/// Ticks, answers the registry call with `feed` (status 200) and returns the call's path.
fn feed(node: &mut Node, status: u16, feed: &Value) -> String {
    node.host.now += 1_100_000_000;
    node.tick();
    let call = node
        .host
        .calls
        .iter()
        .find(|c| c.path.starts_with("/v1/registry"))
        .cloned()
        .expect("a registry call");
    assert_eq!(call.method, "GET");
    assert!(call.body.is_empty());
    assert_eq!(call.authorization.as_deref(), Some("Bearer node-secret"));
    node.answer(call.token, status, &feed.to_string());
    call.path
}

fn plan(name: &str, rpm: u64, quota: Option<u64>, overage: &str) -> Value {
    json!({"name": name, "requests_per_minute": rpm, "burst": null,
           "monthly_quota": quota, "overage": overage})
}

fn tenant(id: &str, plan: &str, status: &str, exhausted: bool) -> Value {
    json!({"id": id, "plan": plan, "status": status, "period_start": NOW - 100,
           "period_end": NOW + 3_600, "quota_exhausted": exhausted})
}

fn key(plain: &str, tenant: &str, expires_at: Option<u64>) -> Value {
    json!({"sha256": hex(plain), "tenant": tenant, "expires_at": expires_at})
}

fn full(version: u64, plans: Value, tenants: Value, keys: Value) -> Value {
    json!({"version": version, "full": true, "plans": plans, "tenants": tenants, "keys": keys})
}

/// Sends a request with API key `key`; the status of the filter's reply (200: forwarded) and
/// its headers and body.
fn send(node: &mut Node, id: u32, key: &str) -> (u32, Vec<(String, String)>, String) {
    let action = node.request(
        id,
        &[(":path", "/"), (":method", "GET"), ("x-api-key", key)],
    );
    let log = node.log(id);
    let result = match (action, log.reply) {
        (Action::Continue, None) => {
            node.finish(id);
            (200, node.log(id).response_headers, String::new())
        }
        (Action::Pause, Some((status, headers, body))) => {
            node.finish(id);
            (status, headers, String::from_utf8(body).unwrap())
        }
        other => panic!("request {id}: {other:?}"),
    };
    assert!(
        node.host.violations.is_empty(),
        "{:?}",
        node.host.violations
    );
    result
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn acme(version: u64, rpm: u64) -> Value {
    full(
        version,
        json!([plan("pro", rpm, Some(1_000), "block")]),
        json!([tenant("acme", "pro", "active", false)]),
        json!([key("k1", "acme", None)]),
    )
}

#[test]
fn a_new_key_works_with_its_plan_and_a_revoked_one_stops() {
    let mut node = node(r#""registry": {"unknown_key": "reject"},"#);
    assert_eq!(
        node.host.tick_periods,
        vec![1_000],
        "one tick period (the interval), set once"
    );
    assert_eq!(send(&mut node, 10, "k1").0, 401, "not known yet");
    assert_eq!(feed(&mut node, 200, &acme(5, 600)), "/v1/registry?since=0");
    let (status, headers, _) = send(&mut node, 11, "k1");
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "ratelimit-limit"),
        Some("600"),
        "{headers:?}"
    );

    // A delta: the plan upgraded, a second key, the first revoked.
    let delta = json!({"version": 6, "full": false,
        "plans": [plan("pro", 900, Some(1_000), "block")],
        "keys": [key("k2", "acme", None)], "removed_keys": [hex("k1")]});
    assert_eq!(feed(&mut node, 200, &delta), "/v1/registry?since=5");
    assert_eq!(send(&mut node, 12, "k1").0, 401, "revoked");
    let (status, headers, _) = send(&mut node, 13, "k2");
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "ratelimit-limit"), Some("900"), "upgraded");
    assert_eq!(
        feed(&mut node, 200, &json!({"version": 6, "full": false})),
        "/v1/registry?since=6"
    );
    assert_eq!(node.host.timers, 1);
}

#[test]
fn the_sidecar_away_keeps_the_last_registry() {
    let mut node = node("");
    feed(&mut node, 200, &acme(5, 600));
    feed(&mut node, 0, &json!(null));
    feed(&mut node, 503, &json!({"error": "down"}));
    feed(&mut node, 200, &json!("not a feed"));
    let (status, headers, _) = send(&mut node, 10, "k1");
    assert_eq!(
        (status, header(&headers, "ratelimit-limit")),
        (200, Some("600"))
    );
    // Still asks from the version it has.
    assert_eq!(feed(&mut node, 0, &json!(null)), "/v1/registry?since=5");
    node.host.now += 2 * SECOND;
    node.tick();
    let failures = node
        .host
        .counters
        .iter()
        .find(|(n, _)| n == "tollgate.registry.failures");
    assert_eq!(failures.map(|(_, v)| *v), Some(4));
}

#[test]
fn an_expired_key_stops_working() {
    let mut node = node(r#""registry": {"unknown_key": "reject"},"#);
    let feed_value = full(
        1,
        json!([plan("pro", 600, None, "block")]),
        json!([tenant("acme", "pro", "active", false)]),
        json!([key("k1", "acme", Some(NOW + 5))]),
    );
    feed(&mut node, 200, &feed_value);
    assert_eq!(send(&mut node, 10, "k1").0, 200);
    node.host.now = (NOW + 5) * SECOND;
    assert_eq!(send(&mut node, 11, "k1").0, 401, "expires_at reached");
}

#[test]
fn unknown_keys_are_anonymous_by_default() {
    let mut node = node("");
    feed(&mut node, 200, &acme(1, 600));
    let (status, headers, _) = send(&mut node, 10, "nobody");
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "ratelimit-limit"),
        None,
        "no tenant: the rule does not apply"
    );
}

#[test]
fn invalid_key_reply() {
    let mut node = node(r#""registry": {"unknown_key": "reject"},"#);
    let (status, headers, body) = send(&mut node, 10, "nobody");
    assert_eq!(status, 401);
    assert_eq!(header(&headers, "content-type"), Some("application/json"));
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"], "invalid_api_key");
}

#[test]
fn a_suspended_tenant_gets_403() {
    let mut node = node("");
    let feed_value = full(
        1,
        json!([plan("pro", 600, None, "block")]),
        json!([tenant("acme", "pro", "suspended", false)]),
        json!([key("k1", "acme", None)]),
    );
    feed(&mut node, 200, &feed_value);
    let (status, headers, body) = send(&mut node, 10, "k1");
    assert_eq!(status, 403);
    assert_eq!(header(&headers, "ratelimit-limit"), None);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (body["error"].as_str(), body["tenant"].as_str()),
        (Some("tenant_suspended"), Some("acme"))
    );
}

#[test]
fn a_used_up_quota_gets_429_until_the_period_ends_unless_billed() {
    let mut node = node(r#""headers": "draft-8","#);
    let feed_value = full(
        1,
        json!([
            plan("pro", 600, Some(1_000), "block"),
            plan("metered", 600, Some(1_000), "bill")
        ]),
        json!([
            tenant("acme", "pro", "active", true),
            tenant("beta", "metered", "active", true)
        ]),
        json!([key("k1", "acme", None), key("k2", "beta", None)]),
    );
    feed(&mut node, 200, &feed_value);
    let now = node.host.now / SECOND;
    let (status, headers, body) = send(&mut node, 10, "k1");
    assert_eq!(status, 429);
    let retry = NOW + 3_600 - now;
    assert_eq!(
        header(&headers, "retry-after"),
        Some(retry.to_string().as_str())
    );
    assert_eq!(
        header(&headers, "ratelimit-policy"),
        Some("\"quota\";q=1000;w=3700"),
        "{headers:?}"
    );
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["error"], "quota_exceeded");
    assert_eq!(body["retryAfter"], retry);
    assert_eq!(body["quota"], 1_000);
    assert_eq!(
        send(&mut node, 11, "k2").0,
        200,
        "overage: bill is never refused"
    );
    node.host.now = (NOW + 3_600) * SECOND;
    assert_eq!(send(&mut node, 12, "k1").0, 200, "the next period");
}

#[test]
fn static_hashed_keys_and_the_registry_winning_over_them() {
    let extra = format!(
        r#""tenants": {{"sha256:{}": {{"id": "acme", "plan": "free"}},
                        "plain": {{"id": "solo", "plan": "free"}}}},"#,
        hex("k-static")
    );
    let mut node = node(&extra);
    let (status, headers, _) = send(&mut node, 10, "k-static");
    assert_eq!(
        (status, header(&headers, "ratelimit-limit")),
        (200, Some("2"))
    );
    assert_eq!(send(&mut node, 11, "plain").0, 200);
    // The registry knows tenant acme, on plan free with another rate: it wins.
    let feed_value = full(
        1,
        json!([plan("free", 50, None, "block")]),
        json!([tenant("acme", "free", "active", false)]),
        json!([]),
    );
    feed(&mut node, 200, &feed_value);
    let (status, headers, _) = send(&mut node, 12, "k-static");
    assert_eq!(
        (status, header(&headers, "ratelimit-limit")),
        (200, Some("50"))
    );
}

#[test]
fn every_sidecar_call_carries_the_node_token() {
    let config = r#"{ "sidecar": {"cluster": "sidecar", "token": "node-secret"}, "usage": {"interval_ms": 500},
             "tenants": {"k": {"id": "t", "plan": "free"}}, "rules": [{"name": "g", "key": ["client_ip"], "algorithm": "fixed_window", "limit": 10,
                         "window": "1m", "scope": "global"}] }"#;
    let mut node = Node::new(MockHost::default(), config);
    node.request(
        10,
        &[(":path", "/"), (":method", "GET"), ("x-api-key", "k")],
    );
    node.finish(10);
    for _ in 0..5 {
        node.host.now += SECOND;
        node.tick();
    }
    let paths: Vec<&str> = node.host.calls.iter().map(|c| c.path.as_str()).collect();
    for prefix in ["/v1/sync", "/v1/usage", "/v1/registry"] {
        assert!(
            paths.iter().any(|p| p.starts_with(prefix)),
            "{prefix}: {paths:?}"
        );
    }
    for call in &node.host.calls {
        assert_eq!(
            call.authorization.as_deref(),
            Some("Bearer node-secret"),
            "{}",
            call.path
        );
    }
}

#[test]
fn a_registry_plan_sets_the_burst_of_plan_limited_token_buckets() {
    let config = format!(
        r#"{{ {SIDECAR}, "plans": {{"free": {{"requests_per_minute": 60}}}},
             "rules": [{{"name": "tb", "key": ["tenant"], "algorithm": "token_bucket",
                         "limit": "plan", "window": "1m", "burst": 2}}] }}"#
    );
    let mut node = Node::new(MockHost::default(), &config);
    let feed_value = full(
        1,
        json!([{"name": "pro", "requests_per_minute": 60, "burst": 5,
                "monthly_quota": null, "overage": "block"}]),
        json!([tenant("acme", "pro", "active", false)]),
        json!([key("k1", "acme", None)]),
    );
    feed(&mut node, 200, &feed_value);
    let admitted = (10..20)
        .filter(|&id| send(&mut node, id, "k1").0 == 200)
        .count();
    assert_eq!(admitted, 5, "the plan's burst, not the rule's 2");
}

#[test]
fn a_call_the_host_never_answers_does_not_stop_the_following() {
    let mut node = node("");
    node.host.now += 1_100_000_000;
    node.tick();
    assert_eq!(registry_calls(&node), 1);
    // Lost: no answer. Calls out wait their timeout (at least 5 s) twice over, then go again.
    for _ in 0..9 {
        node.host.now += SECOND;
        node.tick();
    }
    assert_eq!(registry_calls(&node), 1, "one call out at a time");
    node.host.now += 2 * SECOND;
    node.tick();
    assert_eq!(registry_calls(&node), 2, "the lost call given up");
    // The stats report (every 10 s) is not the registry's: answer it out of the way.
    node.host
        .calls
        .retain(|c| c.path.starts_with("/v1/registry"));
    node.host.calls.remove(0);
    let path = feed(&mut node, 200, &acme(3, 600));
    assert_eq!(path, "/v1/registry?since=0");
    let (status, headers, _) = send(&mut node, 10, "k1");
    assert_eq!(
        (status, header(&headers, "ratelimit-limit")),
        (200, Some("600"))
    );
}

/// The registry calls out.
fn registry_calls(node: &Node) -> usize {
    node.host
        .calls
        .iter()
        .filter(|c| c.path.starts_with("/v1/registry"))
        .count()
}

#[test]
fn an_upgrade_admits_at_once_a_tenant_refused_under_the_old_plan() {
    let config = format!(
        r#"{{ {SIDECAR}, "rules": [{{"name": "tb", "key": ["tenant"], "algorithm": "token_bucket",
                                     "limit": "plan", "window": "1m"}}] }}"#
    );
    let mut node = Node::new(MockHost::default(), &config);
    feed(&mut node, 200, &acme(1, 5));
    let statuses: Vec<u32> = (10..16).map(|id| send(&mut node, id, "k1").0).collect();
    assert_eq!(
        statuses,
        [200, 200, 200, 200, 200, 429],
        "5 a minute: the next in 12 s"
    );
    // 1.1 s later the plan allows one request every 60 ms: the refusal made under the old plan
    // (remembered until its retry time) must not outlive it.
    feed(
        &mut node,
        200,
        &json!({"version": 2, "full": false,
                                 "plans": [plan("pro", 1_000, Some(1_000), "block")]}),
    );
    assert_eq!(
        send(&mut node, 20, "k1").0,
        200,
        "admitted under the upgraded plan"
    );
}
