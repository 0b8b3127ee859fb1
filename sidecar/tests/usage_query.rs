//! The tenant usage API (`GET /v1/usage/{daily,period,endpoints,users}`) over known rows
//! written through the flush's own sink: every number checked exactly, tenant isolation,
//! 401/403/400/405/503. One test body, run on SQLite and on PostgreSQL (a throw-away server
//! from `support/`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use support::api::send_json;
use support::postgres::TestPostgres;
use support::process::request;
use support::tenants::{ACME_KEY, ADMIN, CONFIG, GLOBEX_KEY, clock};
use tollgate_filter::usage::LATENCY_BUCKETS;
use tollgate_sidecar::AppState;
use tollgate_sidecar::metrics::Metrics;
use tollgate_sidecar::routes::usage_query::QueryState;
use tollgate_sidecar::storage::MemoryStore;
use tollgate_sidecar::storage::sql::Database;
use tollgate_sidecar::storage::sql::UsageSink;
use tollgate_sidecar::storage::usage::{Counters, MemoryUsageStore, Snapshot, UsageRow};
use tollgate_sidecar::tenants::Tenants;

/// A histogram with `counts` in its first buckets (or `[.., n]` at `at`).
fn buckets(at: &[(usize, u64)]) -> [u64; LATENCY_BUCKETS] {
    let mut out = [0; LATENCY_BUCKETS];
    for &(i, n) in at {
        out[i] = n;
    }
    out
}

/// `(date, endpoint, requests, bytes_in, bytes_out, 4xx, 5xx, latency sum, histogram)`.
type Fixture = (
    &'static str,
    &'static str,
    [u64; 6],
    &'static [(usize, u64)],
);

const ACME: [Fixture; 6] = [
    ("2026-10-01", "GET /a", [7, 70, 700, 0, 0, 70], &[(0, 7)]),
    (
        "2026-10-31",
        "GET /a",
        [1_000, 10_000, 50_000, 40, 8, 9_000],
        &[(0, 500), (1, 400), (2, 100)],
    ),
    (
        "2026-11-24",
        "DELETE /c",
        [431_780, 1, 2, 43_178, 0, 5_181_360_000],
        &[(11, 431_780)],
    ),
    (
        "2026-11-25",
        "GET /a",
        [100, 1_000, 5_000, 5, 1, 900],
        &[(0, 50), (1, 40), (2, 10)],
    ),
    (
        "2026-11-26",
        "GET /a",
        [100, 1_000, 5_000, 5, 1, 900],
        &[(0, 50), (1, 40), (2, 10)],
    ),
    (
        "2026-11-26",
        "POST /b",
        [20, 2_000, 100, 0, 2, 2_000],
        &[(4, 20)],
    ),
];

fn snapshot(tenant: &str, plan: &str, rows: &[Fixture], users: &[(&str, u64)]) -> Snapshot {
    Snapshot {
        tenant: tenant.into(),
        flush_id: format!("test-{tenant}"),
        rows: rows
            .iter()
            .map(|(date, endpoint, c, histogram)| UsageRow {
                date: (*date).into(),
                endpoint: (*endpoint).into(),
                plan: plan.into(),
                counters: Counters {
                    requests: c[0],
                    bytes_in: c[1],
                    bytes_out: c[2],
                    errors_4xx: c[3],
                    errors_5xx: c[4],
                    latency_ms_sum: c[5],
                    latency_buckets: buckets(histogram),
                },
            })
            .collect(),
        users: users.iter().map(|(d, n)| ((*d).into(), *n)).collect(),
    }
}

async fn fill(database: &Database) {
    let acme = snapshot(
        "acme",
        "free",
        &ACME,
        &[("2026-11-25", 4), ("2026-11-26", 7)],
    );
    let globex = snapshot(
        "globex",
        "pro",
        &[("2026-11-26", "GET /a", [999, 1, 1, 0, 0, 999], &[(0, 999)])],
        &[("2026-11-26", 50)],
    );
    database.apply(&acme).await.unwrap();
    database.apply(&globex).await.unwrap();
}

fn app(database: &Database, tenants: Option<Tenants>) -> Router {
    let state = AppState {
        clock,
        ..AppState::new(MemoryStore::new(1_000))
    };
    let queries = QueryState::new(
        database.clone(),
        tenants,
        Some(ADMIN),
        Arc::new(Metrics::new()),
        clock,
    );
    tollgate_sidecar::app(
        state
            .with_usage(Arc::new(MemoryUsageStore::new(1_000)))
            .with_queries(queries),
    )
}

async fn get(app: &Router, path: &str, token: Option<&str>) -> (StatusCode, Value) {
    let mut request = Request::get(path);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    send_json(app, request.body(Body::empty()).unwrap()).await
}

async fn ok(app: &Router, path: &str, token: &str) -> Value {
    let (status, body) = get(app, path, Some(token)).await;
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    body
}

