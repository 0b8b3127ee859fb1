//! The worker against the strict mock host: the host rules of ngx_wasm_module and Envoy's
//! quirks, which only a real proxy used to exercise.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use super::mock::{MockHost, Node};
use super::request::Action;
use crate::SECOND;

#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
use wasm_bindgen_test::wasm_bindgen_test as test;

const SIDECAR: &str = r#""sidecar": {"cluster": "127.0.0.1:9", "authority": "sidecar", "timeout_ms": 100, "sync_interval_ms": 200}"#;

fn config(extra: &str, rules: &str) -> String {
    format!(r#"{{ {extra} "rules": [{rules}] }}"#)
}

fn rule(name: &str, key: &str, limit: u64, scope: &str) -> String {
    format!(
        r#"{{"name": "{name}", "key": [{key}], "algorithm": "fixed_window", "limit": {limit}, "window": "1m", "scope": "{scope}"}}"#
    )
}

fn no_violations(node: &Node) {
    assert!(
        node.host.violations.is_empty(),
        "host rules broken: {:#?}",
        node.host.violations
    );
}

#[test]
fn an_idle_worker_arms_one_timer_and_never_another() {
    let config = config(
        &format!(r#"{SIDECAR}, "usage": {{"interval_ms": 500}},"#),
        &rule("g", r#""client_ip""#, 100, "global"),
    );
    let mut node = Node::new(MockHost::default(), &config);
    for _ in 0..100 {
        node.host.now += 50_000_000;
        node.tick();
        // Answer whatever the tick sent (sync heartbeats), as a sidecar that is gone.
        for call in node.host.calls.clone() {
            node.answer(call.token, 0, "");
        }
    }
    no_violations(&node);
    assert_eq!(
        node.host.timers, 1,
        "timers armed: {:?}",
        node.host.tick_periods
    );
}

fn strict_node(host: MockHost) -> Node {
    let config = config(
        &format!("{SIDECAR},"),
        &rule("s", r#""client_ip""#, 100, "strict"),
    );
    Node::new(host, &config)
}

const ADMIT: &str = r#"{"admitted": true, "remaining": 5, "reset_after_ns": 1000000000, "retry_after_ns": 0, "delay_ns": 0}"#;
const REFUSE: &str = r#"{"admitted": false, "remaining": 0, "reset_after_ns": 1000000000, "retry_after_ns": 2000000000, "delay_ns": 0}"#;

/// Answers every call out (a batch gets one answer per check) until none is left, the
/// host delivering the root's wake-ups first (as Envoy does, soon after they are asked for).
fn answer_everything(node: &mut Node, answer: &str) {
    for _ in 0..100 {
        node.wake();
        let calls = node.host.calls.clone();
        if calls.is_empty() {
            node.host.now += 2_000_000;
            node.tick();
            if node.host.calls.is_empty() {
                return;
            }
            continue;
        }
        for call in calls {
            let body = if call.path.ends_with("/checks") {
                let n = serde_json::from_slice::<serde_json::Value>(&call.body).unwrap()["checks"]
                    .as_array()
                    .unwrap()
                    .len();
                format!(r#"{{"results": [{}]}}"#, vec![answer; n].join(","))
            } else {
                answer.to_owned()
            };
            node.answer(call.token, 200, &body);
        }
    }
}

#[test]
fn strict_answers_never_set_the_tick_from_a_request() {
    let mut node = strict_node(MockHost::default());
    // A worker that has run a while: its next tick is a second away.
    node.host.now += 10_000_000;
    node.tick();
    for id in 10..13 {
        assert_eq!(node.request(id, &[(":path", "/")]), Action::Pause);
    }
    answer_everything(&mut node, ADMIT);
    no_violations(&node);
}

#[test]
fn simultaneous_strict_requests_are_each_resumed_from_their_own_callback() {
    let mut node = strict_node(MockHost::default());
    let ids: Vec<u32> = (10..22).collect();
    for &id in &ids {
        assert_eq!(node.request(id, &[(":path", "/")]), Action::Pause);
    }
    answer_everything(&mut node, ADMIT);
    no_violations(&node);
    for &id in &ids {
        assert_eq!(node.log(id).resumed, 1, "request {id} was not resumed once");
    }
}

#[test]
fn simultaneous_strict_refusals_are_answered_from_their_own_callback() {
    let mut node = strict_node(MockHost::default());
    for id in 10..22 {
        node.request(id, &[(":path", "/")]);
    }
    answer_everything(&mut node, REFUSE);
    no_violations(&node);
    for id in 10..22 {
        let reply = node.log(id).reply.map(|r| r.0);
        assert_eq!(reply, Some(429), "request {id}");
    }
}

fn queue_config() -> String {
    config(
        "",
        r#"{"name": "drip", "key": ["client_ip"], "algorithm": "leaky_bucket", "limit": 5, "window": "1s", "queue": 10, "scope": "local"}"#,
    )
}

#[test]
fn where_a_request_cannot_be_resumed_from_the_tick_a_leaky_bucket_refuses_instead_of_queueing() {
    let mut node = Node::new(MockHost::default(), &queue_config());
    for id in 10..14 {
        node.host
            .properties
            .insert((id, "source.address".into()), b"192.0.2.1:4000".to_vec());
    }
    assert_eq!(node.request(10, &[(":path", "/")]), Action::Continue);
    for id in 11..14 {
        assert_eq!(node.request(id, &[(":path", "/")]), Action::Pause);
        let reply = node.log(id).reply.map(|r| r.0);
        assert_eq!(reply, Some(429), "request {id} is refused, not held");
    }
    for _ in 0..50 {
        node.host.now += 10_000_000;
        node.tick();
    }
    no_violations(&node);
    no_violations_host(&node.host);
}

fn no_violations_host(host: &MockHost) {
    assert!(host.violations.is_empty(), "{:#?}", host.violations);
}

#[test]
fn on_envoy_queued_requests_leave_from_the_tick_through_their_context() {
    let host = MockHost {
        lenient: true,
        ..MockHost::default()
    };
    let mut node = Node::new(host, &queue_config());
    let peer = |node: &mut Node, id| {
        node.host
            .properties
            .insert((id, "source.address".into()), b"192.0.2.1:4000".to_vec());
    };
    let mut paused = Vec::new();
    for id in 10..14 {
        peer(&mut node, id);
        if node.request(id, &[(":path", "/")]) == Action::Pause {
            paused.push(id);
        }
    }
    assert_eq!(paused.len(), 3, "one leaves at once, three wait");
    for _ in 0..200 {
        node.host.now += 10_000_000;
        node.tick();
    }
    no_violations(&node);
    for id in paused {
        assert_eq!(node.log(id).resumed, 1, "request {id}");
    }
    assert_eq!(node.host.tick_periods.len(), 1);
}

#[test]
fn header_names_match_in_any_case() {
    let config = config(
        r#""identity": {"api_key_header": "x-api-key", "client_ip": {"xff_trusted_hops": 1}},
           "tenants": {"key-a": {"id": "a", "plan": "free"}},"#,
        &[
            rule("per-tenant", r#""tenant""#, 1, "local"),
            rule("per-ip", r#""client_ip", "path""#, 1, "local"),
        ]
        .join(","),
    );
    let mut node = Node::new(MockHost::default(), &config);
    for id in [10, 11] {
        node.host
            .properties
            .insert((id, "source.address".into()), b"192.0.2.1:4000".to_vec());
    }
    let first = [
        (":path", "/a"),
        ("X-Api-Key", "key-a"),
        ("X-Forwarded-For", "10.0.0.1"),
    ];
    assert_eq!(node.request(10, &first), Action::Continue);
    // The same tenant again, from another client: the tenant rule (limit 1) refuses.
    let second = [
        (":path", "/a"),
        ("X-API-KEY", "key-a"),
        ("x-forwarded-for", "10.0.0.2"),
    ];
    assert_eq!(node.request(11, &second), Action::Pause);
    let reply = node.log(11).reply.expect("a 429");
    assert_eq!(reply.0, 429);
    assert!(
        String::from_utf8_lossy(&reply.2).contains("per-tenant"),
        "refused by the tenant rule, not the address rule: {}",
        String::from_utf8_lossy(&reply.2)
    );
    no_violations(&node);
}

#[test]
fn a_full_shared_memory_zone_follows_failure_mode() {
    for (mode, expected) in [("open", None), ("closed", Some(503))] {
        let config = config(
            &format!(r#""failure_mode": "{mode}","#),
            &rule("r", r#""path""#, 10, "local"),
        );
        let mut host = MockHost::default();
        host.store.capacity = Some(0);
        let mut node = Node::new(host, &config);
        let action = node.request(10, &[(":path", "/a")]);
        let reply = node.log(10).reply.map(|r| r.0);
        assert_eq!(reply, expected, "failure_mode {mode}");
        assert_eq!(action == Action::Continue, expected.is_none());
        no_violations(&node);
    }
    let _ = SECOND;
}

#[test]
fn jwt_claims_come_from_the_trusted_claims_header() {
    let config = config(
        r#""identity": {"jwt": {"claims_header": "x-jwt-payload", "tenant_claim": "org"}},"#,
        &rule("per-tenant", r#""tenant""#, 1, "local"),
    );
    let mut node = Node::new(MockHost::default(), &config);
    // {"org":"acme"}, base64url without padding.
    let claims = ("X-JWT-Payload", "eyJvcmciOiJhY21lIn0");
    assert_eq!(
        node.request(10, &[(":path", "/"), claims]),
        Action::Continue
    );
    assert_eq!(node.request(11, &[(":path", "/"), claims]), Action::Pause);
    assert_eq!(node.log(11).reply.map(|r| r.0), Some(429));
    // Without the header: anonymous, the tenant rule does not apply.
    assert_eq!(node.request(12, &[(":path", "/")]), Action::Continue);
    no_violations(&node);
}

/// The calls out to `path`.
fn calls_to(node: &Node, path: &str) -> Vec<super::mock::Call> {
    node.host
        .calls
        .iter()
        .filter(|c| c.path == path)
        .cloned()
        .collect()
}

#[test]
fn the_totals_reach_the_sidecar_every_ten_seconds_and_a_lost_report_loses_nothing() {
    use crate::protocol::{STATS_PATH, StatsReport};
    let config = config(
        &format!("{SIDECAR},"),
        &rule("per-ip", r#""client_ip""#, 3, "local"),
    );
    let mut node = Node::new(MockHost::default(), &config);
    let mut next_id = 10;
    let mut send = |node: &mut Node, n: u32| {
        for _ in 0..n {
            node.request(next_id, &[(":path", "/")]);
            node.finish(next_id);
            next_id += 1;
        }
    };
    let advance = |node: &mut Node, seconds: u64| {
        for _ in 0..seconds * 10 {
            node.host.now += SECOND / 10;
            node.tick();
        }
    };
    send(&mut node, 5);
    advance(&mut node, 11);
    let calls = calls_to(&node, STATS_PATH);
    assert_eq!(calls.len(), 1, "one report in 11 s");
    let report: StatsReport = serde_json::from_slice(&calls[0].body).unwrap();
    report.validate().unwrap();
    assert_eq!(report.rules.len(), 1);
    assert_eq!(
        (
            report.rules[0].rule.as_str(),
            report.rules[0].allowed,
            report.rules[0].refused
        ),
        ("per-ip", 3, 2)
    );
    // The report is lost (no answer from the sidecar); the next one carries the same totals
    // and the new requests.
    node.answer(calls[0].token, 0, "");
    send(&mut node, 2);
    advance(&mut node, 10);
    let calls = calls_to(&node, STATS_PATH);
    assert_eq!(calls.len(), 1);
    let again: StatsReport = serde_json::from_slice(&calls[0].body).unwrap();
    assert_eq!(again.sender, report.sender);
    assert_eq!((again.rules[0].allowed, again.rules[0].refused), (3, 4));
    // While a report is out, no second one goes.
    advance(&mut node, 20);
    assert_eq!(calls_to(&node, STATS_PATH).len(), 1);
    node.answer(calls[0].token, 204, "");
    advance(&mut node, 10);
    assert_eq!(calls_to(&node, STATS_PATH).len(), 1);
    no_violations(&node);
}

#[test]
fn on_envoy_a_strict_answer_resumes_its_request_and_on_nginx_the_host_does() {
    for lenient in [true, false] {
        let mut node = strict_node(MockHost {
            lenient,
            ..MockHost::default()
        });
        for id in 10..14 {
            assert_eq!(node.request(id, &[(":path", "/")]), Action::Pause);
        }
        answer_everything(&mut node, ADMIT);
        no_violations(&node);
        for id in 10..14 {
            // Envoy leaves a paused request paused until the filter resumes it; ngx_wasm_module
            // resumes it itself once its call is answered.
            assert_eq!(node.log(id).resumed, 1, "request {id}, lenient: {lenient}");
        }
    }
}

fn envoy_strict_node(extra: &str) -> Node {
    let config = config(
        &format!("{SIDECAR}, {extra}"),
        &rule("s", r#""client_ip""#, 100, "strict"),
    );
    Node::new(
        MockHost {
            lenient: true,
            ..MockHost::default()
        },
        &config,
    )
}

fn checks_in(call: &super::mock::Call) -> usize {
    if call.path.ends_with("/checks") {
        let body: serde_json::Value = serde_json::from_slice(&call.body).unwrap();
        body["checks"].as_array().unwrap().len()
    } else {
        1
    }
}

#[test]
fn on_envoy_strict_requests_wait_for_the_root_and_go_many_per_call() {
    let mut node = envoy_strict_node("");
    for id in 10..22 {
        assert_eq!(node.request(id, &[(":path", "/")]), Action::Pause);
    }
    assert!(
        node.host.calls.is_empty(),
        "a request called from its own callback"
    );
    assert_eq!(node.host.wakeups, 1, "one wake-up for all twelve");
    assert!(node.wake());
    let calls = node.calls_since(0);
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(
        calls[0].context,
        super::mock::ROOT,
        "the root makes the call"
    );
    assert_eq!(checks_in(&calls[0]), 12);
    answer_everything(&mut node, ADMIT);
    no_violations(&node);
    for id in 10..22 {
        assert_eq!(node.log(id).resumed, 1, "request {id}");
    }
}

#[test]
fn on_envoy_a_lone_request_goes_alone_and_beyond_four_calls_out_requests_wait_for_one() {
    let mut node = envoy_strict_node("");
    for id in 10..16 {
        node.request(id, &[(":path", "/")]);
        node.wake();
    }
    let calls = node.calls_since(0);
    assert_eq!(calls.len(), super::batch::MAX_CALLS, "{calls:?}");
    assert!(calls.iter().all(|c| c.path.ends_with("/check")));
    // Requests 14 and 15 wait; the first answer resumes request 10 and sends them together.
    node.answer(calls[0].token, 200, ADMIT);
    assert_eq!(node.log(10).resumed, 1);
    let next = node.calls_since(super::batch::MAX_CALLS - 1);
    assert_eq!(next.len(), 1, "{next:?}");
    assert_eq!(checks_in(&next[0]), 2);
    answer_everything(&mut node, ADMIT);
    no_violations(&node);
    for id in 10..16 {
        assert_eq!(node.log(id).resumed, 1, "request {id}");
    }
}

#[test]
fn on_envoy_a_request_gone_before_its_batch_answers_is_skipped_and_the_others_go_on() {
    let mut node = envoy_strict_node("");
    for id in 10..14 {
        node.request(id, &[(":path", "/")]);
    }
    node.wake();
    node.finish(11);
    // Refused: the three still there get a 429 each, through their own context.
    answer_everything(&mut node, REFUSE);
    no_violations(&node);
    for id in [10, 12, 13] {
        assert_eq!(node.log(id).reply.map(|r| r.0), Some(429), "request {id}");
    }
    assert_eq!(node.log(11).reply, None);
    assert_eq!(node.log(11).resumed, 0);
}

#[test]
fn on_envoy_a_request_that_waited_past_the_sidecar_timeout_follows_failure_mode() {
    let mut node = envoy_strict_node(r#""failure_mode": "closed","#);
    for id in 10..15 {
        node.request(id, &[(":path", "/")]);
        node.wake();
    }
    // Four calls out, request 14 waits; the sidecar's 100 ms pass before one answers.
    node.host.now += 150 * 1_000_000;
    let first = node.calls_since(0)[0].token;
    node.answer(first, 200, ADMIT);
    assert_eq!(node.log(10).resumed, 1);
    assert_eq!(
        node.log(14).reply.map(|r| r.0),
        Some(503),
        "waited past the timeout: unavailable, as for a sidecar that does not answer"
    );
    assert_eq!(node.calls_since(0).len(), 3, "nothing sent for it");
    no_violations(&node);
}

#[test]
fn on_nginx_strict_requests_never_wait_for_the_root() {
    let mut node = strict_node(MockHost::default());
    for id in 10..14 {
        node.request(id, &[(":path", "/")]);
    }
    assert!(node.host.wakeup_queues.is_empty(), "no wake-up registered");
    let calls = node.calls_since(0);
    assert_eq!(calls.len(), 4);
    assert!(calls.iter().all(|c| c.context != super::mock::ROOT));
}

#[test]
fn on_envoy_a_lost_wake_up_costs_at_most_a_tick() {
    let mut node = envoy_strict_node("");
    node.request(10, &[(":path", "/")]);
    // The host never delivers the wake-up; the next tick sends the request's check.
    node.host.wakeups = 0;
    assert!(node.host.calls.is_empty());
    node.host.now += SECOND;
    node.tick();
    let calls = node.calls_since(0);
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].context, super::mock::ROOT);
    // Later requests wake the root again (the lost wake-up no longer counts as on its way).
    node.request(11, &[(":path", "/")]);
    assert_eq!(node.host.wakeups, 1);
    answer_everything(&mut node, ADMIT);
    no_violations(&node);
    assert_eq!(node.log(10).resumed, 1);
    assert_eq!(node.log(11).resumed, 1);
}
