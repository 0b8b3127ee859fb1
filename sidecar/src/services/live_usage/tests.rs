//! [`LiveUsage`] against real stores and databases: every state of the flush protocol
//! (property test), flush steps slipped between a read's steps (the races the rule guards
//! against, `races`), and reads while flushes and ingestion run at once on Redis and
//! PostgreSQL (`load`).

mod load;
mod races;

use std::collections::HashSet;
use std::sync::Arc;

use proptest::prelude::*;
use tollgate_test_support::temp::TempDir;

use super::*;
use crate::services::flush::flush;
use crate::storage::sql::Database;
use crate::storage::sql::sink::Applied;
use crate::storage::usage::contract::{NOW, TODAY, batch, record};
use crate::storage::usage::{MemoryUsageStore, Snapshot, UsageRow, UsageStore, new_flush_id};

pub(super) const FIRST: &str = "2026-11-01";
pub(super) const LAST: &str = "2026-11-30";

pub(super) async fn sqlite(dir: &TempDir, name: &str) -> Database {
    let path = dir.0.join(format!("{name}.db"));
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let database = Database::connect(Some(&url)).await.unwrap();
    database.migrate().await.unwrap();
    database
}

/// The tenant's requests in November through `daily_rows`, and through `period_requests`.
pub(super) async fn read(usage: &impl UsageQueries, tenant: &str) -> (u64, u64) {
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
