//! `POST /v1/usage`: answers, errors naming the field, and metrics.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use serde_json::json;
use support::api::post;
use tollgate_filter::usage::{USAGE_PATH, UsageBatch, UsageRecord};
use tollgate_sidecar::routes::usage::MAX_USAGE_BODY_BYTES;
use tollgate_sidecar::storage::MemoryStore;
use tollgate_sidecar::storage::usage::{MemoryUsageStore, RedisUsageStore, UsageStore};
use tollgate_sidecar::{AppState, app};

/// 2026-11-26T12:00:00Z.
const NOW: u64 = 1_795_694_400_000_000_000;
const DATES: [&str; 2] = ["2026-11-26", "2026-11-25"];

fn clock() -> u64 {
    NOW
}

/// The API over `usage`, deciding at [`NOW`].
fn api<U: UsageStore>(usage: Arc<U>) -> Router {
    let state = AppState {
        clock,
        ..AppState::new(MemoryStore::new(1_000))
    };
    app(state.with_usage(usage))
}

/// One request of `tenant` on `endpoint` today.
fn record(tenant: &str, endpoint: &str) -> UsageRecord {
    let mut record = UsageRecord::new(tenant, None, DATES[0], endpoint);
    record.requests = 1;
    record.latency_buckets[0] = 1;
    record
}

/// Sends `batch`; asserts 200 and returns (applied, duplicate).
async fn send(app: &Router, batch: &UsageBatch) -> (u64, u64) {
    let (status, body) = post(app, USAGE_PATH, serde_json::to_vec(batch).unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (
        body["applied"].as_u64().unwrap(),
        body["duplicate"].as_u64().unwrap(),
    )
}

#[tokio::test]
async fn usage_route_errors_name_the_field() {
    let app = api(Arc::new(MemoryUsageStore::new(10)));
    let good = json!({"tenant": "acme", "date": DATES[0], "endpoint": "e", "requests": 0});
    let cases = [
        (
            json!({"sender": 1, "seq": 1, "records": [good, {"tenant": "", "date": DATES[0], "endpoint": "e", "requests": 0}]}),
            "records[1].tenant: must be 1 to 128 bytes long",
        ),
        (
            json!({"sender": 1, "seq": 1, "records": [{"tenant": "a", "date": "2026-11-10", "endpoint": "e", "requests": 0}]}),
            "records[0].date: 2026-11-10 is not within 7 days before and 1 day after today (2026-11-26)",
        ),
        (
            json!({"sender": 1, "seq": 1, "records": [{"tenant": "a", "date": DATES[0], "endpoint": "e", "requests": 1}]}),
            "records[0].latency_buckets: must add up to requests",
        ),
        (
            json!({"sender": 1, "seq": 1, "records": [], "node": 3}),
            "unknown field `node`",
        ),
    ];
    for (body, message) in cases {
        let (status, answer) = post(&app, USAGE_PATH, body.to_string()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
        assert_eq!(answer["error"], "invalid_request");
        assert!(
            answer["message"].as_str().unwrap().contains(message),
            "{answer} lacks {message}"
        );
    }
    let (status, answer) = post(&app, USAGE_PATH, "{").await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_json"))
    );
    let huge = format!(
        r#"{{"sender":1,"seq":1,"records":[],"pad":"{}"}}"#,
        "x".repeat(MAX_USAGE_BODY_BYTES)
    );
    let (status, answer) = post(&app, USAGE_PATH, huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    let (status, text) = support::api::get(&app, USAGE_PATH).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{text}");
    assert!(text.contains("method_not_allowed"), "{text}");
    // A full store is a 503 the filter retries.
    let records: Vec<_> = (0..11)
        .map(|n| json!({"tenant": "a", "date": DATES[0], "endpoint": format!("e{n}"), "requests": 0}))
        .collect();
    let body = json!({"sender": 1, "seq": 1, "records": records});
    let (status, answer) = post(&app, USAGE_PATH, body.to_string()).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("store_full"))
    );
    let (_, metrics) = support::api::get(&app, "/metrics").await;
    for line in [
        r#"tollgate_errors_total{kind="invalid_request"} 4"#,
        r#"tollgate_errors_total{kind="store_full"} 1"#,
        r#"tollgate_usage_batches_total{outcome="applied"} 0"#,
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
}

#[tokio::test]
async fn usage_route_counts_batches_and_records() {
    let app = api(Arc::new(MemoryUsageStore::new(100)));
    let all: Vec<UsageBatch> = (1..=3)
        .map(|seq| UsageBatch {
            sender: 9,
            seq,
            records: (0..seq).map(|n| record("acme", &format!("e{n}"))).collect(),
            requests: Vec::new(),
        })
        .collect();
    let records = 6;
    for batch in &all {
        send(&app, batch).await;
    }
    send(&app, &all[0]).await;
    let (_, metrics) = support::api::get(&app, "/metrics").await;
    for line in [
        format!(
            r#"tollgate_usage_batches_total{{outcome="applied"}} {}"#,
            all.len()
        ),
        r#"tollgate_usage_batches_total{outcome="duplicate"} 1"#.to_owned(),
        format!("tollgate_usage_records_total {records}"),
    ] {
        assert!(metrics.contains(&line), "{line} not in\n{metrics}");
    }
}

#[tokio::test]
async fn an_unreachable_redis_is_a_503() {
    // Port 1 on loopback: nothing listens there.
    let store = RedisUsageStore::new("redis://127.0.0.1:1").unwrap();
    let app = api(Arc::new(store));
    let body = json!({"sender": 1, "seq": 1, "records": [{"tenant": "a", "date": DATES[0], "endpoint": "e", "requests": 0}]});
    let (status, answer) = post(&app, USAGE_PATH, body.to_string()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
    assert_eq!(answer["error"], "store_unavailable");
    assert!(
        !answer["message"].as_str().unwrap().contains("127.0.0.1"),
        "{answer}"
    );
}
