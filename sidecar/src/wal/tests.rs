use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::segment::{self, Entry};
use super::*;
use crate::metrics::Metrics;
use crate::services::flush::{self, FailAfter, FlushError};
use crate::storage::sql::Database;
use crate::storage::usage::contract::{NOW, TODAY, batch, record};
use crate::storage::usage::{Ingested, MemoryUsageStore, Snapshot, StoreError, UsageStore};

fn fresh_dir() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "tollgate-wal-unit-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn settings(dir: &std::path::Path) -> LogSettings {
    LogSettings {
        dir: dir.to_owned(),
        max_bytes: 1 << 30,
    }
}

async fn database() -> Database {
    Database::open(Some("sqlite::memory:")).await.unwrap()
}

/// A memory store behind the log in `dir`, replayed (as after a crash of the process).
async fn open(
    dir: &std::path::Path,
    max_bytes: u64,
    database: &Database,
    crash: Option<CrashAt>,
) -> Logged<MemoryUsageStore> {
    let log = UsageLog::open(
        &LogSettings {
            dir: dir.to_owned(),
            max_bytes,
        },
        crash,
    )
    .unwrap();
    let options = LoggedOptions {
        log: Some(log),
        database: database.clone(),
        redis: None,
        metrics: Arc::new(Metrics::new()),
    };
    Logged::open(MemoryUsageStore::new(1 << 16), options)
        .await
        .unwrap()
}

