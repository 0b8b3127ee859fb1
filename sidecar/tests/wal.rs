//! The usage log on Redis: Redis restarted (losing everything) between ingestion and the
//! flush, and the sidecar restarted too; a replay of many batches per sender that stops
//! midway and runs again; and a full disk (the in-memory store, no Redis). Every request sent
//! ends in `api_usage_daily` exactly once. A throw-away `redis-server` (`support/redis.rs`)
//! and an in-memory SQLite database.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use support::redis::TestRedis;
use tollgate_filter::Nanos;
use tollgate_filter::usage::{USAGE_PATH, UsageBatch, UsageRecord};
use tollgate_sidecar::metrics::Metrics;
use tollgate_sidecar::services::flush;
use tollgate_sidecar::storage::MemoryStore;
use tollgate_sidecar::storage::sql::Database;
use tollgate_sidecar::storage::usage::{
    Ingested, MemoryUsageStore, RedisUsageStore, Snapshot, StoreError, UsageStore,
};
use tollgate_sidecar::wal::{LogSettings, Logged, LoggedOptions, Marker, RedisWatch, UsageLog};
use tollgate_sidecar::{AppState, app};

fn today() -> String {
    tollgate_filter::usage::format_date(
        (tollgate_sidecar::system_clock() / 86_400_000_000_000) as i64,
    )
}

/// Batch `seq` of `sender`: one record of tenant `t{seq % 3}` with `seq` requests.
fn batch(sender: u64, seq: u64) -> UsageBatch {
    let mut record = UsageRecord::new(&format!("t{}", seq % 3), Some("pro"), &today(), "GET /x");
    record.requests = seq;
    record.latency_buckets[0] = seq;
    UsageBatch {
        sender,
        seq,
        records: vec![record],
        requests: Vec::new(),
    }
}

fn redis_or_fail() -> Option<TestRedis> {
    let redis = TestRedis::start()?;
    assert!(
        redis.is_throw_away(),
        "this test restarts Redis: it needs a throw-away redis-server (unset \
         TOLLGATE_TEST_REDIS_URL)"
    );
    Some(redis)
}

fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tollgate-wal-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A sidecar's usage store: Redis behind the log in `dir`, replayed and watched.
async fn open(
    dir: &Path,
    redis: &TestRedis,
    database: &Database,
    metrics: &Arc<Metrics>,
) -> Arc<Logged<Flaky<RedisUsageStore>>> {
    open_flaky(dir, redis, database, metrics, Vec::new()).await
}

/// [`open`], the store failing the replay's calls numbered in `fail_at` midway ([`Flaky`]).
async fn open_flaky(
    dir: &Path,
    redis: &TestRedis,
    database: &Database,
    metrics: &Arc<Metrics>,
    fail_at: Vec<u64>,
) -> Arc<Logged<Flaky<RedisUsageStore>>> {
    let settings = LogSettings {
        dir: dir.to_owned(),
        max_bytes: 1 << 30,
    };
    let log = UsageLog::open(&settings, None).unwrap();
    let marker = Arc::new(Marker::new("usage", log.id()));
    let store = RedisUsageStore::new(redis.url())
        .unwrap()
        .with_marker(Arc::clone(&marker));
    let watched = fail_at.is_empty();
    let store = Flaky {
        inner: store,
        calls: AtomicU64::new(0),
        fail_at,
    };
    let options = LoggedOptions {
        log: Some(log),
        database: database.clone(),
        redis: Some((marker, RedisWatch::new(redis.url(), false).unwrap())),
        metrics: Arc::clone(metrics),
    };
    let logged = Arc::new(Logged::open(store, options).await.unwrap());
    // A failing replay is run again by the test itself, not by the watcher.
    if watched {
        logged.watch();
    }
    logged
}

