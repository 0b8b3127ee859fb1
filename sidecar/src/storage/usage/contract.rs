//! The [`UsageStore`] contract, written once and run against every impl (the in-memory one and,
//! in `redis/tests.rs`, the Redis one on a throw-away Redis). Each check gets a fresh store.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::sync::Arc;

use tollgate_filter::usage::{UsageBatch, UsageRecord};

use super::{Counters, Ingested, UsageRow, UsageStore};

/// 2026-11-26T12:00:00Z in Unix nanoseconds.
pub(crate) const NOW: u64 = 1_795_694_400_000_000_000;
pub(crate) const TODAY: &str = "2026-11-26";

/// A record with `requests` requests, one of them a 4xx, all in the 10 ms bucket.
pub(crate) fn record(tenant: &str, date: &str, endpoint: &str, requests: u64) -> UsageRecord {
    let mut record = UsageRecord::new(tenant, Some("pro"), date, endpoint);
    record.requests = requests;
    record.bytes_in = 10 * requests;
    record.bytes_out = 100 * requests;
    record.errors_4xx = requests.min(1);
    record.errors_5xx = 0;
    record.latency_ms_sum = 7 * requests;
    record.latency_buckets[1] = requests;
    record
}

pub(crate) fn batch(sender: u64, seq: u64, records: Vec<UsageRecord>) -> UsageBatch {
    UsageBatch {
        sender,
        seq,
        records,
        requests: Vec::new(),
    }
}

fn counters(requests: u64) -> Counters {
    Counters::from(&record("t", TODAY, "e", requests))
}

/// Stages everything of `tenant` under a new id, reads every snapshot, releases them, and
/// returns rows and user counts merged.
pub(crate) async fn drain(
    store: &impl UsageStore,
    tenant: &str,
) -> (Vec<UsageRow>, Vec<(String, u64)>) {
    let ids = store
        .stage(tenant, &super::new_flush_id(NOW))
        .await
        .unwrap();
    let mut rows: Vec<UsageRow> = Vec::new();
    let mut users = Vec::new();
    for id in ids {
        let snapshot = store.snapshot(tenant, &id).await.unwrap();
        assert_eq!(
            (snapshot.tenant.as_str(), snapshot.flush_id.as_str()),
            (tenant, id.as_str())
        );
        for row in snapshot.rows {
            match rows
                .iter_mut()
                .find(|r| r.date == row.date && r.endpoint == row.endpoint)
            {
                Some(existing) => existing.counters.add(&row.counters),
                None => rows.push(row),
            }
        }
        users.extend(snapshot.users);
        store.release(tenant, &id).await.unwrap();
    }
    store.finish(tenant).await.unwrap();
    rows.sort_by(|a, b| (&a.date, &a.endpoint).cmp(&(&b.date, &b.endpoint)));
    (rows, users)
}

/// Runs every contract check, each on a fresh store from `new_store`.
pub(crate) async fn run_all<S: UsageStore>(new_store: impl Fn() -> S) {
    ingested_counts_come_out_exactly(&new_store()).await;
    each_batch_counts_once_per_tenant(&new_store()).await;
    one_batch_delivered_concurrently_counts_once(Arc::new(new_store())).await;
    batches_in_order_count_each_once(&new_store()).await;
    batches_in_order_add_up_as_one_by_one(&new_store()).await;
    staging_is_a_cut(&new_store()).await;
    distinct_users_per_day(&new_store()).await;
    new_store().ping().await.unwrap();
}

