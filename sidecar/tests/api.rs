//! The HTTP API through `app()` over the in-memory store, without a socket: every route, bad
//! input, store failures, and exactness under concurrency (`/v1/sync`'s bodies are shared with
//! the Redis tests, in `support/sync.rs`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::future::{Future, ready};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use support::api::{HOUR, NOW, assert_error, get, post, send, with_fixed_clock};
use support::{checks, sync};
use tollgate_filter::Nanos;
use tollgate_filter::algorithm::{Algorithm, State};
use tollgate_filter::protocol::{CheckRequest, WireAlgorithm};
use tollgate_sidecar::jobs::Jobs;
use tollgate_sidecar::storage::{
    BatchStart, CounterKey, CounterStore, MemoryStore, StoreError, Write,
};
use tollgate_sidecar::{AppState, app};
use tower::ServiceExt;

fn memory_app() -> Router {
    with_fixed_clock(MemoryStore::new(10_000))
}

async fn post_raw(app: &Router, body: impl Into<Body>) -> (StatusCode, Value) {
    post(app, "/v1/check", body).await
}

async fn check(app: &Router, body: Value) -> (StatusCode, Value) {
    post_raw(app, body.to_string()).await
}

fn fixed_window(limit: u64) -> Value {
    json!({ "rule": "per-tenant", "key": 42, "algorithm": "fixed_window", "limit": limit, "window_ns": HOUR })
}