/// Requests in `api_usage_daily`.
async fn total(database: &Database) -> i64 {
    let Database::Sqlite(pool) = database else {
        unreachable!()
    };
    sqlx::query_scalar("SELECT COALESCE(SUM(requests), 0) FROM api_usage_daily")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Batch `seq` of sender 7: tenants a and b, `seq` requests each.
fn numbered(seq: u64) -> tollgate_filter::usage::UsageBatch {
    batch(
        7,
        seq,
        vec![record("a", TODAY, "e", seq), record("b", TODAY, "f", seq)],
    )
}

/// Requests of batches 1..=n of [`numbered`].
fn sent(n: u64) -> i64 {
    (2 * n * (n + 1) / 2) as i64
}

#[test]
fn frames_read_back_and_a_torn_tail_is_ignored() {
    let mut data = segment::batch_frame(&numbered(1));
    data.extend(segment::staged_frame("a", "id1"));
    data.extend(segment::clean_frame(&["b".to_owned()]));
    let whole = data.len();
    data.extend(segment::batch_frame(&numbered(2)));
    let entries: Vec<Entry> = segment::frames(&data)
        .filter_map(|(_, body)| segment::decode(body))
        .collect();
    assert_eq!(entries.len(), 4);
    assert!(matches!(&entries[0], Entry::Batch(b) if *b == numbered(1)));
    assert!(
        matches!(&entries[1], Entry::Staged { tenant, flush_id } if tenant == "a" && flush_id == "id1")
    );
    assert!(matches!(&entries[2], Entry::Clean(t) if t == &["b".to_owned()]));
    // Torn anywhere in the last frame: the three whole ones only.
    for cut in [whole + 1, whole + 8, data.len() - 1] {
        assert_eq!(segment::frames(&data[..cut]).count(), 3, "cut at {cut}");
    }
    // A flipped bit fails the checksum.
    let last = data.len() - 2;
    data[last] ^= 1;
    assert_eq!(segment::frames(&data).count(), 3);
}

#[test]
fn batch_frames_read_back_exactly_and_old_json_ones_too() {
    let mut odd = record("ä/ü", "2026-11-25", "GET /v1/{id} ✓", 1);
    odd.requests = u64::MAX;
    odd.bytes_out = 1 << 35;
    odd.plan = None;
    odd.users = vec![0, 1, u64::MAX];
    odd.latency_buckets = [
        u64::MAX,
        0,
        1,
        127,
        128,
        16_383,
        16_384,
        0,
        0,
        0,
        0,
        1 << 63,
    ];
    let mut plain = record("a", TODAY, "e", 0);
    plain.plan = Some(String::new());
    let batches = [
        batch(u64::MAX, 0, vec![odd, plain]),
        batch(0, u64::MAX, Vec::new()),
        numbered(3),
    ];
    for original in &batches {
        for data in [
            segment::batch_frame(original),
            segment::json_batch_frame(original),
        ] {
            let bodies: Vec<&[u8]> = segment::frames(&data).map(|(_, body)| body).collect();
            assert_eq!(bodies.len(), 1);
            assert!(segment::is_batch(bodies[0]));
            let Some(Entry::Batch(read)) = segment::decode(bodies[0]) else {
                panic!("not a batch: {original:?}")
            };
            assert_eq!(&read, original);
        }
        // A body cut short anywhere is no batch (the checksum catches that first; the
        // decoder does not rely on it).
        let data = segment::batch_frame(original);
        let (_, body) = segment::frames(&data).next().unwrap();
        for cut in 1..body.len() {
            assert!(segment::decode(&body[..cut]).is_none(), "cut at {cut}");
        }
    }
    // Several times smaller than JSON.
    let frame = |f: fn(&tollgate_filter::usage::UsageBatch) -> Vec<u8>| f(&numbered(3)).len();
    assert!(
        3 * frame(segment::batch_frame) < frame(segment::json_batch_frame),
        "{} vs {}",
        frame(segment::batch_frame),
        frame(segment::json_batch_frame)
    );
}

#[tokio::test]
async fn a_log_with_json_batch_frames_is_replayed() {
    // A log written by an earlier version: its batch frames are JSON.
    let dir = fresh_dir();
    let database = database().await;
    std::fs::create_dir_all(&dir).unwrap();
    let mut data = Vec::new();
    for seq in 1..=3 {
        data.extend(segment::json_batch_frame(&numbered(seq)));
    }
    std::fs::write(segment::path(&dir, 1), data).unwrap();
    let store = open(&dir, 1 << 30, &database, None).await;
    store.ingest(&numbered(4), NOW).await.unwrap();
    flush::flush(&store, &database, NOW).await.unwrap();
    assert_eq!(total(&database).await, sent(4));
}

#[tokio::test]
async fn a_directory_is_used_by_one_log_at_a_time() {
    let dir = fresh_dir();
    let first = UsageLog::open(&settings(&dir), None).unwrap();
    let error = UsageLog::open(&settings(&dir), None).err().unwrap();
    assert!(error.to_string().contains("another sidecar"), "{error}");
    let id = first.id().to_owned();
    drop(first);
    assert_eq!(UsageLog::open(&settings(&dir), None).unwrap().id(), id);
}

#[tokio::test]
async fn a_crash_loses_nothing_acknowledged_and_counts_nothing_twice() {
    let dir = fresh_dir();
    let database = database().await;
    let store = open(&dir, 1 << 30, &database, None).await;
    for seq in 1..=10 {
        store.ingest(&numbered(seq), NOW).await.unwrap();
    }
    flush::flush(&store, &database, NOW).await.unwrap();
    assert_eq!(total(&database).await, sent(10));
    for seq in 11..=15 {
        store.ingest(&numbered(seq), NOW).await.unwrap();
    }
    drop(store); // kill -9: the memory store is gone
    let store = open(&dir, 1 << 30, &database, None).await;
    // A resend of an acknowledged batch is a duplicate after the replay.
    let again = store.ingest(&numbered(15), NOW).await.unwrap();
    assert_eq!((again.applied, again.duplicate), (0, 2));
    store.ingest(&numbered(16), NOW).await.unwrap();
    flush::flush(&store, &database, NOW).await.unwrap();
    assert_eq!(total(&database).await, sent(16));
    // A second crash right after the flush replays nothing flushed.
    drop(store);
    let store = open(&dir, 1 << 30, &database, None).await;
    flush::flush(&store, &database, NOW).await.unwrap();
    assert_eq!(total(&database).await, sent(16));
}

#[tokio::test]
async fn a_crash_inside_the_flush_counts_nothing_twice() {
    for fail in [FailAfter::Stage, FailAfter::Commit, FailAfter::Release] {
        let dir = fresh_dir();
        let database = database().await;
        let store = open(&dir, 1 << 30, &database, None).await;
        for seq in 1..=6 {
            store.ingest(&numbered(seq), NOW).await.unwrap();
        }
        let stopped = flush::flush_with(&store, &database, NOW, Some(fail)).await;
        assert!(matches!(stopped, Err(FlushError::Injected(_))), "{fail:?}");
        drop(store);
        let store = open(&dir, 1 << 30, &database, None).await;
        store.ingest(&numbered(7), NOW).await.unwrap();
        flush::flush(&store, &database, NOW).await.unwrap();
        assert_eq!(total(&database).await, sent(7), "{fail:?}");
    }
}

#[tokio::test]
async fn a_crash_inside_the_log_write_loses_nothing_and_counts_nothing_twice() {
    for crash in [CrashAt::AfterWrite, CrashAt::AfterSync] {
        let dir = fresh_dir();
        let database = database().await;
        let store = open(&dir, 1 << 30, &database, None).await;
        for seq in 1..=3 {
            store.ingest(&numbered(seq), NOW).await.unwrap();
        }
        drop(store);
        // Batch 4 is written (and, after AfterSync, durable) but never acknowledged.
        let store = open(&dir, 1 << 30, &database, Some(crash)).await;
        assert!(store.ingest(&numbered(4), NOW).await.is_err(), "{crash:?}");
        drop(store);
        let store = open(&dir, 1 << 30, &database, None).await;
        // The filter resends batch 4: counted once, whether the replay had it or not.
        store.ingest(&numbered(4), NOW).await.unwrap();
        flush::flush(&store, &database, NOW).await.unwrap();
        assert_eq!(total(&database).await, sent(4), "{crash:?}");
    }
}

#[tokio::test]
async fn a_crash_during_truncation_counts_nothing_twice() {
    let dir = fresh_dir();
    let database = database().await;
    // The flush commits, then its truncation dies after deleting one segment.
    let store = open(&dir, 1 << 30, &database, Some(CrashAt::DuringTruncate)).await;
    for seq in 1..=3 {
        store.ingest(&numbered(seq), NOW).await.unwrap();
    }
    flush::flush(&store, &database, NOW).await.unwrap();
    assert!(
        store.ingest(&numbered(4), NOW).await.is_err(),
        "the writer is dead"
    );
    drop(store);
    let store = open(&dir, 1 << 30, &database, None).await;
    store.ingest(&numbered(4), NOW).await.unwrap();
    flush::flush(&store, &database, NOW).await.unwrap();
    // Left after a flush per batch: covered segments, deleted by the next flush's start,
    // which dies there this time (that flush stops; its batches wait for the next one).
    for seq in 5..=7 {
        store.ingest(&numbered(seq), NOW).await.unwrap();
        flush::flush(&store, &database, NOW).await.unwrap();
    }
    store.ingest(&numbered(8), NOW).await.unwrap();
    drop(store);
    let store = open(&dir, 1 << 30, &database, Some(CrashAt::DuringTruncate)).await;
    let _ = flush::flush(&store, &database, NOW).await;
    drop(store);
    let store = open(&dir, 1 << 30, &database, None).await;
    store.ingest(&numbered(9), NOW).await.unwrap();
    flush::flush(&store, &database, NOW).await.unwrap();
    assert_eq!(total(&database).await, sent(9));
}

#[tokio::test]
async fn the_log_is_truncated_after_a_flush() {
    let dir = fresh_dir();
    let database = database().await;
    let store = open(&dir, 1 << 30, &database, None).await;
    for seq in 1..=20 {
        store.ingest(&numbered(seq), NOW).await.unwrap();
    }
    let before = store.log_bytes();
    assert!(before > 0);
    flush::flush(&store, &database, NOW).await.unwrap();
    // Every batch is in the database: only the open segment's few frames are left.
    let segments = segment::list(&dir).unwrap();
    assert_eq!(segments.len(), 1, "{segments:?}");
    assert!(store.log_bytes() < before);
}

#[tokio::test]
async fn a_full_log_refuses_batches_until_a_flush_frees_it() {
    let dir = fresh_dir();
    let database = database().await;
    let frame = segment::batch_frame(&numbered(1)).len() as u64;
    // Room for three batches and nothing else: the flush still logs its own steps.
    let store = open(&dir, 3 * frame + 10, &database, None).await;
    for seq in 1..=3 {
        store.ingest(&numbered(seq), NOW).await.unwrap();
    }
    let refused = store.ingest(&numbered(4), NOW).await.unwrap_err();
    assert!(refused.to_string().contains("usage log full"), "{refused}");
    // Refused means not counted: the flush has batches 1 to 3 only.
    flush::flush(&store, &database, NOW).await.unwrap();
    assert_eq!(total(&database).await, sent(3));
    // The filter's resend gets in once the flush freed the log.
    store.ingest(&numbered(4), NOW).await.unwrap();
    flush::flush(&store, &database, NOW).await.unwrap();
    assert_eq!(total(&database).await, sent(4));
}

#[tokio::test]
async fn replaying_again_counts_nothing_twice() {
    let dir = fresh_dir();
    let database = database().await;
    let store = open(&dir, 1 << 30, &database, None).await;
    for seq in 1..=5 {
        store.ingest(&numbered(seq), NOW).await.unwrap();
    }
    let replayed = store.replay_now().await.unwrap();
    assert_eq!((replayed.records, replayed.applied), (10, 0));
    flush::flush(&store, &database, NOW).await.unwrap();
    assert_eq!(total(&database).await, sent(5));
}

/// The memory store, but its `ingest_in_order` call number `fail_at` (counted from 1 over
/// every call) applies only the first half of its batches and fails: a store that went away
/// in the middle of a replay.
struct Flaky {
    inner: MemoryUsageStore,
    calls: AtomicU64,
    fail_at: Vec<u64>,
}

impl UsageStore for Flaky {
    async fn ingest(
        &self,
        batch: &tollgate_filter::usage::UsageBatch,
        now: u64,
    ) -> Result<Ingested, StoreError> {
        self.inner.ingest(batch, now).await
    }

    async fn ingest_in_order(
        &self,
        batches: &[tollgate_filter::usage::UsageBatch],
        now: u64,
    ) -> Result<Ingested, StoreError> {
        let call = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        if self.fail_at.contains(&call) {
            self.inner
                .ingest_in_order(&batches[..batches.len() / 2], now)
                .await?;
            return Err(StoreError::Unavailable("injected".into()));
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

#[tokio::test]
async fn a_replay_that_fails_midway_and_runs_again_counts_each_record_once() {
    let dir = fresh_dir();
    let database = database().await;
    let store = open(&dir, 1 << 30, &database, None).await;
    // Three senders, 40 batches each, interleaved; the first 10 of each flushed.
    let of = |sender: u64, seq: u64| {
        batch(
            sender,
            seq,
            vec![record("a", TODAY, "e", seq), record("b", TODAY, "f", seq)],
        )
    };
    for seq in 1..=40 {
        for sender in [7, 8, 9] {
            store.ingest(&of(sender, seq), NOW).await.unwrap();
        }
        if seq == 10 {
            flush::flush(&store, &database, NOW).await.unwrap();
        }
    }
    drop(store); // the memory store is gone; the log is replayed into a fresh one
    // Chunks of 13 batches (26 records): the replay stops inside its third chunk, the next
    // one inside its sixth; each time half of the chunk landed.
    let flaky = Flaky {
        inner: MemoryUsageStore::new(1 << 16),
        calls: AtomicU64::new(0),
        fail_at: vec![3, 9],
    };
    for _ in 0..2 {
        let stopped = replay::replay_in_chunks(&dir, &flaky, &database, NOW, true, 26).await;
        assert!(
            matches!(stopped, Err(replay::ReplayError::Store(_))),
            "{stopped:?}"
        );
    }
    let (replayed, _) = replay::replay_in_chunks(&dir, &flaky, &database, NOW, true, 26)
        .await
        .unwrap();
    assert_eq!(replayed.records, 3 * 30 * 2);
    assert!(replayed.applied < replayed.records, "{replayed:?}");
    // Replayed twice: nothing more counts.
    let (again, _) = replay::replay_in_chunks(&dir, &flaky, &database, NOW, true, 26)
        .await
        .unwrap();
    assert_eq!((again.records, again.applied), (3 * 30 * 2, 0));
    flush::flush(&flaky.inner, &database, NOW).await.unwrap();
    assert_eq!(total(&database).await, 3 * sent(40));
}
