//! The usage log on Redis: Redis restarted (losing everything) between ingestion and the
//! flush, and the sidecar restarted too; every request sent ends in `api_usage_daily` exactly
//! once. A throw-away `redis-server` (`support/redis.rs`) and an in-memory SQLite database.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::redis::TestRedis;
use tollgate_filter::usage::{UsageBatch, UsageRecord};
use tollgate_sidecar::metrics::Metrics;
use tollgate_sidecar::services::flush;
use tollgate_sidecar::storage::sql::Database;
use tollgate_sidecar::storage::usage::{RedisUsageStore, UsageStore};
use tollgate_sidecar::wal::{LogSettings, Logged, LoggedOptions, Marker, RedisWatch, UsageLog};

fn today() -> String {
    tollgate_filter::usage::format_date(
        (tollgate_sidecar::system_clock() / 86_400_000_000_000) as i64,
    )
}

/// Batch `seq` of `sender`: one record of tenant `t{seq % 3}` with `seq` requests.
fn batch(sender: u64, seq: u64) -> UsageBatch {
    let mut record = UsageRecord::new(&format!("t{}", seq % 3), Some("pro"), &today(), "GET /x");
    record.requests = seq;
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
) -> Arc<Logged<RedisUsageStore>> {
    let settings = LogSettings {
        dir: dir.to_owned(),
        max_bytes: 1 << 30,
    };
    let log = UsageLog::open(&settings, None).unwrap();
    let marker = Arc::new(Marker::new("usage", log.id()));
    let store = RedisUsageStore::new(redis.url())
        .unwrap()
        .with_marker(Arc::clone(&marker));
    let options = LoggedOptions {
        log: Some(log),
        database: database.clone(),
        redis: Some((marker, RedisWatch::new(redis.url(), false).unwrap())),
        metrics: Arc::clone(metrics),
    };
    let logged = Arc::new(Logged::open(store, options).await.unwrap());
    logged.watch();
    logged
}

/// Sends `batch` as the filter does: again until it is acknowledged (bounded).
async fn send(store: &Logged<RedisUsageStore>, batch: &UsageBatch) {
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