#[tokio::test]
async fn healthz_and_readyz() {
    let app = memory_app();
    assert_eq!(
        get(&app, "/healthz").await,
        (StatusCode::OK, r#"{"status":"ok"}"#.into())
    );
    assert_eq!(
        get(&app, "/readyz").await,
        (StatusCode::OK, r#"{"status":"ready"}"#.into())
    );
}

/// A background job that ended while the sidecar serves makes `/readyz` 503 `job_stopped`,
/// naming it; the jobs stopped by shutdown do not.
#[tokio::test]
async fn readyz_reports_a_stopped_job() {
    let state = AppState::new(MemoryStore::new(1_000));
    let mut jobs = Jobs::new(std::sync::Arc::clone(&state.metrics), state.clock);
    let mut stays = Jobs::new(std::sync::Arc::clone(&state.metrics), state.clock);
    stays.start(
        "stays",
        |mut context| async move { context.stopping().await },
    );
    jobs.start("quits", |_context| async {});
    let app = app(state.with_jobs(jobs.board()));
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let (status, body) = get(&app, "/readyz").await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            assert!(
                body.contains(r#""error":"job_stopped""#) && body.contains("quits"),
                "{body}"
            );
            break;
        }
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz still {body}"
        );
        tokio::task::yield_now().await;
    }
    stays.stop().await;
    jobs.stop().await;
    let (_, metrics) = get(&app, "/metrics").await;
    assert!(
        metrics.contains(r#"tollgate_errors_total{kind="job_stopped"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn check_admits_up_to_the_limit_then_refuses() {
    let app = memory_app();
    for remaining in [1, 0] {
        let (status, body) = check(&app, fixed_window(2)).await;
        assert_eq!(status, StatusCode::OK);
        let expected = json!({ "admitted": true, "remaining": remaining,
            "reset_after_ns": HOUR - NOW % HOUR, "retry_after_ns": 0, "delay_ns": 0 });
        assert_eq!(body, expected);
    }
    let (status, body) = check(&app, fixed_window(2)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["admitted"], false);
    assert_eq!(body["remaining"], 0);
    assert_eq!(body["retry_after_ns"], HOUR - NOW % HOUR);
    // Another key of the same rule has its own bucket.
    let mut other = fixed_window(2);
    other["key"] = json!(43);
    assert_eq!(check(&app, other).await.1["admitted"], true);
}

#[tokio::test]
async fn check_honours_cost_burst_and_queue() {
    let app = memory_app();
    let bucket = json!({ "rule": "tb", "key": 1, "algorithm": "token_bucket", "limit": 1,
        "window_ns": HOUR, "burst": 5, "cost": 3 });
    assert_eq!(check(&app, bucket.clone()).await.1["remaining"], 2);
    assert_eq!(check(&app, bucket).await.1["admitted"], false);
    let leaky = json!({ "rule": "lb", "key": 1, "algorithm": "leaky_bucket", "limit": 2,
        "window_ns": HOUR, "queue": 1 });
    assert_eq!(check(&app, leaky.clone()).await.1["delay_ns"], 0);
    let (_, queued) = check(&app, leaky.clone()).await;
    assert_eq!(
        (queued["admitted"].clone(), queued["delay_ns"].clone()),
        (json!(true), json!(HOUR / 2))
    );
    assert_eq!(check(&app, leaky).await.1["admitted"], false);
}

#[tokio::test]
async fn bad_input_gets_a_json_4xx() {
    let app = memory_app();
    let not_json = post_raw(&app, "{not json").await;
    assert_error(not_json, StatusCode::BAD_REQUEST, "invalid_json", "");
    let mut unknown = fixed_window(1);
    unknown["colour"] = json!("red");
    let unknown = check(&app, unknown).await;
    assert_error(
        unknown,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
        "unknown field `colour`",
    );
    let missing = check(&app, json!({ "rule": "r", "key": 1 })).await;
    assert_error(
        missing,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
        "missing field",
    );
    let algorithm = check(
        &app,
        json!({ "rule": "r", "key": 1, "algorithm": "gcra", "limit": 1, "window_ns": 1 }),
    )
    .await;
    assert_error(
        algorithm,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
        "unknown variant `gcra`",
    );
    let zero = check(&app, fixed_window(0)).await;
    assert_error(
        zero,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
        "limit: must be at least 1",
    );
    let mut log = fixed_window(20_000);
    log["algorithm"] = json!("sliding_window_log");
    let log = check(&app, log).await;
    assert_error(
        log,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
        "at most 10000",
    );
    let huge = format!(
        r#"{{"rule":"{}"}}"#,
        "x".repeat(tollgate_sidecar::MAX_BODY_BYTES)
    );
    let huge = post_raw(&app, huge).await;
    assert_error(
        huge,
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "65536 bytes",
    );
    let untyped = Request::post("/v1/check")
        .body(Body::from(fixed_window(1).to_string()))
        .unwrap();
    let (status, body) = send(&app, untyped).await;
    let untyped = (status, serde_json::from_str(&body).unwrap());
    assert_error(
        untyped,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "",
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let app = memory_app();
    let (status, body) = get(&app, "/nope").await;
    assert_error(
        (status, serde_json::from_str(&body).unwrap()),
        StatusCode::NOT_FOUND,
        "not_found",
        "",
    );
    let (status, body) = get(&app, "/v1/check").await;
    let body = serde_json::from_str(&body).unwrap();
    assert_error(
        (status, body),
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "",
    );
}

#[tokio::test]
async fn metrics_count_decisions_and_errors() {
    let app = memory_app();
    check(&app, fixed_window(1)).await;
    check(&app, fixed_window(1)).await;
    post_raw(&app, "[").await;
    let response = app
        .clone()
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let (status, text) = get(&app, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    for line in [
        r#"tollgate_decisions_total{rule="per-tenant",outcome="admitted"} 1"#,
        r#"tollgate_decisions_total{rule="per-tenant",outcome="refused"} 1"#,
        r#"tollgate_errors_total{kind="invalid_json"} 1"#,
        "# TYPE tollgate_decisions_total counter",
    ] {
        assert!(text.contains(line), "{line} not in\n{text}");
    }
}

#[tokio::test]
async fn extreme_numbers_are_decided_not_panicked_on() {
    let app = memory_app();
    let algorithms = [
        "fixed_window",
        "sliding_window_counter",
        "token_bucket",
        "leaky_bucket",
    ];
    for (n, algorithm) in algorithms.into_iter().enumerate() {
        for (limit, window, cost) in [
            (u64::MAX, u64::MAX, u64::MAX),
            (1, 1, u64::MAX),
            (u64::MAX, 1, 1),
        ] {
            let body = json!({ "rule": "x", "key": n, "algorithm": algorithm, "limit": limit,
                "window_ns": window, "burst": limit, "queue": u64::MAX, "cost": cost });
            let (status, body) = check(&app, body).await;
            assert_eq!(status, StatusCode::OK, "{algorithm}: {body}");
        }
    }
    let too_big = r#"{"rule":"x","key":1,"algorithm":"fixed_window","limit":1,"window_ns":1,"cost":18446744073709551616}"#;
    let too_big = post_raw(&app, too_big).await;
    assert_error(
        too_big,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
        "cost",
    );
}

/// A store whose backend is down.
struct DownStore;

impl CounterStore for DownStore {
    fn update<F, R>(
        &self,
        _: &CounterKey,
        _: u64,
        _: F,
    ) -> impl Future<Output = Result<R, StoreError>> + Send
    where
        F: FnMut(&mut State) -> (R, Write) + Send,
        R: Send,
    {
        ready(Err(StoreError::Unavailable(
            "connection refused (secret-host:6379)".into(),
        )))
    }

    fn begin_batch(
        &self,
        _: u64,
        _: u64,
        _: u64,
        _: Nanos,
    ) -> impl Future<Output = Result<BatchStart, StoreError>> + Send {
        ready(Err(StoreError::Unavailable(
            "connection refused (secret-host:6379)".into(),
        )))
    }

    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
        ready(Err(StoreError::Unavailable(
            "connection refused (secret-host:6379)".into(),
        )))
    }
}

#[tokio::test]
async fn a_failing_store_is_503_and_its_cause_is_not_echoed() {
    let app = app(AppState::new(DownStore));
    let (status, body) = get(&app, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body.contains(r#""error":"store_unavailable""#) && !body.contains("secret-host"),
        "{body}"
    );
    let (status, body) = check(&app, fixed_window(1)).await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::SERVICE_UNAVAILABLE, &json!("store_unavailable"))
    );
    assert!(!body.to_string().contains("secret-host"), "{body}");
    let (status, body) = sync::sync(&app, &sync::batch(1, 1, 1, vec![sync::entry(1, 1)])).await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::SERVICE_UNAVAILABLE, &json!("store_unavailable"))
    );
    assert!(!body.to_string().contains("secret-host"), "{body}");
    let (status, body) = checks::checks(&app, &[checks::check("r", 1, 1)]).await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::SERVICE_UNAVAILABLE, &json!("store_unavailable"))
    );
    assert!(!body.to_string().contains("secret-host"), "{body}");
    let (_, metrics) = get(&app, "/metrics").await;
    assert!(
        metrics.contains(r#"tollgate_errors_total{kind="store_unavailable"} 4"#),
        "{metrics}"
    );
}

