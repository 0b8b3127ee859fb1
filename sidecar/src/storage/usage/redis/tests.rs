//! The Redis usage store against a real Redis (see `tests/support/redis.rs`).

use super::*;
use crate::storage::usage::Counters;
use crate::storage::usage::contract::{self, NOW, TODAY, batch, record};
use redis::Client;

use tollgate_test_support::redis::{TestCluster, TestRedis};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_contract() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    contract::run_all(|| {
        RedisUsageStore::new(redis.url())
            .unwrap()
            .with_prefix(redis.unique_prefix())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_contract_on_a_cluster() {
    let Some(cluster) = TestCluster::start() else {
        return;
    };
    let n = std::cell::Cell::new(0);
    contract::run_all(|| {
        n.set(n.get() + 1);
        RedisUsageStore::new_cluster(&cluster.urls())
            .unwrap()
            .with_prefix(format!("usage-test-{}-{}", std::process::id(), n.get()))
    })
    .await;
}

#[tokio::test]
async fn keys_are_as_documented() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let prefix = redis.unique_prefix();
    let store = RedisUsageStore::new(redis.url())
        .unwrap()
        .with_prefix(prefix.clone());
    let mut r = record("acme", TODAY, "GET /api/reports", 2);
    r.users = vec![1, 2];
    store.ingest(&batch(5, 1, vec![r]), NOW).await.unwrap();
    let mut raw = Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let live = format!("{prefix}:{{acme}}:{TODAY}:GET /api/reports");
    assert_eq!(store.live_key("acme", TODAY, "GET /api/reports"), live);
    let requests: u64 = redis::cmd("HGET")
        .arg(&live)
        .arg("requests")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(requests, 2);
    let plan: String = redis::cmd("HGET")
        .arg(&live)
        .arg("plan")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(plan, "pro");
    let users: u64 = redis::cmd("PFCOUNT")
        .arg(format!("{prefix}:{{acme}}:users:{TODAY}"))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(users, 2);
    let mut dirty: Vec<String> = redis::cmd("SMEMBERS")
        .arg(format!("{prefix}:{{acme}}:dirty"))
        .query_async(&mut raw)
        .await
        .unwrap();
    dirty.sort();
    assert_eq!(
        dirty,
        [live.clone(), format!("{prefix}:{{acme}}:users:{TODAY}")]
    );
    let seq: String = redis::cmd("GET")
        .arg(format!("{prefix}:{{acme}}:seq:0000000000000005"))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(seq, "00000000000000000001");
    let tenants: Vec<String> = redis::cmd("SMEMBERS")
        .arg(format!("{prefix}:dirty-tenants"))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(tenants, ["acme"]);
    // Staging renames the live hash under the flush id.
    assert_eq!(store.stage("acme", "f1").await.unwrap(), ["f1"]);
    let staged = format!("{prefix}:{{acme}}:flush:f1:{TODAY}:GET /api/reports");
    let exists: (bool, bool) = redis::pipe()
        .cmd("EXISTS")
        .arg(&live)
        .cmd("EXISTS")
        .arg(&staged)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(exists, (false, true));
    store.release("acme", "f1").await.unwrap();
    let left: bool = redis::cmd("EXISTS")
        .arg(&staged)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(!left);
}

/// A sidecar that died between a tenant's script and the `SADD` of the dirty tenants: the
/// filter's retry is a duplicate, but it repeats the `SADD`, so the flush finds the usage.
#[tokio::test]
async fn a_retry_after_a_crash_before_the_dirty_tenant_sadd_finds_the_usage() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let prefix = redis.unique_prefix();
    let store = RedisUsageStore::new(redis.url())
        .unwrap()
        .with_prefix(prefix.clone());
    let delivery = batch(3, 1, vec![record("acme", TODAY, "e", 4)]);
    store.ingest(&delivery, NOW).await.unwrap();
    let mut raw = Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    // As if the SADD had never run.
    redis::cmd("DEL")
        .arg(store.dirty_tenants_key())
        .query_async::<()>(&mut raw)
        .await
        .unwrap();
    assert!(store.dirty_tenants().await.unwrap().is_empty());
    let retry = store.ingest(&delivery, NOW).await.unwrap();
    assert_eq!((retry.applied, retry.duplicate), (0, 1));
    assert_eq!(store.dirty_tenants().await.unwrap(), ["acme"]);
    let (rows, _) = contract::drain(&store, "acme").await;
    assert_eq!(rows[0].counters.requests, 4);
}