/// Sends `batch` as the filter does: again until it is acknowledged (bounded).
async fn send<S: UsageStore>(store: &Logged<S>, batch: &UsageBatch) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match store.ingest(batch, tollgate_sidecar::system_clock()).await {
            Ok(_) => return,
            Err(error) if Instant::now() < deadline => {
                eprintln!("batch {} refused ({error}); resent", batch.seq);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("batch {} never acknowledged: {error}", batch.seq),
        }
    }
}

async fn total(database: &Database) -> i64 {
    let Database::Sqlite(pool) = database else {
        unreachable!()
    };
    sqlx::query_scalar("SELECT COALESCE(SUM(requests), 0) FROM api_usage_daily")
        .fetch_one(pool)
        .await
        .unwrap()
}

fn metric(metrics: &Metrics, name: &str) -> f64 {
    metrics
        .render()
        .lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_between_ingestion_and_flush_loses_nothing() {
    let Some(mut redis) = redis_or_fail() else {
        return;
    };
    let dir = fresh_dir("restart");
    let database = Database::open(Some("sqlite::memory:")).await.unwrap();
    let metrics = Arc::new(Metrics::new());
    let store = open(&dir, &redis, &database, &metrics).await;
    // A first flush, so that the replay must skip what the database has.
    for seq in 1..=20 {
        send(&store, &batch(1, seq)).await;
    }
    flush::flush(&*store, &database, tollgate_sidecar::system_clock())
        .await
        .unwrap();
    for seq in 21..=50 {
        send(&store, &batch(1, seq)).await;
    }
    redis.restart().unwrap();
    // The same sender goes on at once: its newer batches must not land before the replay.
    for seq in 51..=57 {
        send(&store, &batch(1, seq)).await;
    }
    flush::flush(&*store, &database, tollgate_sidecar::system_clock())
        .await
        .unwrap();
    assert_eq!(total(&database).await, (1..=57).sum::<i64>());
    assert!(metric(&metrics, "tollgate_usage_log_replays_total") >= 2.0);
    // The 30 batches after the first flush, and batch 51 when its first try was logged
    // before the replay (refused by the store): each counted once.
    let replayed = metric(&metrics, "tollgate_usage_log_replayed_records_total");
    assert!((30.0..=31.0).contains(&replayed), "{replayed}");

    // The sidecar restarts too (its log replayed into a Redis that has everything: nothing
    // counts twice), then Redis once more.
    for seq in 58..=60 {
        send(&store, &batch(1, seq)).await;
    }
    drop(store);
    let store = open(&dir, &redis, &database, &metrics).await;
    redis.restart().unwrap();
    send(&store, &batch(1, 61)).await;
    flush::flush(&*store, &database, tollgate_sidecar::system_clock())
        .await
        .unwrap();
    assert_eq!(total(&database).await, (1..=61).sum::<i64>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_started_while_redis_is_down_replays_once_it_is_back() {
    let Some(mut redis) = redis_or_fail() else {
        return;
    };
    let dir = fresh_dir("down");
    let database = Database::open(Some("sqlite::memory:")).await.unwrap();
    let metrics = Arc::new(Metrics::new());
    let store = open(&dir, &redis, &database, &metrics).await;
    for seq in 1..=10 {
        send(&store, &batch(2, seq)).await;
    }
    drop(store);
    redis.stop(); // gone with everything it had
    let store = open(&dir, &redis, &database, &metrics).await;
    assert!(
        store
            .ingest(&batch(2, 11), tollgate_sidecar::system_clock())
            .await
            .is_err()
    );
    redis.restart().unwrap();
    // Batch 11 gets in only after the replay of 1 to 10 (same sender, older seqs).
    send(&store, &batch(2, 11)).await;
    flush::flush(&*store, &database, tollgate_sidecar::system_clock())
        .await
        .unwrap();
    assert_eq!(total(&database).await, (1..=11).sum::<i64>());
}

/// A store whose `ingest_in_order` call number `fail_at` (counted from 1 over every call)
/// applies only the first half of its batches and then fails: a store that went away in the
/// middle of a replay. Everything else goes straight to `inner`.
struct Flaky<S> {
    inner: S,
    calls: AtomicU64,
    fail_at: Vec<u64>,
}

impl<S: UsageStore> UsageStore for Flaky<S> {
    async fn ingest(&self, batch: &UsageBatch, now: Nanos) -> Result<Ingested, StoreError> {
        self.inner.ingest(batch, now).await
    }

    async fn ingest_in_order(
        &self,
        batches: &[UsageBatch],
        now: Nanos,
    ) -> Result<Ingested, StoreError> {
        let call = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        if self.fail_at.contains(&call) {
            self.inner
                .ingest_in_order(&batches[..batches.len() / 2], now)
                .await?;
            return Err(StoreError::Unavailable("injected midway".into()));
        }
        self.inner.ingest_in_order(batches, now).await
    }

    async fn dirty_tenants(&self) -> Result<Vec<String>, StoreError> {
        self.inner.dirty_tenants().await
    }

    async fn stage(&self, tenant: &str, flush_id: &str) -> Result<Vec<String>, StoreError> {
        self.inner.stage(tenant, flush_id).await
    }

    async fn snapshot(&self, tenant: &str, flush_id: &str) -> Result<Snapshot, StoreError> {
        self.inner.snapshot(tenant, flush_id).await
    }

    async fn release(&self, tenant: &str, flush_id: &str) -> Result<(), StoreError> {
        self.inner.release(tenant, flush_id).await
    }

    async fn finish(&self, tenant: &str) -> Result<(), StoreError> {
        self.inner.finish(tenant).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
}

/// Batch `seq` of `sender` with three tenants: `seq` requests for each of `t0`, `t1` and `t2`
/// on one of five endpoints.
fn wide(sender: u64, seq: u64) -> UsageBatch {
    let records = (0..3)
        .map(|t| {
            let endpoint = format!("GET /e{}", (seq + t) % 5);
            let mut record = UsageRecord::new(&format!("t{t}"), Some("pro"), &today(), &endpoint);
            record.requests = seq;
            record
        })
        .collect();
    UsageBatch {
        sender,
        seq,
        records,
        requests: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_of_many_batches_per_sender_stopped_midway_counts_each_record_once() {
    let Some(mut redis) = redis_or_fail() else {
        return;
    };
    let dir = fresh_dir("midway");
    let database = Database::open(Some("sqlite::memory:")).await.unwrap();
    let metrics = Arc::new(Metrics::new());
    let store = open(&dir, &redis, &database, &metrics).await;
    // Four senders, 60 batches each, interleaved; the first 20 of each flushed.
    let (senders, batches) = (4, 60);
    for seq in 1..=batches {
        for sender in 1..=senders {
            send(&*store, &wide(10 + sender, seq)).await;
        }
        if seq == 20 {
            flush::flush(&*store, &database, tollgate_sidecar::system_clock())
                .await
                .unwrap();
        }
    }
    let unflushed = senders * (batches - 20) * 3;
    // Replayed while Redis has everything: each record is a duplicate.
    let replayed = store.replay_now().await.unwrap();
    assert_eq!((replayed.records, replayed.applied), (unflushed, 0));
    drop(store);
    // Redis loses everything; the sidecar restarts and its replay stops halfway (the store
    // went away), then runs again: the half that landed is not counted twice.
    redis.restart().unwrap();
    let store = open_flaky(&dir, &redis, &database, &metrics, vec![1]).await;
    let rest = store.replay_now().await.unwrap();
    assert_eq!(rest.records, unflushed);
    let half = senders * (batches - 20) / 2 * 3;
    assert_eq!(rest.applied, unflushed - half);
    let again = store.replay_now().await.unwrap();
    assert_eq!((again.records, again.applied), (unflushed, 0));
    send(&*store, &wide(11, batches + 1)).await;
    flush::flush(&*store, &database, tollgate_sidecar::system_clock())
        .await
        .unwrap();
    let per_sender: i64 = (1..=batches as i64).sum::<i64>() * 3;
    let sent = senders as i64 * per_sender + 3 * (batches as i64 + 1);
    assert_eq!(total(&database).await, sent);
}

/// The in-memory store behind the log in `dir` (no Redis), replayed, and the API over it.
async fn open_memory(
    dir: &Path,
    database: &Database,
) -> (Arc<Logged<MemoryUsageStore>>, axum::Router) {
    let settings = LogSettings {
        dir: dir.to_owned(),
        max_bytes: 1 << 30,
    };
    let options = LoggedOptions {
        log: Some(UsageLog::open(&settings, None).unwrap()),
        database: database.clone(),
        redis: None,
        metrics: Arc::new(Metrics::new()),
    };
    let store = Arc::new(
        Logged::open(MemoryUsageStore::new(1 << 16), options)
            .await
            .unwrap(),
    );
    let state = AppState::new(MemoryStore::new(1_000)).with_usage(Arc::clone(&store));
    (store, app(state))
}

/// `POST /v1/usage` of `batch`: the status and the answer.
async fn post(app: &axum::Router, batch: &UsageBatch) -> (StatusCode, serde_json::Value) {
    support::api::post(app, USAGE_PATH, serde_json::to_vec(batch).unwrap()).await
}

/// The segment files of the log in `dir`, by number.
fn segments(dir: &Path) -> Vec<u64> {
    let mut numbers: Vec<u64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|entry| {
            let name = entry.unwrap().file_name().into_string().ok()?;
            name.strip_suffix(".log")?.parse().ok()
        })
        .collect();
    numbers.sort_unstable();
    numbers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_batches_and_loses_nothing() {
    // /dev/full answers every write with ENOSPC, as a full disk does; no root needed.
    let full = Path::new("/dev/full");
    if !full.exists() {
        eprintln!("skipped: no /dev/full on this system");
        return;
    }
    let dir = fresh_dir("full");
    let database = Database::open(Some("sqlite::memory:")).await.unwrap();
    let (store, api) = open_memory(&dir, &database).await;
    for seq in 1..=5 {
        let (status, answer) = post(&api, &batch(3, seq)).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
    }
    // The disk fills up: every segment the log opens next is /dev/full.
    let next = segments(&dir).last().copied().unwrap() + 1;
    let links: Vec<PathBuf> = (next..next + 100)
        .map(|n| dir.join(format!("{n:020}.log")))
        .collect();
    for link in &links {
        std::os::unix::fs::symlink(full, link).unwrap();
    }
    // A flush starts in a new segment (on the full disk) and cannot log its step: it stops,
    // and the usage stays where it is.
    let _ = flush::flush(&*store, &database, tollgate_sidecar::system_clock()).await;
    assert_eq!(total(&database).await, 0);
    // Batches are refused: 503, naming the disk; the filter keeps them.
    for seq in 6..=8 {
        let (status, answer) = post(&api, &batch(3, seq)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{answer}");
        assert_eq!(answer["error"], "usage_log_unavailable", "{answer}");
        let message = answer["message"].as_str().unwrap();
        assert!(
            message.contains("usage log") && message.contains("No space left on device"),
            "{message}"
        );
    }
    // Space is back: the filter's resends get in, each once (the last one twice: a duplicate).
    for link in &links {
        std::fs::remove_file(link).unwrap();
    }
    for seq in 6..=8 {
        let (status, answer) = post(&api, &batch(3, seq)).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["applied"], 1, "{answer}");
    }
    let (_, answer) = post(&api, &batch(3, 8)).await;
    assert_eq!(answer["duplicate"], 1, "{answer}");
    // The sidecar dies (kill -9: the in-memory store is gone) and starts again: the replay
    // brings back everything acknowledged, before and after the full disk, once.
    drop(api);
    drop(store);
    let (store, _) = open_memory(&dir, &database).await;
    flush::flush(&*store, &database, tollgate_sidecar::system_clock())
        .await
        .unwrap();
    assert_eq!(total(&database).await, (1..=8).sum::<i64>());
}
