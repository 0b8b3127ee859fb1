//! Usage metering end to end inside the sidecar: requests aggregated by the filter's
//! `UsageAggregate`, sent to `POST /v1/usage`, flushed into the usage database — with a crash
//! injected after each flush step and traffic arriving meanwhile — and every column of
//! `api_usage_daily` (and `api_active_users_daily`) compared with what was sent. Run on the
//! in-process store with SQLite and on Redis with PostgreSQL (throw-away servers from
//! `support/`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::http::StatusCode;
use sqlx::Row as _;
use support::api::post;
use support::postgres::TestPostgres;
use support::redis::TestRedis;
use tollgate_filter::usage::{
    LATENCY_BUCKETS, RequestUsage, USAGE_PATH, UsageAggregate, UsageBatch, latency_bucket,
};
use tollgate_sidecar::services::flush::{self, FailAfter, FlushError};
use tollgate_sidecar::storage::MemoryStore;
use tollgate_sidecar::storage::sql::Database;
use tollgate_sidecar::storage::usage::{MemoryUsageStore, RedisUsageStore, UsageStore};
use tollgate_sidecar::{AppState, app};

/// 2026-11-26T12:00:00Z.
const NOW: u64 = 1_795_694_400_000_000_000;
const DATES: [&str; 2] = ["2026-11-26", "2026-11-25"];
const TENANTS: [&str; 3] = ["acme", "globex", "umbrella-7"];
const ENDPOINTS: [&str; 3] = [
    "GET /api/reports",
    "POST /api/items",
    "DELETE /api/items/{id}",
];

fn clock() -> u64 {
    NOW
}

/// One request as the filter saw it (owned).
#[derive(Clone, Debug)]
struct Sent {
    tenant: &'static str,
    plan: &'static str,
    date: &'static str,
    endpoint: &'static str,
    status: u16,
    bytes_in: u64,
    bytes_out: u64,
    latency_ms: u64,
    user: Option<u64>,
}

/// The `n`th request of a deterministic mix of tenants, dates, endpoints, statuses, sizes,
/// latencies (every bucket) and users.
fn nth(n: u64) -> Sent {
    let pick = |k: u64, len: usize| (n / k) as usize % len;
    let statuses = [200, 201, 204, 404, 429, 500, 503, 302];
    let latencies = [
        1, 5, 6, 12, 30, 70, 200, 400, 900, 2_000, 4_000, 9_000, 15_000,
    ];
    Sent {
        tenant: TENANTS[pick(1, 3)],
        plan: ["free", "pro"][pick(7, 2)],
        date: DATES[pick(5, 2)],
        endpoint: ENDPOINTS[pick(2, 3)],
        status: statuses[pick(3, statuses.len())],
        bytes_in: n % 97 * 13,
        bytes_out: n % 89 * 1_021,
        latency_ms: latencies[pick(1, latencies.len())],
        user: (!n.is_multiple_of(4)).then_some(n % 11),
    }
}

/// Batches of at most `per_batch` records for `requests`, from sender `sender` starting at
/// `seq`, built the way a filter worker builds them.
fn batches(requests: &[Sent], sender: u64, seq: &AtomicU64, per_batch: usize) -> Vec<UsageBatch> {
    let mut aggregate = UsageAggregate::new(10_000);
    for r in requests {
        assert!(aggregate.record(&RequestUsage {
            tenant: r.tenant,
            plan: Some(r.plan),
            date: r.date,
            endpoint: r.endpoint,
            status: r.status,
            bytes_in: r.bytes_in,
            bytes_out: r.bytes_out,
            latency_ms: r.latency_ms,
            user: r.user,
        }));
    }
    let mut out = Vec::new();
    while !aggregate.is_empty() {
        out.push(UsageBatch {
            sender,
            seq: seq.fetch_add(1, Ordering::Relaxed),
            records: aggregate.drain(per_batch),
            requests: Vec::new(),
        });
    }
    out
}

/// A row of `api_usage_daily`: plan, the six counters, the histogram.
type Entry = (String, [i64; 6], Vec<i64>);
type Table = BTreeMap<(String, String, String), Entry>;
type Users = BTreeMap<(String, String), i64>;

/// What the tables must hold after `requests` were all flushed (computed from the requests,
/// not from the aggregate).
fn expected(requests: &[Sent]) -> (Table, Users) {
    let mut table = Table::new();
    let mut users: BTreeMap<(String, String), BTreeSet<u64>> = BTreeMap::new();
    for r in requests {
        let key = (r.tenant.into(), r.date.into(), r.endpoint.into());
        let row = table
            .entry(key)
            .or_insert_with(|| (String::new(), [0; 6], vec![0; LATENCY_BUCKETS]));
        row.0 = r.plan.into();
        let counters = [
            1,
            r.bytes_in as i64,
            r.bytes_out as i64,
            i64::from((400..500).contains(&r.status)),
            i64::from((500..600).contains(&r.status)),
            r.latency_ms as i64,
        ];
        for (sum, add) in row.1.iter_mut().zip(counters) {
            *sum += add;
        }
        row.2[latency_bucket(r.latency_ms)] += 1;
        if let Some(user) = r.user {
            users
                .entry((r.tenant.into(), r.date.into()))
                .or_default()
                .insert(user);
        }
    }
    let users = users
        .into_iter()
        .map(|(key, set)| (key, set.len() as i64))
        .collect();
    (table, users)
}

