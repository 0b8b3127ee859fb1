//! [`LiveUsage`] under load: ingestion, flushes and reads at once; and a measurement.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tollgate_test_support::postgres::TestPostgres;
use tollgate_test_support::redis::TestRedis;

use super::read;
use crate::services::flush::flush;
use crate::services::live_usage::LiveUsage;
use crate::storage::sql::{Database, TenantRange, UsageQueries};
use crate::storage::usage::contract::{NOW, TODAY, batch, record};
use crate::storage::usage::{RedisUsageStore, UsageStore};

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

/// `LiveUsage::period_requests` of 100,000 tenants on PostgreSQL, 1,000 or 10,000 of them with
/// unflushed usage in Redis (a measurement; run with `cargo test -p tollgate-sidecar --release
/// --lib live_period_requests_of_many_tenants -- --ignored --nocapture`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, run by hand"]
async fn live_period_requests_of_many_tenants() {
    let (Some(redis), Some(postgres)) = (TestRedis::start(), TestPostgres::start()) else {
        return;
    };
    let database = Database::connect(Some(&postgres.fresh_database().await))
        .await
        .unwrap();
    database.migrate().await.unwrap();
    let tenants = 100_000;
    crate::storage::sql::tests::seed_tenants(&database, tenants).await;
    let ranges: Vec<TenantRange> = (1..=tenants)
        .map(|i| TenantRange {
            tenant: format!("tenant-{i}"),
            from: format!("2026-11-0{}", 1 + i % 2),
            to: "2026-11-30".into(),
        })
        .collect();
    for dirty in [1_000u64, 10_000] {
        let store = Arc::new(
            RedisUsageStore::new(redis.url())
                .unwrap()
                .with_prefix(redis.unique_prefix()),
        );
        let ids: Vec<u64> = (1..=dirty).collect();
        for (seq, chunk) in ids.chunks(500).enumerate() {
            let records = chunk
                .iter()
                .map(|i| record(&format!("tenant-{i}"), "2026-11-02", "GET /a", 1))
                .collect();
            store
                .ingest(&batch(1, seq as u64 + 1, records), NOW)
                .await
                .unwrap();
        }
        let usage = LiveUsage::new(database.clone(), Arc::clone(&store));
        let mut times = Vec::new();
        for _ in 0..3 {
            let start = std::time::Instant::now();
            let totals = usage.period_requests(&ranges).await.unwrap();
            times.push(start.elapsed());
            assert_eq!(totals.get("tenant-3"), Some(&7));
            assert_eq!(totals.len() as i64, tenants);
        }
        times.sort();
        eprintln!(
            "LiveUsage (PostgreSQL + Redis): period_requests of {tenants} tenants, {dirty} with \
             unflushed usage: {:?} (median of 3)",
            times[1]
        );
    }
    database.close().await;
}