async fn ingested_counts_come_out_exactly(store: &impl UsageStore) {
    assert!(store.dirty_tenants().await.unwrap().is_empty());
    let mut odd = record("a", TODAY, "GET /x", 3);
    odd.errors_5xx = 2;
    odd.latency_buckets = [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    odd.plan = None;
    let ingested = store
        .ingest(
            &batch(
                1,
                1,
                vec![
                    odd.clone(),
                    record("a", TODAY, "GET /x", 2),
                    record("a", "2026-11-25", "GET /x", 1),
                    record("b", TODAY, "POST /y", 4),
                ],
            ),
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(
        ingested,
        Ingested {
            applied: 4,
            duplicate: 0
        }
    );
    let mut tenants = store.dirty_tenants().await.unwrap();
    tenants.sort();
    assert_eq!(tenants, ["a", "b"]);
    let (rows, users) = drain(store, "a").await;
    assert!(users.is_empty());
    let mut sum = Counters::from(&odd);
    sum.add(&counters(2));
    assert_eq!(
        rows,
        [
            UsageRow {
                date: "2026-11-25".into(),
                endpoint: "GET /x".into(),
                plan: "pro".into(),
                counters: counters(1),
            },
            UsageRow {
                date: TODAY.into(),
                endpoint: "GET /x".into(),
                plan: "pro".into(),
                counters: sum,
            },
        ]
    );
    assert_eq!(sum.errors_5xx, 2);
    assert_eq!(sum.latency_buckets[11], 2);
    // Drained: nothing more for "a"; "b" untouched.
    assert_eq!(drain(store, "a").await.0, []);
    assert_eq!(store.dirty_tenants().await.unwrap(), ["b"]);
    let (rows, _) = drain(store, "b").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].counters, counters(4));
    assert!(store.dirty_tenants().await.unwrap().is_empty());
}

async fn each_batch_counts_once_per_tenant(store: &impl UsageStore) {
    let once = |seq, tenants: &[&str]| {
        batch(
            7,
            seq,
            tenants.iter().map(|t| record(t, TODAY, "e", 1)).collect(),
        )
    };
    let ingest = |b: UsageBatch| async move { store.ingest(&b, NOW).await.unwrap() };
    assert_eq!(ingest(once(5, &["a"])).await.applied, 1);
    // Again, and older: duplicates.
    assert_eq!(ingest(once(5, &["a"])).await.duplicate, 1);
    assert_eq!(ingest(once(4, &["a"])).await.duplicate, 1);
    // A retry of seq 5 that also carries "b" (whose part was lost before): "b" counts.
    assert_eq!(
        ingest(once(5, &["a", "b"])).await,
        Ingested {
            applied: 1,
            duplicate: 1
        }
    );
    // Newer, gaps allowed; other senders are independent; u64 extremes compare exactly.
    assert_eq!(ingest(once(9, &["a", "b"])).await.applied, 2);
    assert_eq!(
        ingest(batch(8, 5, vec![record("a", TODAY, "e", 1)]))
            .await
            .applied,
        1
    );
    for (older, newer) in [(9_999_999_999, 10_000_000_000), (u64::MAX - 1, u64::MAX)] {
        let one = |seq| batch(older ^ 3, seq, vec![record("c", TODAY, "e", 1)]);
        assert_eq!(ingest(one(older)).await.applied, 1);
        assert_eq!(ingest(one(newer)).await.applied, 1);
        assert_eq!(ingest(one(older)).await.duplicate, 1);
        assert_eq!(ingest(one(newer)).await.duplicate, 1);
    }
    let (rows, _) = drain(store, "a").await;
    assert_eq!(rows[0].counters.requests, 3);
    let (rows, _) = drain(store, "b").await;
    assert_eq!(rows[0].counters.requests, 2);
    let (rows, _) = drain(store, "c").await;
    assert_eq!(rows[0].counters.requests, 4);
}

async fn one_batch_delivered_concurrently_counts_once<S: UsageStore>(store: Arc<S>) {
    let delivery = batch(
        9,
        1,
        vec![record("a", TODAY, "e", 1), record("b", TODAY, "e", 2)],
    );
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (store, delivery) = (Arc::clone(&store), delivery.clone());
            tokio::spawn(async move { store.ingest(&delivery, NOW).await.unwrap() })
        })
        .collect();
    let mut applied = 0;
    for task in tasks {
        applied += task.await.unwrap().applied;
    }
    assert_eq!(applied, 2);
    assert_eq!(drain(&*store, "a").await.0[0].counters.requests, 1);
    assert_eq!(drain(&*store, "b").await.0[0].counters.requests, 2);
}