/// Both tables as they are.
async fn tables(database: &Database) -> (Table, Users) {
    let select = "SELECT tenant_id, {date} AS date, endpoint, plan, requests, bytes_in, \
                  bytes_out, errors_4xx, errors_5xx, latency_ms_sum, latency_buckets \
                  FROM api_usage_daily";
    let users_select = "SELECT tenant_id, {date} AS date, users FROM api_active_users_daily";
    let mut table = Table::new();
    let mut users = Users::new();
    let counters = |row: &dyn Fn(&str) -> i64| {
        [
            row("requests"),
            row("bytes_in"),
            row("bytes_out"),
            row("errors_4xx"),
            row("errors_5xx"),
            row("latency_ms_sum"),
        ]
    };
    match database {
        Database::Postgres(pool) => {
            for row in sqlx::query(&select.replace("{date}", "date::text"))
                .fetch_all(pool)
                .await
                .unwrap()
            {
                let key = (row.get(0), row.get(1), row.get(2));
                let get = |c: &str| row.get::<i64, _>(c);
                table.insert(key, (row.get(3), counters(&get), row.get(10)));
            }
            for row in sqlx::query(&users_select.replace("{date}", "date::text"))
                .fetch_all(pool)
                .await
                .unwrap()
            {
                users.insert((row.get(0), row.get(1)), row.get(2));
            }
        }
        Database::Sqlite(pool) => {
            for row in sqlx::query(&select.replace("{date}", "date"))
                .fetch_all(pool)
                .await
                .unwrap()
            {
                let key = (row.get(0), row.get(1), row.get(2));
                let get = |c: &str| row.get::<i64, _>(c);
                let buckets: String = row.get(10);
                let buckets = serde_json::from_str(&buckets).unwrap();
                table.insert(key, (row.get(3), counters(&get), buckets));
            }
            for row in sqlx::query(&users_select.replace("{date}", "date"))
                .fetch_all(pool)
                .await
                .unwrap()
            {
                users.insert((row.get(0), row.get(1)), row.get(2));
            }
        }
    }
    (table, users)
}

