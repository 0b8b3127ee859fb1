//! [`LiveUsage`] against real stores and databases: every state of the flush protocol
//! (property test), flush steps slipped between a read's steps (the races the rule guards
//! against), and reads while flushes and ingestion run at once on Redis and PostgreSQL.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use proptest::prelude::*;
use tollgate_test_support::postgres::TestPostgres;
use tollgate_test_support::redis::TestRedis;
use tollgate_test_support::temp::TempDir;

use super::*;
use crate::services::flush::{FailAfter, flush, flush_with};
use crate::storage::sql::Database;
use crate::storage::sql::sink::Applied;
use crate::storage::usage::contract::{NOW, TODAY, batch, record};
use crate::storage::usage::{
    MemoryUsageStore, RedisUsageStore, Snapshot, UsageRow, UsageStore, new_flush_id,
};

const FIRST: &str = "2026-11-01";
const LAST: &str = "2026-11-30";

async fn sqlite(dir: &TempDir, name: &str) -> Database {
    let path = dir.0.join(format!("{name}.db"));
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let database = Database::connect(Some(&url)).await.unwrap();
    database.migrate().await.unwrap();
    database
}

/// The tenant's requests in November through `daily_rows`, and through `period_requests`.
async fn read(usage: &impl UsageQueries, tenant: &str) -> (u64, u64) {
    let rows = usage.daily_rows(tenant, FIRST, LAST).await.unwrap();
    let daily = rows.iter().map(|r| r.counts.requests).sum();
    let range = TenantRange {
        tenant: tenant.into(),
        from: FIRST.into(),
        to: LAST.into(),
    };
    let bulk = usage.period_requests(&[range]).await.unwrap();
    (daily, bulk.get(tenant).copied().unwrap_or(0))
}

fn row(endpoint: &str, requests: u64) -> UsageRow {
    UsageRow {
        date: TODAY.into(),
        endpoint: endpoint.into(),
        plan: "pro".into(),
        counters: Counters::from(&record("acme", TODAY, endpoint, requests)),
    }
}

#[test]
fn pending_is_the_live_rows_and_the_snapshots_not_committed() {
    let staged = |id: &str, rows| Snapshot {
        tenant: "acme".into(),
        flush_id: id.into(),
        rows,
        users: Vec::new(),
    };
    let unflushed = Unflushed {
        generation: 2,
        live: vec![row("GET /a", 1)],
        staged: vec![
            staged("x", vec![row("GET /a", 10)]),
            staged("y", vec![row("GET /b", 100)]),
        ],
    };
    let more = pending(&unflushed, &HashSet::from(["x".to_owned()]));
    let requests: Vec<(&str, u64)> = more
        .iter()
        .map(|(_, endpoint, c)| (endpoint.as_str(), c.requests))
        .collect();
    assert_eq!(requests, [("GET /a", 1), ("GET /b", 100)]);
    let flushed = vec![DailyRow {
        date: TODAY.into(),
        endpoint: "GET /a".into(),
        counts: Counts {
            requests: 10,
            ..Counts::default()
        },
    }];
    let merged = merge(flushed.clone(), &more, FIRST, LAST);
    let got: Vec<(&str, u64, u64)> = merged
        .iter()
        .map(|r| (r.endpoint.as_str(), r.counts.requests, r.counts.bytes_in))
        .collect();
    assert_eq!(got, [("GET /a", 11, 10), ("GET /b", 100, 1_000)]);
    // Dates outside the range are left out.
    assert_eq!(merge(flushed, &more, "2026-12-01", "2026-12-31").len(), 1);
    assert_eq!(
        recent_dates("2026-11-01", "2026-11-26")
            .first()
            .map(String::as_str),
        Some("2026-11-18")
    );
}

/// One step of a tenant's life: usage arrives, or one step of the flush protocol.
#[derive(Clone, Debug)]
enum Step {
    Ingest(u64),
    Stage,
    Commit,
    Release,
    Finish,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (1u64..50).prop_map(Step::Ingest),
        Just(Step::Stage),
        Just(Step::Commit),
        Just(Step::Release),
        Just(Step::Finish),
    ]
}

/// Drives `steps` by hand (the flush's stage, commit and release as separate steps, in any
/// order the protocol allows) and checks after each that both reads give every request
/// ingested so far.
async fn every_state_reads_exactly(steps: Vec<Step>) {
    let dir = TempDir::new("live-usage-prop");
    let database = sqlite(&dir, "prop").await;
    let store = Arc::new(MemoryUsageStore::new(1 << 12));
    let usage = LiveUsage::new(database.clone(), Arc::clone(&store));
    let (mut ingested, mut seq, mut unreleased) = (0, 0, Vec::<String>::new());
    for step in steps {
        match step {
            Step::Ingest(n) => {
                seq += 1;
                let endpoint = format!("GET /{}", n % 3);
                let records = vec![record("acme", TODAY, &endpoint, n)];
                store.ingest(&batch(1, seq, records), NOW).await.unwrap();
                ingested += n;
            }
            Step::Stage => {
                unreleased = store.stage("acme", &new_flush_id(NOW)).await.unwrap();
            }
            Step::Commit => {
                let committed = database.committed(&unreleased).await.unwrap();
                if let Some(id) = unreleased.iter().find(|id| !committed.contains(*id)) {
                    let snapshot = store.snapshot("acme", id).await.unwrap();
                    assert_eq!(database.apply(&snapshot).await.unwrap(), Applied::Now);
                }
            }
            Step::Release => {
                let committed = database.committed(&unreleased).await.unwrap();
                if let Some(id) = unreleased.iter().find(|id| committed.contains(*id)) {
                    store.release("acme", id).await.unwrap();
                    let id = id.clone();
                    unreleased.retain(|other| *other != id);
                }
            }
            Step::Finish => {
                if unreleased.is_empty() {
                    store.finish("acme").await.unwrap();
                }
            }
        }
        assert_eq!(read(&usage, "acme").await, (ingested, ingested));
        assert_eq!(read(&usage, "globex").await, (0, 0));
    }
    database.close().await;
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn every_state_of_the_flush_reads_exactly(steps in proptest::collection::vec(step(), 1..24)) {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(every_state_reads_exactly(steps));
    }
}

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