fn assert_error(answer: (StatusCode, Value), status: StatusCode, code: &str, needle: &str) {
    let (actual, body) = answer;
    assert_eq!(actual, status, "{body}");
    assert_eq!(body["error"], code, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains(needle), "{message:?} lacks {needle:?}");
}

fn day(date: &str, c: [u64; 5], users: u64) -> Value {
    json!({
        "date": date, "requests": c[0], "bytes_in": c[1], "bytes_out": c[2],
        "errors_4xx": c[3], "errors_5xx": c[4], "active_users": users,
    })
}

/// The whole API over `database` (migrated, empty).
async fn api_answers_exactly(database: &Database) {
    fill(database).await;
    let tenants = Tenants::from_json(CONFIG.as_bytes()).unwrap();
    let app = app(database, Some(tenants));

    // Daily series: three days, oldest first, zeros where nothing happened.
    let body = ok(&app, "/v1/usage/daily?days=3", ACME_KEY).await;
    assert_eq!(
        body,
        json!({
            "tenant": "acme", "from": "2026-11-24", "to": "2026-11-26",
            "days": [
                day("2026-11-24", [431_780, 1, 2, 43_178, 0], 0),
                day("2026-11-25", [100, 1_000, 5_000, 5, 1], 4),
                day("2026-11-26", [120, 3_000, 5_100, 5, 3], 7),
            ],
            "totals": { "requests": 432_000, "bytes_in": 4_001, "bytes_out": 10_102,
                        "errors_4xx": 43_188, "errors_5xx": 4 },
        })
    );
    // Default 30 days: 2026-10-28 to today, the 31st of October included.
    let body = ok(&app, "/v1/usage/daily", ACME_KEY).await;
    assert_eq!(body["days"].as_array().unwrap().len(), 30);
    assert_eq!(body["from"], "2026-10-28");
    assert_eq!(
        body["days"][3],
        day("2026-10-31", [1_000, 10_000, 50_000, 40, 8], 0)
    );
    assert_eq!(body["days"][0], day("2026-10-28", [0; 5], 0));
    assert_eq!(body["totals"]["requests"], 433_000);
    // 57 days reach the first of October; 366 is the most.
    let body = ok(&app, "/v1/usage/daily?days=57", ACME_KEY).await;
    assert_eq!(
        (&body["from"], &body["totals"]["requests"]),
        (&json!("2026-10-01"), &json!(433_007))
    );
    let body = ok(&app, "/v1/usage/daily?days=366&tenant=acme", ACME_KEY).await;
    assert_eq!(body["days"].as_array().unwrap().len(), 366);

    // The billing period: November so far against 100 rpm × 60 × 24 × 30 days.
    let body = ok(&app, "/v1/usage/period", ACME_KEY).await;
    assert_eq!(
        body,
        json!({
            "tenant": "acme", "plan": "free",
            "period": { "start": "2026-11-01", "end": "2026-11-30", "today": "2026-11-26",
                        "days": 30, "days_elapsed": 26 },
            "requests": 432_000, "requests_per_minute": 100, "quota": 4_320_000,
            "quota_source": "requests_per_minute", "remaining": 3_888_000, "percent_used": 10.0,
        })
    );

    // Top endpoints over 30 days, with error rates and percentiles from the merged histogram.
    let body = ok(&app, "/v1/usage/endpoints", ACME_KEY).await;
    let c = json!({
        "endpoint": "DELETE /c", "requests": 431_780, "errors_4xx": 43_178, "errors_5xx": 0,
        "error_rate": 0.1,
        "latency_ms": { "mean": 12_000.0, "p50": 10_000.0, "p95": 10_000.0, "p99": 10_000.0 },
    });
    // GET /a: buckets [600, 480, 120]: p50 = 5 (rank 600 ends bucket 0), p95 = 10 + 15 ·
    // (1140 − 1080) / 120 = 17.5, p99 = 10 + 15 · (1188 − 1080) / 120 = 23.5.
    let a = json!({
        "endpoint": "GET /a", "requests": 1_200, "errors_4xx": 50, "errors_5xx": 10,
        "error_rate": 0.05,
        "latency_ms": { "mean": 9.0, "p50": 5.0, "p95": 17.5, "p99": 23.5 },
    });
    // POST /b: 20 requests in (50, 100]: p50 = 75, p95 = 97.5, p99 = 99.5.
    let b = json!({
        "endpoint": "POST /b", "requests": 20, "errors_4xx": 0, "errors_5xx": 2,
        "error_rate": 0.1,
        "latency_ms": { "mean": 100.0, "p50": 75.0, "p95": 97.5, "p99": 99.5 },
    });
    assert_eq!(
        body,
        json!({ "tenant": "acme", "from": "2026-10-28", "to": "2026-11-26",
                "endpoints": [c.clone(), a, b.clone()] })
    );
    let body = ok(&app, "/v1/usage/endpoints?days=30&top=1", ACME_KEY).await;
    assert_eq!(body["endpoints"], json!([c]));
    // Today only: GET /a (100) before POST /b (20).
    let body = ok(&app, "/v1/usage/endpoints?days=1", ACME_KEY).await;
    let today_a = json!({
        "endpoint": "GET /a", "requests": 100, "errors_4xx": 5, "errors_5xx": 1,
        "error_rate": 0.06,
        "latency_ms": { "mean": 9.0, "p50": 5.0, "p95": 17.5, "p99": 23.5 },
    });
    assert_eq!(body["endpoints"], json!([today_a, b]));

    // Active users per day.
    let body = ok(&app, "/v1/usage/users?days=3", ACME_KEY).await;
    assert_eq!(
        body,
        json!({ "tenant": "acme", "from": "2026-11-24", "to": "2026-11-26", "days": [
            { "date": "2026-11-24", "users": 0 },
            { "date": "2026-11-25", "users": 4 },
            { "date": "2026-11-26", "users": 7 },
        ] })
    );

    isolation(&app).await;
    refusals(&app).await;

    // Without a tenant registry only the admin token is served.
    let bare = self::app(database, None);
    assert_error(
        get(&bare, "/v1/usage/daily", Some(ACME_KEY)).await,
        StatusCode::SERVICE_UNAVAILABLE,
        "no_tenants",
        "TOLLGATE_FILTER_CONFIG",
    );
    let body = ok(&bare, "/v1/usage/period?tenant=acme", ADMIN).await;
    assert_eq!(
        (&body["requests"], &body["quota"]),
        (&json!(432_000), &Value::Null)
    );
}

