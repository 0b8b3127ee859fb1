//! `POST /v1/checks` test bodies, run over every store: each takes a fresh app (its own
//! counters) deciding at [`NOW`](super::api::NOW).
#![allow(dead_code, clippy::unwrap_used, clippy::indexing_slicing)]

use axum::Router;
use axum::http::StatusCode;
use serde_json::{Value, json};
use tollgate_filter::protocol::MAX_CHECK_BATCH;
use tollgate_sidecar::MAX_SYNC_BODY_BYTES;

use super::api::{HOUR, assert_error, get, post};

/// A fixed-window check of the bucket `(rule, key)`, one hour, `limit`.
pub fn check(rule: &str, key: u64, limit: u64) -> Value {
    json!({ "rule": rule, "key": key, "algorithm": "fixed_window", "limit": limit,
        "window_ns": HOUR })
}

/// Posts a batch of `checks`; the status and the answer.
pub async fn checks(app: &Router, checks: &[Value]) -> (StatusCode, Value) {
    post(app, "/v1/checks", json!({ "checks": checks }).to_string()).await
}

/// Posts a batch that must succeed; `admitted` of each answer, in order.
pub async fn admitted(app: &Router, batch: &[Value]) -> Vec<bool> {
    let (status, body) = checks(app, batch).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), batch.len(), "{body}");
    results
        .iter()
        .map(|result| result["admitted"].as_bool().unwrap())
        .collect()
}

/// Runs every body, each on a fresh app.
pub async fn all(new_app: impl Fn() -> Router) {
    a_batch_on_one_bucket_admits_the_first_ones(&new_app()).await;
    mixed_buckets_are_each_decided_in_order(&new_app()).await;
    bad_batches_get_a_json_4xx_and_decide_nothing(&new_app()).await;
    concurrent_batches_admit_exactly_the_limit(&new_app()).await;
    a_refused_request_gives_back_what_its_other_checks_took(&new_app()).await;
}

/// One request with two strict rules: `wide` (limit 3) admits, `narrow` (limit 1, spent)
/// refuses, so the request is refused and `wide`'s permit goes back. Checks
/// without a group, or whose group was admitted whole, keep what they took.
pub async fn a_refused_request_gives_back_what_its_other_checks_took(app: &Router) {
    // (Not the leaky bucket: it gives back only the latest grant of an instant, and then
    // decides conservatively until its queue drains — filter/src/algorithm/leaky_bucket.rs.)
    for algorithm in [
        "fixed_window",
        "token_bucket",
        "sliding_window_log",
        "sliding_window_counter",
    ] {
        let rule = |name: &str, limit: u64, group: Option<u32>| {
            let mut check = json!({ "rule": format!("{name}-{algorithm}"), "key": 1,
                "algorithm": algorithm, "limit": limit, "window_ns": HOUR });
            if let Some(group) = group {
                check["group"] = json!(group);
            }
            check
        };
        // Spend narrow's only permit, in a group admitted whole: nothing given back.
        assert_eq!(
            admitted(app, &[rule("narrow", 1, Some(1)), rule("wide", 3, Some(1))]).await,
            [true, true],
            "{algorithm}"
        );
        // Refused as a whole, twice: wide's permits go back each time.
        for group in [2, 3] {
            assert_eq!(
                admitted(
                    app,
                    &[rule("wide", 3, Some(group)), rule("narrow", 1, Some(group))]
                )
                .await,
                [true, false],
                "{algorithm}"
            );
        }
        // wide has 2 of its 3 left (one spent by the first request only).
        let single = [rule("wide", 3, None)];
        assert_eq!(admitted(app, &single).await, [true], "{algorithm}");
        assert_eq!(admitted(app, &single).await, [true], "{algorithm}");
        assert_eq!(
            admitted(app, &single).await,
            [false],
            "{algorithm}: a refund too many"
        );
        // Without a group nothing is given back.
        assert_eq!(
            admitted(app, &[rule("alone", 1, None), rule("narrow", 1, None)]).await,
            [true, false],
            "{algorithm}"
        );
        assert_eq!(
            admitted(app, &[rule("alone", 1, None)]).await,
            [false],
            "{algorithm}"
        );
    }
    let (_, metrics) = get(app, "/metrics").await;
    let line = r#"tollgate_decisions_total{rule="wide-token_bucket",outcome="refunded"} 2"#;
    assert!(metrics.contains(line), "{line} not in\n{metrics}");
}