#[tokio::test]
async fn active_users_are_the_larger_of_the_flushed_and_the_live_count() {
    let dir = TempDir::new("live-usage-users");
    let database = sqlite(&dir, "users").await;
    let store = Arc::new(MemoryUsageStore::new(1 << 12));
    let usage = LiveUsage::new(database.clone(), Arc::clone(&store));
    let with_users = |seq, users: Vec<u64>| {
        let mut r = record("acme", TODAY, "GET /a", 1);
        r.users = users;
        batch(1, seq, vec![r])
    };
    let users = async || usage.active_users("acme", FIRST, LAST).await.unwrap();
    store
        .ingest(&with_users(1, vec![1, 2, 3]), NOW)
        .await
        .unwrap();
    assert_eq!(users().await.get(TODAY), Some(&3));
    flush(&*store, &database, NOW).await.unwrap();
    // Flushed 3, the day's set still 3: one user is one user.
    assert_eq!(users().await.get(TODAY), Some(&3));
    store.ingest(&with_users(2, vec![3, 4]), NOW).await.unwrap();
    assert_eq!(users().await.get(TODAY), Some(&4));
    assert!(
        LiveUsage::flushed(database.clone())
            .active_users("acme", FIRST, LAST)
            .await
            .unwrap()
            .get(TODAY)
            == Some(&3)
    );
    database.close().await;
}

/// Ingestion, flushes and reads all at once on Redis and PostgreSQL: every read lies between
/// what was acknowledged before it started and what was sent before it ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_during_flushes_on_redis_and_postgres_never_over_or_under_count() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let Some(postgres) = TestPostgres::start() else {
        return;
    };
    let database = Database::connect(Some(&postgres.fresh_database().await))
        .await
        .unwrap();
    database.migrate().await.unwrap();
    let store = Arc::new(
        RedisUsageStore::new(redis.url())
            .unwrap()
            .with_prefix(redis.unique_prefix()),
    );
    let usage = LiveUsage::new(database.clone(), Arc::clone(&store));
    let (sent, acked) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let done = Arc::new(AtomicBool::new(false));
    let ingester = tokio::spawn({
        let (store, sent, acked, done) = (
            Arc::clone(&store),
            Arc::clone(&sent),
            Arc::clone(&acked),
            Arc::clone(&done),
        );
        async move {
            for seq in 1..=3_000u64 {
                let n = seq % 7 + 1;
                let records = vec![record("acme", TODAY, &format!("GET /{}", seq % 4), n)];
                sent.fetch_add(n, Ordering::SeqCst);
                store.ingest(&batch(9, seq, records), NOW).await.unwrap();
                acked.fetch_add(n, Ordering::SeqCst);
            }
            done.store(true, Ordering::SeqCst);
        }
    });
    let flusher = tokio::spawn({
        let (store, database, done) = (Arc::clone(&store), database.clone(), Arc::clone(&done));
        async move {
            let mut flushes = 0u64;
            // A flush every 50 ms (production: every 5 minutes), each staging new usage.
            while !done.load(Ordering::SeqCst) {
                flush(&*store, &database, NOW).await.unwrap();
                flushes += 1;
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            flushes
        }
    });
    let mut reads = 0u64;
    while !done.load(Ordering::SeqCst) {
        let low = acked.load(Ordering::SeqCst);
        let (daily, bulk) = read(&usage, "acme").await;
        let high = sent.load(Ordering::SeqCst);
        assert!(low <= daily && daily <= high, "{low} <= {daily} <= {high}");
        assert!(low <= bulk && bulk <= high, "{low} <= {bulk} <= {high}");
        reads += 1;
    }
    ingester.await.unwrap();
    let flushes = flusher.await.unwrap();
    let total = sent.load(Ordering::SeqCst);
    assert_eq!(read(&usage, "acme").await, (total, total));
    flush(&*store, &database, NOW).await.unwrap();
    assert_eq!(read(&usage, "acme").await, (total, total));
    eprintln!("{reads} reads during {flushes} flushes");
    assert!(
        reads >= 5 && flushes >= 5,
        "{reads} reads, {flushes} flushes"
    );
    database.close().await;
}