/// A group holding a batch that is a duplicate for one of its tenants: the tenant's script
/// names it stale, the rest of the group is applied without it, and every batch is answered
/// exactly (the duplicate's other tenant counts). Merged deltas sum, the plan is the last one
/// sent, users are the union.
#[tokio::test]
async fn a_group_with_a_stale_batch_applies_exactly_the_others() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let store = RedisUsageStore::new(redis.url())
        .unwrap()
        .with_prefix(redis.unique_prefix());
    let first = batch(1, 1, vec![record("acme", TODAY, "e", 1)]);
    assert_eq!(store.ingest(&first, NOW).await.unwrap().applied, 1);
    let mut free = record("acme", TODAY, "e", 2);
    free.plan = Some("free".into());
    free.users = vec![1, 2];
    let mut pro = record("acme", TODAY, "e", 3);
    pro.users = vec![2, 3];
    let group = [
        // Sender 1 again with seq 1: a duplicate for acme, new for globex.
        batch(
            1,
            1,
            vec![
                record("acme", TODAY, "e", 1),
                record("globex", TODAY, "e", 5),
            ],
        ),
        batch(2, 1, vec![free]),
        batch(3, 7, vec![pro, record("acme", TODAY, "f", 4)]),
    ];
    let (pending, answers): (Vec<_>, Vec<_>) = group
        .iter()
        .map(|b| ingest::prepare(&store.shared, b).unwrap())
        .unzip();
    ingest::commit(&store.shared, pending).await;
    let mut got = Vec::new();
    for answer in answers {
        got.push(answer.await.unwrap().unwrap());
    }
    assert_eq!(got, [vec![false, true], vec![true], vec![true]]);
    let (rows, users) = contract::drain(&store, "acme").await;
    assert_eq!(users, [(TODAY.to_owned(), 3)]);
    let e = &rows[0];
    assert_eq!((e.endpoint.as_str(), e.plan.as_str()), ("e", "pro"));
    let mut sum = Counters::from(&record("acme", TODAY, "e", 1));
    sum.add(&Counters::from(&record("acme", TODAY, "e", 2)));
    sum.add(&Counters::from(&record("acme", TODAY, "e", 3)));
    assert_eq!(e.counters, sum);
    assert_eq!(rows[1].counters.requests, 4);
    let (rows, _) = contract::drain(&store, "globex").await;
    assert_eq!(rows[0].counters.requests, 5);
    // The marks moved: the same group again is all duplicates.
    let again: Vec<_> = group
        .iter()
        .map(|b| ingest::prepare(&store.shared, b).unwrap())
        .collect();
    let (pending, answers): (Vec<_>, Vec<_>) = again.into_iter().unzip();
    ingest::commit(&store.shared, pending).await;
    for answer in answers {
        assert!(answer.await.unwrap().unwrap().iter().all(|fresh| !fresh));
    }
    assert_eq!(contract::drain(&store, "acme").await.0, []);
}

/// Many senders at once, each batch also retried: every record counts once, through groups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_senders_with_retries_count_once() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let store = std::sync::Arc::new(
        RedisUsageStore::new(redis.url())
            .unwrap()
            .with_prefix(redis.unique_prefix()),
    );
    let tasks: Vec<_> = (0..32u64)
        .map(|sender| {
            let store = std::sync::Arc::clone(&store);
            tokio::spawn(async move {
                let mut applied = 0;
                for seq in 1..=5 {
                    let tenants = ["a", "b", "c"];
                    let delivery = batch(
                        sender,
                        seq,
                        tenants
                            .iter()
                            .map(|t| record(t, TODAY, &format!("e{}", seq % 2), 1))
                            .collect(),
                    );
                    let (once, again) =
                        tokio::join!(store.ingest(&delivery, NOW), store.ingest(&delivery, NOW));
                    let (once, again) = (once.unwrap(), again.unwrap());
                    assert_eq!(once.applied + again.applied, 3);
                    assert_eq!(once.duplicate + again.duplicate, 3);
                    applied += once.applied + again.applied;
                }
                applied
            })
        })
        .collect();
    let mut applied = 0;
    for task in tasks {
        applied += task.await.unwrap();
    }
    assert_eq!(applied, 32 * 5 * 3);
    for tenant in ["a", "b", "c"] {
        let (rows, _) = contract::drain(&*store, tenant).await;
        let requests: u64 = rows.iter().map(|r| r.counters.requests).sum();
        assert_eq!(requests, 32 * 5, "{tenant}");
    }
}