pub async fn a_batch_on_one_bucket_admits_the_first_ones(app: &Router) {
    let (status, body) = checks(app, &vec![check("r", 1, 3); 10]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let window_left = HOUR - super::api::NOW % HOUR;
    let results = body["results"].as_array().unwrap();
    let expected: Vec<Value> = (0..10u64)
        .map(|n| {
            if n < 3 {
                json!({ "admitted": true, "remaining": 2 - n, "reset_after_ns": window_left,
                    "retry_after_ns": 0, "delay_ns": 0 })
            } else {
                json!({ "admitted": false, "remaining": 0, "reset_after_ns": window_left,
                    "retry_after_ns": window_left, "delay_ns": 0 })
            }
        })
        .collect();
    assert_eq!(results, &expected);
    // The batch and /v1/check share the bucket and the decision counters.
    let (status, single) = post(app, "/v1/check", check("r", 1, 3).to_string()).await;
    assert_eq!(
        (status, &single["admitted"]),
        (StatusCode::OK, &json!(false))
    );
    let (_, metrics) = get(app, "/metrics").await;
    for line in [
        r#"tollgate_decisions_total{rule="r",outcome="admitted"} 3"#,
        r#"tollgate_decisions_total{rule="r",outcome="refused"} 8"#,
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
}

pub async fn mixed_buckets_are_each_decided_in_order(app: &Router) {
    // Buckets a (limit 2), b (limit 1), a's rule with another key (limit 1), interleaved.
    let (a, b, other_key) = (check("a", 1, 2), check("b", 1, 1), check("a", 2, 1));
    let batch = [
        a.clone(),
        b.clone(),
        other_key.clone(),
        a.clone(),
        b.clone(),
        a.clone(),
        other_key.clone(),
        b,
    ];
    assert_eq!(
        admitted(app, &batch).await,
        [true, true, true, true, false, false, false, false]
    );
    // A token bucket with cost: each check sees the ones before it.
    let bucket = |cost: u64| {
        json!({ "rule": "tb", "key": 1, "algorithm": "token_bucket", "limit": 1,
            "window_ns": HOUR, "burst": 5, "cost": cost })
    };
    let (status, body) = checks(app, &[bucket(3), bucket(3), bucket(2), a]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let remaining: Vec<_> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["admitted"].as_bool().unwrap(),
                r["remaining"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(remaining, [(true, 2), (false, 2), (true, 0), (false, 0)]);
}

pub async fn bad_batches_get_a_json_4xx_and_decide_nothing(app: &Router) {
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    let not_json = post(app, "/v1/checks", "{not json").await;
    assert_error(not_json, StatusCode::BAD_REQUEST, "invalid_json", "");
    let empty = checks(app, &[]).await;
    assert_error(
        empty,
        unprocessable,
        "invalid_request",
        "checks: must hold 1 to 256 checks",
    );
    let too_many = checks(app, &vec![check("r", 1, 1); MAX_CHECK_BATCH + 1]).await;
    assert_error(
        too_many,
        unprocessable,
        "invalid_request",
        "checks: must hold 1 to 256 checks",
    );
    let unknown = post(app, "/v1/checks", r#"{"checks":[],"colour":"red"}"#).await;
    assert_error(
        unknown,
        unprocessable,
        "invalid_request",
        "unknown field `colour`",
    );
    // A bad check refuses the whole batch, the good checks before it included.
    let zero = checks(app, &[check("r", 1, 1), check("r", 1, 0)]).await;
    assert_error(
        zero,
        unprocessable,
        "invalid_request",
        "checks[1].limit: must be at least 1",
    );
    let mut no_cost = check("r", 1, 1);
    no_cost["cost"] = json!(0);
    let no_cost = checks(app, &[check("r", 1, 1), check("r", 1, 1), no_cost]).await;
    assert_error(
        no_cost,
        unprocessable,
        "invalid_request",
        "checks[2].cost: must be at least 1",
    );
    let huge = format!(
        r#"{{"checks":[],"pad":"{}"}}"#,
        "x".repeat(MAX_SYNC_BODY_BYTES)
    );
    let huge = post(app, "/v1/checks", huge).await;
    assert_error(
        huge,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "1048576 bytes",
    );
    // Nothing was decided: the bucket still has its one permit.
    assert_eq!(admitted(app, &[check("r", 1, 1)]).await, [true]);
    // A full batch of long checks is larger than /v1/check's limit, and accepted.
    let long = json!({ "rule": "r".repeat(128), "key": u64::MAX,
        "algorithm": "sliding_window_counter", "limit": 1_000_000, "window_ns": HOUR,
        "burst": 1_000_000, "queue": 0, "cost": 1 });
    let full = vec![long; MAX_CHECK_BATCH];
    assert!(json!({ "checks": full }).to_string().len() > tollgate_sidecar::MAX_BODY_BYTES);
    assert_eq!(admitted(app, &full).await, vec![true; MAX_CHECK_BATCH]);
}

pub async fn concurrent_batches_admit_exactly_the_limit(app: &Router) {
    const BATCHES: usize = 8;
    const CHECKS: usize = 20;
    const LIMIT: usize = 50;
    let calls: Vec<_> = (0..BATCHES)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move {
                admitted(&app, &vec![check("hot", 7, LIMIT as u64); CHECKS]).await
            })
        })
        .collect();
    let mut total = 0;
    for call in calls {
        let answers = call.await.unwrap();
        // Within a batch, the admitted checks come first.
        let admitted = answers.iter().filter(|a| **a).count();
        assert!(answers[..admitted].iter().all(|a| *a), "{answers:?}");
        total += admitted;
    }
    assert_eq!(total, LIMIT);
}