async fn staging_is_a_cut(store: &impl UsageStore) {
    let ingest = |seq, n| async move {
        store
            .ingest(&batch(1, seq, vec![record("a", TODAY, "e", n)]), NOW)
            .await
            .unwrap()
    };
    ingest(1, 2).await;
    let first = store.stage("a", "first").await.unwrap();
    assert_eq!(first, ["first"]);
    // Later usage goes to fresh aggregates, not into the staged snapshot.
    ingest(2, 5).await;
    assert_eq!(store.dirty_tenants().await.unwrap(), ["a"]);
    let snapshot = store.snapshot("a", "first").await.unwrap();
    assert_eq!(snapshot.rows[0].counters, counters(2));
    // An unreleased snapshot is a leftover: the next stage lists it first, then the new one.
    let ids = store.stage("a", "second").await.unwrap();
    assert_eq!(ids, ["first", "second"]);
    assert_eq!(
        store.snapshot("a", "first").await.unwrap().rows[0].counters,
        counters(2)
    );
    assert_eq!(
        store.snapshot("a", "second").await.unwrap().rows[0].counters,
        counters(5)
    );
    store.release("a", "first").await.unwrap();
    // Nothing new: staging creates no empty snapshot.
    assert_eq!(store.stage("a", "third").await.unwrap(), ["second"]);
    store.release("a", "second").await.unwrap();
    store.release("a", "second").await.unwrap(); // twice is harmless
    assert_eq!(
        store.stage("a", "fourth").await.unwrap(),
        Vec::<String>::new()
    );
    store.finish("a").await.unwrap();
    assert!(store.dirty_tenants().await.unwrap().is_empty());
}

async fn distinct_users_per_day(store: &impl UsageStore) {
    let with_users = |date: &str, endpoint: &str, users: Vec<u64>| {
        let mut record = record("a", date, endpoint, 1);
        record.users = users;
        record
    };
    store
        .ingest(
            &batch(
                1,
                1,
                vec![
                    with_users(TODAY, "x", vec![1, 2, 3]),
                    with_users(TODAY, "y", vec![3, 4]),
                    with_users("2026-11-25", "x", vec![1]),
                ],
            ),
            NOW,
        )
        .await
        .unwrap();
    let (_, mut users) = drain(store, "a").await;
    users.sort();
    assert_eq!(users, [("2026-11-25".into(), 1), (TODAY.into(), 4)]);
    // The count is the whole day's so far, not what came since the last flush.
    store
        .ingest(&batch(1, 2, vec![with_users(TODAY, "x", vec![4, 5])]), NOW)
        .await
        .unwrap();
    let (_, users) = drain(store, "a").await;
    assert_eq!(users, [(TODAY.into(), 5)]);
}