/// The API over `usage`, deciding at [`NOW`].
fn api<U: UsageStore>(usage: Arc<U>) -> Router {
    let state = AppState {
        clock,
        ..AppState::new(MemoryStore::new(1_000))
    };
    app(state.with_usage(usage))
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

/// The scenario, on a store made by `new_store` (called again after each injected crash, as a
/// restarted sidecar would connect again) and `database`.
async fn crash_after_each_step<U: UsageStore>(new_store: impl Fn() -> U, database: &Database) {
    let sender = 0x5eed;
    let seq = AtomicU64::new(1);
    let mut sent: Vec<Sent> = Vec::new();
    let mut next = 0;
    let mut take = |count: u64| {
        let requests: Vec<Sent> = (next..next + count).map(nth).collect();
        next += count;
        requests
    };
    let steps = [
        None,
        Some(FailAfter::Stage),
        Some(FailAfter::Commit),
        Some(FailAfter::Release),
    ];
    for fail in steps {
        let store = Arc::new(new_store());
        let app = api(Arc::clone(&store));
        let requests = take(150);
        for batch in batches(&requests, sender, &seq, 5) {
            let records = batch.records.len() as u64;
            assert_eq!(send(&app, &batch).await, (records, 0));
            // A retry of the same batch (its answer lost) counts nothing.
            assert_eq!(send(&app, &batch).await, (0, records));
        }
        sent.extend(requests);
        if let Some(fail) = fail {
            let error = flush::flush_with(&*store, database, NOW, Some(fail))
                .await
                .unwrap_err();
            assert!(
                matches!(error, FlushError::Injected(f) if f == fail),
                "{error}"
            );
        }
        // Traffic while the sidecar restarts, then a restarted sidecar flushes.
        let requests = take(40);
        for batch in batches(&requests, sender, &seq, 7) {
            send(&app, &batch).await;
        }
        sent.extend(requests);
        let store = if fail.is_none() {
            store
        } else {
            restart(store, &new_store)
        };
        let report = flush::flush(&*store, database, NOW).await.unwrap();
        if fail == Some(FailAfter::Commit) {
            assert_eq!(report.already_applied, 1, "{fail:?}: {report:?}");
        } else {
            assert_eq!(report.already_applied, 0, "{fail:?}: {report:?}");
        }
        assert_eq!(tables(database).await, expected(&sent), "after {fail:?}");
        // Nothing left: another flush changes nothing.
        let again = flush::flush(&*store, database, NOW).await.unwrap();
        assert_eq!((again.applied, again.already_applied), (0, 0), "{again:?}");
        assert_eq!(tables(database).await, expected(&sent), "after {fail:?}");
    }
}

/// The store a restarted sidecar sees: the same one in process (a memory store does not
/// survive a real crash; a flush that stopped half way does), a new connection to Redis.
fn restart<U: UsageStore>(store: Arc<U>, new_store: &impl Fn() -> U) -> Arc<U> {
    if std::any::type_name::<U>().contains("Memory") {
        store
    } else {
        Arc::new(new_store())
    }
}

/// Flushes run over and over while batches arrive; at the end everything is in exactly once.
async fn flush_during_traffic<U: UsageStore>(store: Arc<U>, database: &Database) {
    let seq = Arc::new(AtomicU64::new(1));
    let requests: Vec<Sent> = (10_000..10_600).map(nth).collect();
    let app = api(Arc::clone(&store));
    let all = batches(&requests, 0xfeed, &seq, 3);
    // Half the batches go before the first flush and half only after it: at least one flush
    // runs with traffic on both sides of it, however the tasks are scheduled.
    let first_flush = Arc::new(tokio::sync::Notify::new());
    let flushed = Arc::clone(&first_flush);
    let sending = tokio::spawn(async move {
        let half = all.len() / 2;
        for (n, batch) in all.into_iter().enumerate() {
            if n == half {
                flushed.notified().await;
            }
            send(&app, &batch).await;
            tokio::task::yield_now().await;
        }
    });
    let mut flushes = 0;
    loop {
        flush::flush(&*store, database, NOW).await.unwrap();
        flushes += 1;
        first_flush.notify_one();
        if sending.is_finished() {
            break;
        }
    }
    sending.await.unwrap();
    flush::flush(&*store, database, NOW).await.unwrap();
    assert!(flushes >= 1, "{flushes}");
    let (table, users) = tables(database).await;
    let (want_table, want_users) = expected(&requests);
    assert_eq!((table, users), (want_table, want_users));
}

async fn sqlite() -> (Database, TempDir) {
    let dir = TempDir::new();
    let url = format!("sqlite://{}?mode=rwc", dir.0.join("usage.db").display());
    let database = Database::connect(Some(&url)).await.unwrap();
    database.migrate().await.unwrap();
    (database, dir)
}

async fn postgres(server: &TestPostgres) -> Database {
    let url = server.fresh_database().await;
    let database = Database::connect(Some(&url)).await.unwrap();
    database.migrate().await.unwrap();
    database
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_and_sqlite_survive_a_crash_after_each_flush_step() {
    let (database, _dir) = sqlite().await;
    crash_after_each_step(|| MemoryUsageStore::new(100_000), &database).await;
    database.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_and_sqlite_flush_during_traffic() {
    let (database, _dir) = sqlite().await;
    flush_during_traffic(Arc::new(MemoryUsageStore::new(100_000)), &database).await;
    database.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_and_postgres_survive_a_crash_after_each_flush_step() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let Some(server) = TestPostgres::start() else {
        return;
    };
    let database = postgres(&server).await;
    let prefix = redis.unique_prefix();
    let new_store = || {
        RedisUsageStore::new(redis.url())
            .unwrap()
            .with_prefix(prefix.clone())
    };
    crash_after_each_step(new_store, &database).await;
    database.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_and_postgres_flush_during_traffic() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let Some(server) = TestPostgres::start() else {
        return;
    };
    let database = postgres(&server).await;
    let store = RedisUsageStore::new(redis.url())
        .unwrap()
        .with_prefix(redis.unique_prefix());
    flush_during_traffic(Arc::new(store), &database).await;
    database.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_and_sqlite_flush_during_traffic() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let (database, _dir) = sqlite().await;
    let store = RedisUsageStore::new(redis.url())
        .unwrap()
        .with_prefix(redis.unique_prefix());
    flush_during_traffic(Arc::new(store), &database).await;
    database.close().await;
}

/// Two sidecars flushing one Redis into one PostgreSQL at the same time count everything once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_flushers_at_once_count_once() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let Some(server) = TestPostgres::start() else {
        return;
    };
    let database = postgres(&server).await;
    let prefix = redis.unique_prefix();
    let store = || {
        Arc::new(
            RedisUsageStore::new(redis.url())
                .unwrap()
                .with_prefix(prefix.clone()),
        )
    };
    let requests: Vec<Sent> = (20_000..20_300).map(nth).collect();
    let app = api(store());
    for batch in batches(&requests, 1, &AtomicU64::new(1), 2) {
        send(&app, &batch).await;
    }
    let (a, b) = (store(), store());
    let (da, db) = (database.clone(), database.clone());
    let one = tokio::spawn(async move { flush::flush(&*a, &da, NOW).await.unwrap() });
    let two = tokio::spawn(async move { flush::flush(&*b, &db, NOW).await.unwrap() });
    let (one, two) = (one.await.unwrap(), two.await.unwrap());
    assert!(one.applied + two.applied >= 1);
    flush::flush(&*store(), &database, NOW).await.unwrap();
    assert_eq!(tables(&database).await, expected(&requests));
    database.close().await;
}

struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tollgate-usage-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