/// Key A never reads B; the admin token reads anyone.
async fn isolation(app: &Router) {
    for path in [
        "/v1/usage/daily?tenant=globex",
        "/v1/usage/period?tenant=globex",
        "/v1/usage/endpoints?tenant=globex",
        "/v1/usage/users?tenant=globex",
    ] {
        assert_error(
            get(app, path, Some(ACME_KEY)).await,
            StatusCode::FORBIDDEN,
            "forbidden",
            "own tenant",
        );
    }
    let body = ok(app, "/v1/usage/daily?days=1", GLOBEX_KEY).await;
    assert_eq!(
        body["days"],
        json!([day("2026-11-26", [999, 1, 1, 0, 0], 50)])
    );
    let body = ok(app, "/v1/usage/period?tenant=globex", ADMIN).await;
    assert_eq!(
        (
            &body["plan"],
            &body["requests"],
            &body["quota"],
            &body["percent_used"]
        ),
        (&json!("pro"), &json!(999), &json!(43_200_000), &json!(0.0))
    );
    let body = ok(app, "/v1/usage/users?days=1&tenant=acme", ADMIN).await;
    assert_eq!(body["days"], json!([{ "date": "2026-11-26", "users": 7 }]));
    // A tenant the registry does not know: no data, no plan.
    let body = ok(app, "/v1/usage/period?tenant=initech", ADMIN).await;
    assert_eq!(
        (&body["plan"], &body["requests"], &body["quota_source"]),
        (&Value::Null, &json!(0), &Value::Null)
    );
}