/// How many of `n` sequential checks the algorithm itself admits (the ground truth).
fn sequential_admissions(request: &CheckRequest, n: usize) -> usize {
    let (quota, algorithm) = (request.quota().unwrap(), Algorithm::from(request.algorithm));
    let mut state = State::default();
    (0..n)
        .filter(|_| algorithm.acquire(&quota, &mut state, NOW, 1, 1).granted == 1)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_checks_on_one_key_admit_exactly_the_limit() {
    const LIMIT: u64 = 50;
    const CALLS: usize = 400;
    let algorithms = [
        WireAlgorithm::FixedWindow,
        WireAlgorithm::SlidingWindowLog,
        WireAlgorithm::SlidingWindowCounter,
        WireAlgorithm::TokenBucket,
        WireAlgorithm::LeakyBucket,
    ];
    for algorithm in algorithms {
        let app = memory_app();
        let request = CheckRequest {
            rule: "hot".into(),
            key: 7,
            algorithm,
            limit: LIMIT,
            window_ns: HOUR,
            burst: None,
            queue: LIMIT - 1, // leaky bucket: one now, the rest queued
            cost: 1,
            group: None,
        };
        let body = serde_json::to_string(&request).unwrap();
        let calls: Vec<_> = (0..CALLS)
            .map(|_| {
                let (app, body) = (app.clone(), body.clone());
                tokio::spawn(async move { post_raw(&app, body).await })
            })
            .collect();
        let mut admitted = 0;
        for call in calls {
            let (status, body) = call.await.unwrap();
            assert_eq!(status, StatusCode::OK, "{body}");
            admitted += usize::from(body["admitted"] == true);
        }
        assert_eq!(
            admitted,
            sequential_admissions(&request, CALLS),
            "{algorithm:?}"
        );
        assert_eq!(admitted as u64, LIMIT, "{algorithm:?}");
    }
}

#[tokio::test]
async fn sync_applies_hits_once_and_answers_totals() {
    sync::applies_hits_once_and_answers_totals(&memory_app()).await;
}

#[tokio::test]
async fn sync_senders_add_up() {
    sync::senders_add_up(&memory_app()).await;
}

#[tokio::test]
async fn sync_nodes_fill_a_global_bucket_together() {
    sync::nodes_fill_a_global_bucket_together(&memory_app()).await;
}

#[tokio::test]
async fn sync_expired_hits_are_not_applied() {
    sync::expired_hits_are_not_applied(&memory_app()).await;
}

#[tokio::test]
async fn sync_bad_batches_get_a_json_4xx_and_count_nothing() {
    sync::bad_batches_get_a_json_4xx_and_count_nothing(&memory_app()).await;
}

#[tokio::test]
async fn sync_strict_checks_and_sync_share_the_bucket() {
    sync::strict_checks_and_sync_share_the_bucket(&memory_app()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sync_concurrent_batches_add_up_exactly() {
    sync::concurrent_batches_add_up_exactly(&memory_app()).await;
}

#[tokio::test]
async fn checks_a_batch_on_one_bucket_admits_the_first_ones() {
    checks::a_batch_on_one_bucket_admits_the_first_ones(&memory_app()).await;
}

#[tokio::test]
async fn checks_mixed_buckets_are_each_decided_in_order() {
    checks::mixed_buckets_are_each_decided_in_order(&memory_app()).await;
}

#[tokio::test]
async fn checks_bad_batches_get_a_json_4xx_and_decide_nothing() {
    checks::bad_batches_get_a_json_4xx_and_decide_nothing(&memory_app()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn checks_concurrent_batches_admit_exactly_the_limit() {
    checks::concurrent_batches_admit_exactly_the_limit(&memory_app()).await;
}

#[tokio::test]
async fn checks_a_refused_request_gives_back_what_its_other_checks_took() {
    checks::a_refused_request_gives_back_what_its_other_checks_took(&memory_app()).await;
}

/// `POST /v1/stats`: a worker's totals become `/metrics` counters growing by the difference
/// from its previous report; a repeated report adds nothing; a bad one is 422 naming the field.
#[tokio::test]
async fn filter_stats_reach_metrics_once() {
    let app = memory_app();
    let report = |sender: u64, allowed: u64, dropped: u64| {
        json!({"sender": sender,
               "rules": [{"rule": "per-ip", "allowed": allowed, "refused": 2, "shadow_refused": 0,
                          "queued": 0, "sidecar_failures": 0}],
               "counters": {"usage.dropped": dropped}})
        .to_string()
    };
    let stats = |body: String| {
        let app = app.clone();
        async move {
            let request = Request::post("/v1/stats")
                .header("content-type", "application/json")
                .body(Body::from(body))
                .unwrap();
            send(&app, request).await.0
        }
    };
    assert_eq!(stats(report(1, 10, 0)).await, StatusCode::NO_CONTENT);
    assert_eq!(stats(report(1, 10, 0)).await, StatusCode::NO_CONTENT);
    assert_eq!(stats(report(1, 15, 1)).await, StatusCode::NO_CONTENT);
    assert_eq!(stats(report(2, 4, 0)).await, StatusCode::NO_CONTENT);
    let (_, metrics) = get(&app, "/metrics").await;
    for line in [
        r#"tollgate_filter_decisions_total{rule="per-ip",outcome="allowed"} 19"#,
        r#"tollgate_filter_decisions_total{rule="per-ip",outcome="refused"} 4"#,
        r#"tollgate_filter_events_total{counter="usage.dropped"} 1"#,
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    let bad = json!({"sender": 1, "rules": [], "counters": {"Usage Dropped": 1}}).to_string();
    assert_error(
        post(&app, "/v1/stats", bad).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
        "counters.Usage Dropped",
    );
    assert_error(
        post(&app, "/v1/stats", r#"{"sender": 1, "rulez": []}"#).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
        "rulez",
    );
}
