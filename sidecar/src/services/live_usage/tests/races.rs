//! Flush steps slipped between a [`LiveUsage`] read's store read and its database read.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tollgate_test_support::redis::TestRedis;
use tollgate_test_support::temp::TempDir;

use super::{FIRST, LAST, read, sqlite};
use crate::services::flush::{FailAfter, flush, flush_with};
use crate::services::live_usage::LiveUsage;
use crate::storage::sql::query::DailyRow;
use crate::storage::sql::sink::Applied;
use crate::storage::sql::{Database, TenantRange, UsageQueries, UsageSink};
use crate::storage::usage::contract::{NOW, TODAY, batch, record};
use crate::storage::usage::{
    MemoryUsageStore, RedisUsageStore, Snapshot, UnflushedUsage, UsageStore,
};

/// The usage database, running flush steps of `store` just before its first read of rows
/// (between a [`LiveUsage`] read's store read and its database read).
struct Hooked<S> {
    database: Database,
    store: Arc<S>,
    hook: Mutex<Option<FailAfter>>,
    reads: AtomicUsize,
}

impl<S: UsageStore> Hooked<S> {
    async fn fire(&self) {
        self.reads.fetch_add(1, Ordering::SeqCst);
        let step = self.hook.lock().unwrap().take();
        if let Some(step) = step {
            let stopped = flush_with(&*self.store, &self.database, NOW, Some(step)).await;
            assert!(stopped.is_err(), "the injected stop {step:?} was reached");
        }
    }
}

impl<S: UsageStore> UsageSink for Hooked<S> {
    async fn apply(&self, snapshot: &Snapshot) -> Result<Applied, sqlx::Error> {
        self.database.apply(snapshot).await
    }
    fn writers(&self) -> usize {
        1
    }
    async fn committed(&self, ids: &[String]) -> Result<HashSet<String>, sqlx::Error> {
        self.database.committed(ids).await
    }
}

impl<S: UsageStore> UsageQueries for Hooked<S> {
    async fn daily_rows(
        &self,
        tenant: &str,
        from: &str,
        to: &str,
    ) -> Result<Vec<DailyRow>, sqlx::Error> {
        self.fire().await;
        self.database.daily_rows(tenant, from, to).await
    }
    async fn active_users(
        &self,
        tenant: &str,
        from: &str,
        to: &str,
    ) -> Result<BTreeMap<String, u64>, sqlx::Error> {
        self.database.active_users(tenant, from, to).await
    }
    async fn period_requests(
        &self,
        ranges: &[TenantRange],
    ) -> Result<HashMap<String, u64>, sqlx::Error> {
        self.fire().await;
        self.database.period_requests(ranges).await
    }
}

/// Flush steps slipped in between a read's store read and its database read: each would
/// make a naive read count a snapshot twice (stage + commit: once live, once in the
/// database) or miss it (commit of a staged id: once in neither); the read notices (the
/// generation or the committed ids changed), starts over, and is exact.
async fn races<S: UnflushedUsage>(store: S, database: Database) {
    let store = Arc::new(store);
    let hooked = Arc::new(Hooked {
        database,
        store: Arc::clone(&store),
        hook: Mutex::new(None),
        reads: AtomicUsize::new(0),
    });
    let usage = LiveUsage::new(HookedRef(Arc::clone(&hooked)), Arc::clone(&store));
    let mut seq = 0;
    let mut ingest = async |n| {
        seq += 1;
        let records = vec![record("acme", TODAY, "GET /a", n)];
        store.ingest(&batch(3, seq, records), NOW).await.unwrap();
    };
    let mut expect = 0;
    for (n, step, bulk) in [
        (5, FailAfter::Commit, false),
        (7, FailAfter::Commit, true),
        (11, FailAfter::Release, false),
        (13, FailAfter::Release, true),
    ] {
        ingest(n).await;
        expect += n;
        *hooked.hook.lock().unwrap() = Some(step);
        hooked.reads.store(0, Ordering::SeqCst);
        let (daily, total) = read_one(&usage, bulk).await;
        assert_eq!(total, expect, "{step:?} during a read (bulk: {bulk})");
        assert!(daily >= 2, "the read started over ({daily} database reads)");
        flush(&*store, &hooked.database, NOW).await.unwrap();
    }
    // A staged id committed during the read: nothing new staged (the generation stays), but
    // the committed ids differ between before and after.
    for bulk in [false, true] {
        ingest(17).await;
        expect += 17;
        let stopped = flush_with(&*store, &hooked.database, NOW, Some(FailAfter::Stage)).await;
        assert!(stopped.is_err());
        *hooked.hook.lock().unwrap() = Some(FailAfter::Commit);
        hooked.reads.store(0, Ordering::SeqCst);
        let (daily, total) = read_one(&usage, bulk).await;
        assert_eq!(total, expect, "a commit during a read (bulk: {bulk})");
        assert!(daily >= 2, "the read started over ({daily} database reads)");
        flush(&*store, &hooked.database, NOW).await.unwrap();
        assert_eq!(read(&usage, "acme").await, (expect, expect));
    }
}

/// Reads acme's requests once (bulk or not); returns the database reads made and the total.
async fn read_one<S: UnflushedUsage>(usage: &LiveUsage<HookedRef<S>>, bulk: bool) -> (usize, u64) {
    let total = if bulk {
        let range = TenantRange {
            tenant: "acme".into(),
            from: FIRST.into(),
            to: LAST.into(),
        };
        let totals = usage.period_requests(&[range]).await.unwrap();
        totals.get("acme").copied().unwrap_or(0)
    } else {
        let rows = usage.daily_rows("acme", FIRST, LAST).await.unwrap();
        rows.iter().map(|r| r.counts.requests).sum()
    };
    (usage.database().0.reads.load(Ordering::SeqCst), total)
}

/// A shared [`Hooked`] (the test keeps a handle to re-arm it).
struct HookedRef<S>(Arc<Hooked<S>>);

impl<S: UsageStore> UsageSink for HookedRef<S> {
    async fn apply(&self, snapshot: &Snapshot) -> Result<Applied, sqlx::Error> {
        self.0.apply(snapshot).await
    }
    fn writers(&self) -> usize {
        1
    }
    async fn committed(&self, ids: &[String]) -> Result<HashSet<String>, sqlx::Error> {
        self.0.committed(ids).await
    }
}

impl<S: UsageStore> UsageQueries for HookedRef<S> {
    async fn daily_rows(&self, t: &str, f: &str, to: &str) -> Result<Vec<DailyRow>, sqlx::Error> {
        self.0.daily_rows(t, f, to).await
    }
    async fn active_users(
        &self,
        t: &str,
        f: &str,
        to: &str,
    ) -> Result<BTreeMap<String, u64>, sqlx::Error> {
        self.0.active_users(t, f, to).await
    }
    async fn period_requests(
        &self,
        ranges: &[TenantRange],
    ) -> Result<HashMap<String, u64>, sqlx::Error> {
        self.0.period_requests(ranges).await
    }
}

#[tokio::test]
async fn flush_steps_during_a_read_are_noticed_in_memory() {
    let dir = TempDir::new("live-usage-race-memory");
    races(MemoryUsageStore::new(1 << 12), sqlite(&dir, "race").await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_steps_during_a_read_are_noticed_on_redis() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let dir = TempDir::new("live-usage-race-redis");
    let store = RedisUsageStore::new(redis.url())
        .unwrap()
        .with_prefix(redis.unique_prefix());
    races(store, sqlite(&dir, "race").await).await;
}
