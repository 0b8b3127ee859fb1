//! The detailed request log (`TOLLGATE_REQUEST_LOG`): one contract body, run against a real
//! PostgreSQL (COPY into day partitions) and SQLite (batched INSERTs): entries posted with
//! `POST /v1/usage` end up in `api_request_log` exactly as sent, a resent duplicate batch is
//! not logged twice, retention drops old days, and with the log off nothing is written; a
//! tenant reads its latest requests back (`GET /v1/usage/requests`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use sqlx::Row;
use support::api::{get, post, send_json};
use support::postgres::TestPostgres;
use support::process::http;
use support::tenants::{ACME_KEY, ADMIN, CONFIG, GLOBEX_KEY, NOW, clock};
use tollgate_filter::usage::{RequestLogEntry, USAGE_PATH, UsageBatch, UsageRecord};
use tollgate_sidecar::jobs::Jobs;
use tollgate_sidecar::jobs::request_log::{self, RequestLogSettings};
use tollgate_sidecar::metrics::Metrics;
use tollgate_sidecar::routes::usage_query::QueryState;
use tollgate_sidecar::storage::MemoryStore;
use tollgate_sidecar::storage::sql::Database;
use tollgate_sidecar::storage::sql::{RequestLogStore, partition_name};
use tollgate_sidecar::storage::usage::MemoryUsageStore;
use tollgate_sidecar::tenants::Tenants;
use tollgate_sidecar::{AppState, app};

/// 2026-11-26T12:00:00Z (Unix milliseconds).
const NOW_MS: u64 = NOW / 1_000_000;
const DAY_MS: u64 = 86_400_000;
/// 2026-11-26 as days since 1970.
const TODAY: i64 = 20_783;

/// The API over a fresh in-memory usage store, with a request log on `database` as
/// `settings` say; the metrics it counts into; its jobs (the writer, log on only).
fn api(database: &Database, settings: RequestLogSettings) -> (Router, Arc<Metrics>, Jobs) {
    let state = AppState {
        clock,
        ..AppState::new(MemoryStore::new(1_000))
    };
    let metrics = Arc::clone(&state.metrics);
    let mut jobs = Jobs::new(Arc::clone(&metrics), clock);
    let log = request_log::start(
        &mut jobs,
        settings,
        database.clone(),
        Arc::clone(&metrics),
        clock,
    );
    let usage = Arc::new(MemoryUsageStore::new(1_000));
    let queries = QueryState::new(
        database.clone(),
        Some(Tenants::from_json(CONFIG.as_bytes()).unwrap()),
        Some(ADMIN),
        Arc::clone(&metrics),
        clock,
    );
    let app = app(state
        .with_usage(usage)
        .with_request_log(log)
        .with_queries(queries)
        .with_jobs(jobs.board()));
    (app, metrics, jobs)
}

fn entry(offset_ms: u64, endpoint: &str, status: u16, user: Option<u64>) -> RequestLogEntry {
    RequestLogEntry {
        time_ms: NOW_MS + offset_ms,
        tenant: "acme".into(),
        endpoint: endpoint.into(),
        status,
        bytes_in: 100 + offset_ms,
        bytes_out: 5_000,
        latency_ms: 7,
        user,
    }
}

/// A batch of `sender`/`seq` with one record of acme today, carrying `requests`.
fn batch(seq: u64, requests: Vec<RequestLogEntry>) -> UsageBatch {
    let mut record = UsageRecord::new("acme", Some("pro"), "2026-11-26", "GET /reports");
    record.requests = 1;
    record.latency_buckets[1] = 1;
    UsageBatch {
        sender: 7,
        seq,
        records: vec![record],
        requests,
    }
}