/// [`UsageStore::ingest_in_order`] (the usage log's replay): many consecutive batches per
/// sender count exactly as one by one, when part of them was applied before (a replay stopped
/// midway), when the run holds repeats and older seqs, and when run twice.
async fn batches_in_order_count_each_once(store: &impl UsageStore) {
    // Senders 1 and 2, seqs 1..=30: tenants "a" (every batch) and "b" (even seqs), `seq`
    // requests each; sender 3, seqs 1..=20: 1,000 records of "a" (more than a store may
    // apply in one step).
    let numbered = |sender: u64, seq: u64| {
        let mut records = vec![record("a", TODAY, "e", seq)];
        if seq.is_multiple_of(2) {
            records.push(record("b", TODAY, "f", seq));
        }
        batch(sender, seq, records)
    };
    let thousand = |seq: u64| batch(3, seq, vec![record("a", TODAY, "g", 1); 1_000]);
    let mut run: Vec<UsageBatch> = Vec::new();
    for seq in 1..=30 {
        run.push(numbered(1, seq));
        run.push(numbered(2, seq));
        if seq <= 20 {
            run.push(thousand(seq));
        }
    }
    // A resend of an older batch and a repeat inside the run: duplicates.
    run.insert(40, numbered(1, 3));
    run.push(numbered(2, 30));
    let records_of =
        |batches: &[UsageBatch]| -> u64 { batches.iter().map(|b| b.records.len() as u64).sum() };
    // Applied before, as by a replay that stopped midway (per tenant a prefix of the run):
    // sender 1 up to seq 12, sender 2 up to seq 5 and the "b" part of its seq 6 (the step of
    // "a" failed), sender 3 up to seq 7.
    let mut before = 0;
    for (sender, last) in [(1, 12), (2, 5)] {
        for seq in 1..=last {
            before += store
                .ingest(&numbered(sender, seq), NOW)
                .await
                .unwrap()
                .applied;
        }
    }
    let mut partial = numbered(2, 6);
    partial.records.retain(|r| r.tenant == "b");
    before += store.ingest(&partial, NOW).await.unwrap().applied;
    for seq in 1..=7 {
        before += store.ingest(&thousand(seq), NOW).await.unwrap().applied;
    }
    assert_eq!(before, (12 + 6) + (5 + 2) + 1 + 7_000);
    let ingested = store.ingest_in_order(&run, NOW).await.unwrap();
    let duplicate = before + records_of(&[numbered(1, 3), numbered(2, 30)]);
    assert_eq!(
        ingested,
        Ingested {
            applied: records_of(&run) - duplicate,
            duplicate,
        }
    );
    // Run again: all duplicates.
    assert_eq!(
        store.ingest_in_order(&run, NOW).await.unwrap(),
        Ingested {
            applied: 0,
            duplicate: records_of(&run),
        }
    );
    let requests = |rows: &[UsageRow], endpoint: &str| {
        rows.iter()
            .filter(|r| r.endpoint == endpoint)
            .map(|r| r.counters.requests)
            .sum::<u64>()
    };
    let (rows, _) = drain(store, "a").await;
    assert_eq!(requests(&rows, "e"), 2 * (1..=30).sum::<u64>());
    assert_eq!(requests(&rows, "g"), 20_000);
    let (rows, _) = drain(store, "b").await;
    assert_eq!(requests(&rows, "f"), 2 * (2..=30).step_by(2).sum::<u64>());
}

/// [`UsageStore::ingest_in_order`] into aggregates that do not exist yet and into ones that
/// do, every counter, plan and user: the same rows as the batches ingested one by one.
async fn batches_in_order_add_up_as_one_by_one(store: &impl UsageStore) {
    let batches = |tenant: &str| -> Vec<UsageBatch> {
        (1..=6)
            .map(|seq| {
                let mut full = record(tenant, TODAY, &format!("full-{}", seq / 4), seq);
                full.errors_5xx = seq / 2;
                full.latency_buckets = [seq, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, seq % 3];
                full.users = vec![seq, seq + 1];
                full.plan = (seq != 4).then(|| format!("plan-{seq}"));
                let mut empty = record(tenant, "2026-11-25", &format!("empty-{}", seq / 3), 0);
                empty.plan = None;
                let mut late = record(tenant, TODAY, &format!("late-{}", seq % 2), seq);
                late.plan = (seq > 3).then(|| "late".to_owned());
                batch(1 + seq % 2, seq, vec![full, empty, late])
            })
            .collect()
    };
    // Both tenants get their first two batches one by one, then the rest one by one ("x") or
    // in one run ("y"): into aggregates that exist ("full-0", "empty-0", "late-*") and into
    // new ones ("full-1", "empty-1", "empty-2").
    for tenant in ["x", "y"] {
        for batch in &batches(tenant)[..2] {
            store.ingest(batch, NOW).await.unwrap();
        }
    }
    for batch in &batches("x")[2..] {
        store.ingest(batch, NOW).await.unwrap();
    }
    let run = batches("y");
    let ingested = store.ingest_in_order(&run[2..], NOW).await.unwrap();
    assert_eq!(ingested.applied, 4 * 3);
    let (x_rows, x_users) = drain(store, "x").await;
    let (y_rows, y_users) = drain(store, "y").await;
    assert_eq!(x_rows.len(), 7);
    assert_eq!(y_rows, x_rows);
    assert_eq!(y_users, x_users);
}
