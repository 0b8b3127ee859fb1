//! The HTTP API over the Redis counter store, through `app()` without a socket: readiness
//! follows Redis, concurrent checks of one bucket admit exactly the limit, `/v1/sync` behaves
//! as over the in-memory store (one Redis and a cluster), and Redis round trips are timed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::Value;
use support::api::{HOUR, fixed_clock, get, post, send_json, with_fixed_clock};
use support::redis::{TestCluster, TestRedis};
use support::{checks, sync};
use tollgate_filter::protocol::{CheckRequest, WireAlgorithm};
use tollgate_sidecar::metrics::Metrics;
use tollgate_sidecar::storage::RedisStore;
use tollgate_sidecar::{AppState, app};

fn redis_app(url: &str, prefix: String) -> Router {
    with_fixed_clock(RedisStore::new(url).unwrap().with_prefix(prefix))
}

async fn readyz(app: &Router) -> (StatusCode, Value) {
    send_json(app, Request::get("/readyz").body(Body::empty()).unwrap()).await
}

#[tokio::test]
async fn readyz_follows_redis() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let up = redis_app(redis.url(), redis.unique_prefix());
    let (status, body) = readyz(&up).await;
    assert_eq!(
        (status, body.to_string()),
        (StatusCode::OK, r#"{"status":"ready"}"#.into())
    );

    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = redis_app(
        &format!("redis://:secret-pw@127.0.0.1:{closed}"),
        redis.unique_prefix(),
    );
    let (status, body) = readyz(&down).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], "store_unavailable", "{body}");
    assert!(!body.to_string().contains("secret-pw"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_checks_on_one_key_admit_exactly_the_limit() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    admit_exactly_the_limit(|| {
        let store = RedisStore::new(redis.url())
            .unwrap()
            .with_prefix(redis.unique_prefix());
        with_fixed_clock(store)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_checks_through_a_cluster_admit_exactly_the_limit() {
    let Some(cluster) = TestCluster::start() else {
        return;
    };
    let next = std::sync::atomic::AtomicU64::new(0);
    admit_exactly_the_limit(|| {
        let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let store = RedisStore::new_cluster(&cluster.urls())
            .unwrap()
            .with_prefix(format!("cluster-check:{n}"));
        with_fixed_clock(store)
    })
    .await;
}

/// 400 concurrent checks of one bucket with a limit of 50, for every algorithm, each on a
/// fresh app (and key space) from `new_app`: exactly 50 admitted.
async fn admit_exactly_the_limit(new_app: impl Fn() -> Router) {
    const LIMIT: u64 = 50;
    const CALLS: usize = 400;
    for algorithm in [
        WireAlgorithm::FixedWindow,
        WireAlgorithm::SlidingWindowLog,
        WireAlgorithm::SlidingWindowCounter,
        WireAlgorithm::TokenBucket,
        WireAlgorithm::LeakyBucket,
    ] {
        let app = new_app();
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
                tokio::spawn(async move { post(&app, "/v1/check", body).await })
            })
            .collect();
        let mut admitted = 0;
        for call in calls {
            let (status, body) = call.await.unwrap();
            assert_eq!(status, StatusCode::OK, "{algorithm:?}: {body}");
            admitted += u64::from(body["admitted"] == true);
        }
        assert_eq!(admitted, LIMIT, "{algorithm:?}");
    }
}

/// Polls `/readyz` until it answers `status`, for at most ten seconds.
async fn wait_for_readyz(app: &Router, status: StatusCode) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (actual, body) = readyz(app).await;
        if actual == status {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz still {actual} {body}, want {status}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_store_reconnects_by_itself_after_a_redis_restart() {
    // A server of its own even when TOLLGATE_TEST_REDIS_URL is set: it stops and restarts it.
    let Some(mut redis) = TestRedis::start_throw_away() else {
        return;
    };
    let app = redis_app(redis.url(), redis.unique_prefix());
    wait_for_readyz(&app, StatusCode::OK).await;
    redis.stop();
    wait_for_readyz(&app, StatusCode::SERVICE_UNAVAILABLE).await;
    redis.restart().unwrap();
    wait_for_readyz(&app, StatusCode::OK).await;
    let check =
        r#"{"rule":"r","key":1,"algorithm":"fixed_window","limit":1,"window_ns":1000000000}"#;
    let (status, body) = post(&app, "/v1/check", check).await;
    assert_eq!(
        (status, &body["admitted"]),
        (StatusCode::OK, &Value::Bool(true)),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sync_over_redis() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    sync::all(|| redis_app(redis.url(), redis.unique_prefix())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sync_over_a_cluster() {
    let Some(cluster) = TestCluster::start() else {
        return;
    };
    let next = std::sync::atomic::AtomicU64::new(0);
    sync::all(|| {
        let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let store = RedisStore::new_cluster(&cluster.urls())
            .unwrap()
            .with_prefix(format!("cluster-sync:{}:{n}", std::process::id()));
        with_fixed_clock(store)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn checks_over_redis() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    checks::all(|| redis_app(redis.url(), redis.unique_prefix())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn checks_over_a_cluster() {
    let Some(cluster) = TestCluster::start() else {
        return;
    };
    let next = std::sync::atomic::AtomicU64::new(0);
    checks::all(|| {
        let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let store = RedisStore::new_cluster(&cluster.urls())
            .unwrap()
            .with_prefix(format!("cluster-checks:{}:{n}", std::process::id()));
        with_fixed_clock(store)
    })
    .await;
}

#[tokio::test]
async fn redis_round_trips_are_timed() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let metrics = Arc::new(Metrics::new());
    let store = RedisStore::new(redis.url())
        .unwrap()
        .with_prefix(redis.unique_prefix())
        .with_latency(metrics.redis_seconds());
    let app = app(AppState {
        clock: fixed_clock,
        ..AppState::with_metrics(store, metrics)
    });
    // A check of a fresh bucket: GET, then the compare-and-set.
    let check =
        r#"{"rule":"r","key":1,"algorithm":"fixed_window","limit":1,"window_ns":1000000000}"#;
    assert_eq!(post(&app, "/v1/check", check).await.0, StatusCode::OK);
    // A batch of one entry: the nodes script, the seq script, then GET and compare-and-set.
    let batch = sync::batch(1, 1, 1, vec![sync::entry(10, 1)]);
    sync::sync_ok(&app, &batch).await;
    let (_, text) = get(&app, "/metrics").await;
    for line in [
        "# TYPE tollgate_redis_seconds histogram",
        r#"tollgate_redis_seconds_bucket{le="+Inf"} 6"#,
        "tollgate_redis_seconds_count 6",
    ] {
        assert!(text.contains(line), "{line} not in\n{text}");
    }
}