/// Posts `batch`; asserts 200 and returns (applied, duplicate).
async fn send(app: &Router, batch: &UsageBatch) -> (u64, u64) {
    let (status, body) = post(app, USAGE_PATH, serde_json::to_vec(batch).unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    (
        body["applied"].as_u64().unwrap(),
        body["duplicate"].as_u64().unwrap(),
    )
}

/// `tollgate_request_log_entries_total{outcome}` as `/metrics` shows it.
async fn outcome(app: &Router, outcome: &str) -> u64 {
    let (status, text) = get(app, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let prefix = format!("tollgate_request_log_entries_total{{outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
        .parse()
        .unwrap()
}

/// `GET path` with `token` as the bearer credential (none: no header).
async fn read(app: &Router, path: &str, token: Option<&str>) -> (StatusCode, Value) {
    let mut request = Request::get(path);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    send_json(app, request.body(Body::empty()).unwrap()).await
}

/// How `GET /v1/usage/requests` shows `entry`.
fn shown(entry: &RequestLogEntry) -> Value {
    json!({
        "time_ms": entry.time_ms,
        "endpoint": entry.endpoint,
        "status": entry.status,
        "bytes_in": entry.bytes_in,
        "bytes_out": entry.bytes_out,
        "latency_ms": entry.latency_ms,
        "user": entry.user,
    })
}

/// A row of `api_request_log` as read: time (Unix ms), tenant, endpoint, status, bytes in,
/// bytes out, latency, user hash.
type Columns = (i64, String, String, i64, i64, i64, i64, Option<i64>);

/// Every row of `api_request_log`, oldest first (then by endpoint), as entries.
async fn rows(database: &Database) -> Vec<RequestLogEntry> {
    let columns = "tenant_id, endpoint, status::bigint AS status, bytes_in, bytes_out, \
                   latency_ms, user_hash";
    let rows: Vec<Columns> = match database {
        Database::Postgres(pool) => sqlx::query(&format!(
            "SELECT (extract(epoch FROM time) * 1000)::bigint AS time_ms, {columns} \
             FROM api_request_log ORDER BY time, endpoint"
        ))
        .fetch_all(pool)
        .await
        .unwrap()
        .iter()
        .map(tuple)
        .collect(),
        Database::Sqlite(pool) => sqlx::query(&format!(
            "SELECT time_ms, {} FROM api_request_log ORDER BY time_ms, endpoint",
            columns.replace("status::bigint AS status", "status")
        ))
        .fetch_all(pool)
        .await
        .unwrap()
        .iter()
        .map(tuple)
        .collect(),
    };
    rows.into_iter()
        .map(
            |(time_ms, tenant, endpoint, status, bytes_in, bytes_out, latency_ms, user)| {
                RequestLogEntry {
                    time_ms: time_ms.try_into().unwrap(),
                    tenant,
                    endpoint,
                    status: status.try_into().unwrap(),
                    bytes_in: bytes_in.try_into().unwrap(),
                    bytes_out: bytes_out.try_into().unwrap(),
                    latency_ms: latency_ms.try_into().unwrap(),
                    user: user.map(|hash| u64::from_ne_bytes(hash.to_ne_bytes())),
                }
            },
        )
        .collect()
}

fn tuple<R: Row>(row: &R) -> Columns
where
    usize: sqlx::ColumnIndex<R>,
    i64: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<i64>: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    String: for<'r> sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    (
        row.get(0),
        row.get(1),
        row.get(2),
        row.get(3),
        row.get(4),
        row.get(5),
        row.get(6),
        row.get(7),
    )
}

/// The days whose partition exists (PostgreSQL), sorted.
async fn partitions(database: &Database) -> Vec<String> {
    let Database::Postgres(pool) = database else {
        return Vec::new();
    };
    let mut names: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = 'api_request_log'::regclass",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    names.sort();
    names
}

/// Polls until `outcome` reaches `expected` (at most 10 s).
async fn wait_for(app: &Router, what: &str, expected: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = outcome(app, what).await;
        if seen == expected {
            return;
        }
        assert!(seen < expected, "{what}: {seen} > {expected}");
        assert!(Instant::now() < deadline, "{what}: {seen}, not {expected}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The contract every database meets, in steps that build on each other.
async fn contract(database: Database) {
    database.migrate().await.unwrap();
    logs_nothing_when_off(&database).await;
    let (app, mut expected) = logs_once_what_was_sent(&database).await;
    tenants_read_their_latest_requests(&app, &expected).await;
    // Labels with tabs, newlines and backslashes (the filter refuses control characters,
    // the writer copes anyway) come back as written.
    let odd = vec![RequestLogEntry {
        time_ms: NOW_MS + 10,
        ..entry(0, "a\tb\nc\r\\d\\te", 200, None)
    }];
    assert_eq!(
        database.write(&odd, &mut Default::default()).await.unwrap(),
        1
    );
    expected.extend(odd);
    assert_eq!(rows(&database).await, expected);
    retention_drops_old_days(&database, expected).await;
    database.close().await;
}

/// Off (the default): entries are counted as disabled, nothing is written.
async fn logs_nothing_when_off(database: &Database) {
    let (app, _, jobs) = api(database, RequestLogSettings::default());
    assert!(jobs.names().is_empty());
    let sent = batch(1, vec![entry(0, "GET /a", 200, None)]);
    assert_eq!(send(&app, &sent).await, (1, 0));
    assert_eq!(outcome(&app, "disabled").await, 1);
    assert_eq!(outcome(&app, "written").await, 0);
    assert!(rows(database).await.is_empty());
}

/// On: a full batch (3 entries) is written at once, what is left at shutdown (the interval is
/// an hour); a duplicate batch is not logged again, entries without a partition are counted.
/// Returns the app and the rows now in the table.
async fn logs_once_what_was_sent(database: &Database) -> (Router, Vec<RequestLogEntry>) {
    let postgres = matches!(database, Database::Postgres(_));
    let settings = RequestLogSettings {
        enabled: true,
        retention_days: 3,
        batch_entries: 3,
        flush_interval: Duration::from_secs(3_600),
        queue_entries: 100,
    };
    let (app, _, jobs) = api(database, settings);
    assert_eq!(jobs.names(), ["request_log"]);
    let first = vec![
        entry(0, "GET /reports", 200, Some(u64::MAX)),
        entry(1, "POST /a \"quoted\" \\N \\. é", 0, None),
        entry(2, "GET /reports", 503, Some(42)),
    ];
    assert_eq!(send(&app, &batch(1, first.clone())).await, (1, 0));
    wait_for(&app, "written", 3).await;
    assert_eq!(rows(database).await, first);
    if postgres {
        let expected: Vec<String> = (TODAY..=TODAY + 2).map(partition_name).collect();
        assert_eq!(partitions(database).await, expected);
    }
    // The same batch again is a duplicate: not logged twice.
    assert_eq!(send(&app, &batch(1, first.clone())).await, (0, 1));
    // Yesterday's entry is written (its partition made on demand), one 10 days old is out of
    // the retention and one 5 days ahead beyond the partitions: both counted, not written.
    let at = |days_ago: i64, endpoint: &str| RequestLogEntry {
        time_ms: NOW_MS
            .checked_add_signed(-days_ago * DAY_MS as i64)
            .unwrap(),
        ..entry(0, endpoint, 200, None)
    };
    let yesterday = at(1, "GET /old");
    let second = vec![
        yesterday.clone(),
        at(10, "GET /stale"),
        at(-5, "GET /ahead"),
    ];
    assert_eq!(send(&app, &batch(2, second)).await, (1, 0));
    let last = vec![entry(3, "GET /last", 404, Some(1))];
    assert_eq!(send(&app, &batch(3, last.clone())).await, (1, 0));
    jobs.stop().await;
    assert_eq!(outcome(&app, "written").await, 5);
    assert_eq!(outcome(&app, "out_of_range").await, 2);
    assert_eq!(outcome(&app, "dropped").await, 0);
    assert_eq!(outcome(&app, "failed").await, 0);
    let mut expected = vec![yesterday];
    expected.extend(first);
    expected.extend(last);
    assert_eq!(rows(database).await, expected);
    if postgres {
        let expected: Vec<String> = (TODAY - 1..=TODAY + 2).map(partition_name).collect();
        assert_eq!(partitions(database).await, expected);
    }
    (app, expected)
}

/// `GET /v1/usage/requests`: each tenant its own latest requests, newest first; the admin
/// names the tenant. `logged` is what the table holds, oldest first.
async fn tenants_read_their_latest_requests(app: &Router, logged: &[RequestLogEntry]) {
    let (status, body) = read(app, "/v1/usage/requests?limit=2", Some(ACME_KEY)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let newest: Vec<Value> = logged.iter().rev().take(2).map(shown).collect();
    assert_eq!(
        body,
        json!({"tenant": "acme", "limit": 2, "requests": newest})
    );
    let (status, body) = read(app, "/v1/usage/requests", Some(GLOBEX_KEY)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"tenant": "globex", "limit": 100, "requests": []})
    );
    let path = "/v1/usage/requests?tenant=acme&limit=1000";
    let (status, body) = read(app, path, Some(ADMIN)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let all: Vec<Value> = logged.iter().rev().map(shown).collect();
    assert_eq!(body["requests"], json!(all));
    let (status, body) = read(app, "/v1/usage/requests?tenant=acme", Some(GLOBEX_KEY)).await;
    let forbidden = (status, body["error"].as_str());
    assert_eq!(forbidden, (StatusCode::FORBIDDEN, Some("forbidden")));
    let (status, body) = read(app, "/v1/usage/requests?limit=0", Some(ACME_KEY)).await;
    let message = "limit: \"0\" is not an integer from 1 to 1000";
    assert_eq!(
        (status, body["message"].as_str()),
        (StatusCode::BAD_REQUEST, Some(message))
    );
    let (status, body) = read(app, "/v1/usage/requests", None).await;
    let unauthorized = (status, body["error"].as_str());
    assert_eq!(
        unauthorized,
        (StatusCode::UNAUTHORIZED, Some("unauthorized"))
    );
}

/// Retention of 1 day seen tomorrow: yesterday goes (its partition dropped), today stays;
/// seen 5 days later, everything goes. `logged` is what the table holds, oldest first, the
/// first entry yesterday's and the others today's.
async fn retention_drops_old_days(database: &Database, mut logged: Vec<RequestLogEntry>) {
    let postgres = matches!(database, Database::Postgres(_));
    let removed = database.maintain(TODAY + 1, 1).await.unwrap();
    assert_eq!(removed, 1, "one partition (PostgreSQL) or row (SQLite)");
    logged.remove(0);
    assert_eq!(rows(database).await, logged);
    if postgres {
        let expected: Vec<String> = (TODAY..=TODAY + 3).map(partition_name).collect();
        assert_eq!(partitions(database).await, expected);
    }
    let removed = database.maintain(TODAY + 5, 1).await.unwrap();
    let today = logged.len() as u64;
    assert_eq!(removed, if postgres { 4 } else { today });
    assert!(rows(database).await.is_empty());
}

#[tokio::test]
async fn postgres_meets_the_request_log_contract() {
    let Some(postgres) = TestPostgres::start() else {
        return;
    };
    let url = postgres.fresh_database().await;
    contract(Database::connect(Some(&url)).await.unwrap()).await;
}

#[tokio::test]
async fn sqlite_meets_the_request_log_contract() {
    contract(Database::connect(Some("sqlite::memory:")).await.unwrap()).await;
}

/// The binary with `TOLLGATE_REQUEST_LOG=on` and an hour between writes: SIGTERM writes what
/// is queued, into the default SQLite file.
#[tokio::test]
async fn sigterm_writes_the_queued_entries() {
    let dir = std::env::temp_dir().join(format!("tollgate-request-log-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let address = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate-sidecar"))
        .current_dir(&dir)
        .env("TOLLGATE_LISTEN", address.to_string())
        .env_remove("TOLLGATE_REDIS_URL")
        .env_remove("TOLLGATE_DATABASE_URL")
        .env("TOLLGATE_REQUEST_LOG", "on")
        .env("TOLLGATE_REQUEST_LOG_FLUSH_INTERVAL", "1h")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !matches!(http(address, "GET", "/readyz", ""), Ok((200, _))) {
        assert!(child.try_wait().unwrap().is_none(), "exited");
        assert!(Instant::now() < deadline, "not ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let now_ms = u64::try_from(now.as_millis()).unwrap();
    let mut sent = batch(1, Vec::new());
    sent.records[0].date = tollgate_filter::usage::utc_date(now_ms * 1_000_000);
    sent.requests = (0..5)
        .map(|n| RequestLogEntry {
            time_ms: now_ms + n,
            ..entry(0, "GET /reports", 200, Some(n))
        })
        .collect();
    let body = serde_json::to_string(&sent).unwrap();
    assert_eq!(http(address, "POST", USAGE_PATH, &body).unwrap().0, 200);
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("did not stop");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    let url = format!("sqlite://{}", dir.join("tollgate.db").display());
    let database = Database::connect(Some(&url)).await.unwrap();
    assert_eq!(rows(&database).await, sent.requests);
    database.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}