async fn refusals(app: &Router) {
    let unauthorized = StatusCode::UNAUTHORIZED;
    assert_error(
        get(app, "/v1/usage/daily", None).await,
        unauthorized,
        "unauthorized",
        "Bearer",
    );
    for token in ["sk_acme_2", "admin", "SK_ACME_1"] {
        let answer = get(app, "/v1/usage/period", Some(token)).await;
        assert_error(answer, unauthorized, "unauthorized", "unknown API key");
    }
    let request = Request::get("/v1/usage/users")
        .header("authorization", format!("Basic {ACME_KEY}"))
        .body(Body::empty())
        .unwrap();
    assert_error(
        send_json(app, request).await,
        unauthorized,
        "unauthorized",
        "Bearer",
    );
    // Secrets are never echoed.
    let (_, body) = get(app, "/v1/usage/daily", Some("sk_leak_me")).await;
    assert!(!body.to_string().contains("sk_leak_me"));

    let bad = StatusCode::BAD_REQUEST;
    for (path, needle) in [
        (
            "/v1/usage/daily?days=0",
            "days: \"0\" is not an integer from 1 to 366",
        ),
        ("/v1/usage/daily?days=367", "days: \"367\""),
        ("/v1/usage/users?days=week", "days: \"week\""),
        (
            "/v1/usage/endpoints?top=0",
            "top: \"0\" is not an integer from 1 to 1000",
        ),
        ("/v1/usage/endpoints?top=ten", "top: \"ten\""),
        ("/v1/usage/daily?top=3", "top: unknown parameter"),
        ("/v1/usage/period?days=3", "days: unknown parameter"),
        (
            "/v1/usage/users?days=1&days=2",
            "days: given more than once",
        ),
        ("/v1/usage/users?tenant=", "tenant: must be a tenant id"),
    ] {
        let answer = get(app, path, Some(ACME_KEY)).await;
        assert_error(answer, bad, "invalid_parameter", needle);
    }
    assert_error(
        get(app, "/v1/usage/daily", Some(ADMIN)).await,
        bad,
        "invalid_parameter",
        "tenant: required with the admin token",
    );
    let request = Request::post("/v1/usage/daily")
        .body(Body::empty())
        .unwrap();
    assert_error(
        send_json(app, request).await,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method",
    );
    // The ingest route is still there.
    let request = Request::post("/v1/usage")
        .header("content-type", "application/json")
        .body(Body::from(r#"{"sender": 1, "seq": 1, "records": []}"#))
        .unwrap();
    let (status, body) = send_json(app, request).await;
    assert!(
        status == StatusCode::OK || status == StatusCode::UNPROCESSABLE_ENTITY,
        "{body}"
    );
}

#[tokio::test]
async fn sqlite_answers_exactly() {
    let database = Database::connect(Some("sqlite::memory:")).await.unwrap();
    database.migrate().await.unwrap();
    api_answers_exactly(&database).await;
    database.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_answers_exactly() {
    let Some(server) = TestPostgres::start() else {
        return;
    };
    let url = server.fresh_database().await;
    let database = Database::connect(Some(&url)).await.unwrap();
    database.migrate().await.unwrap();
    api_answers_exactly(&database).await;
    database.close().await;
}

/// The binary: a bad `TOLLGATE_FILTER_CONFIG` stops `serve` with the field (not the key); a
/// good one serves the usage API; neither an API key nor the admin token reaches the log.
#[test]
fn the_binary_refuses_a_bad_filter_config_and_serves_a_good_one() {
    let dir = std::env::temp_dir().join(format!("tollgate-usage-query-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.json");
    let good = dir.join("good.json");
    std::fs::write(
        &bad,
        r#"{"rules": [], "tenants": {"sk_acme_1": {"id": "acme", "plan": "gold"}}}"#,
    )
    .unwrap();
    std::fs::write(&good, CONFIG).unwrap();
    let log = dir.join("stderr.log");

    let mut child = start(&dir, &bad, &log, "127.0.0.1:0".parse().unwrap());
    let status = wait(&mut child, Duration::from_secs(20)).expect("serve did not stop");
    assert_eq!(status.code(), Some(1));
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(stderr.contains("tenants.<API key>.plan"), "{stderr}");
    assert!(!stderr.contains(ACME_KEY), "{stderr}");

    let address = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut child = start(&dir, &good, &log, address);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !matches!(request(address, "GET", "/readyz", None, ""), Ok((200, _))) {
        assert!(child.try_wait().unwrap().is_none(), "serve exited");
        assert!(Instant::now() < deadline, "serve is not ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, body) = request(address, "GET", "/v1/usage/period", Some(ACME_KEY), "").unwrap();
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (&body["tenant"], &body["plan"]),
        (&json!("acme"), &json!("free"))
    );
    let (status, _) = request(
        address,
        "GET",
        "/v1/usage/users?tenant=globex",
        Some(ADMIN),
        "",
    )
    .unwrap();
    assert_eq!(status, 200);
    let (status, _) = request(address, "GET", "/v1/usage/users", Some("sk_nope"), "").unwrap();
    assert_eq!(status, 401);
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = wait(&mut child, Duration::from_secs(20)).expect("serve did not stop");
    assert!(status.success(), "{status}");
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(
        stderr.contains("usage API: tenants from the filter configuration"),
        "{stderr}"
    );
    for secret in [ACME_KEY, GLOBEX_KEY, ADMIN, "sk_nope"] {
        assert!(!stderr.contains(secret), "{secret} logged: {stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn start(
    dir: &std::path::Path,
    config: &std::path::Path,
    log: &std::path::Path,
    listen: SocketAddr,
) -> Child {
    Command::new(env!("CARGO_BIN_EXE_tollgate-sidecar"))
        .arg("serve")
        .current_dir(dir)
        .env("TOLLGATE_LISTEN", listen.to_string())
        .env("TOLLGATE_DATABASE_URL", "sqlite://usage.db?mode=rwc")
        .env("TOLLGATE_FILTER_CONFIG", config)
        .env("TOLLGATE_ADMIN_TOKEN", ADMIN)
        .env("RUST_LOG", "debug")
        .env_remove("TOLLGATE_REDIS_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// Waits for `child` to exit, at most `limit` (then kills it and answers `None`).
fn wait(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}
