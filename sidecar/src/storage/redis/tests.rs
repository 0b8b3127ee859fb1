//! The Redis store against a real Redis (see `tests/support/redis.rs`), plus its pure parts.

use super::*;
use crate::storage::contract;
use redis::Client;

use tollgate_test_support::redis::{TestCluster, TestRedis};

/// A raw connection for looking behind the store's back.
async fn raw(redis: &TestRedis) -> redis::aio::MultiplexedConnection {
    Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

fn key(rule: &str, key: u64) -> CounterKey {
    CounterKey {
        rule: rule.into(),
        key,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_contract() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    contract::run_all(|| {
        RedisStore::new(redis.url())
            .unwrap()
            .with_prefix(redis.unique_prefix())
    })
    .await;
}

#[tokio::test]
async fn keys_values_and_expiry_are_as_documented() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let prefix = redis.unique_prefix();
    let store = RedisStore::new(redis.url())
        .unwrap()
        .with_prefix(prefix.clone());
    let mut raw = raw(&redis).await;
    let k = key("per-tenant", 0xab);
    let redis_key = format!("{prefix}:{{per-tenant:00000000000000ab}}");
    assert_eq!(store.redis_key(&k), redis_key);

    // Write::Nothing on an absent key creates nothing.
    store
        .update(&k, 100, |_: &mut State| ((), Write::Nothing))
        .await
        .unwrap();
    let exists: bool = redis::cmd("EXISTS")
        .arg(&redis_key)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(!exists);

    // A write stores idle_at then State::encode, with a TTL of the remaining time + grace.
    let now = 1_000_000_000;
    let idle_at = now + 60_000 * NANOS_PER_MILLI;
    store
        .update(&k, now, |state: &mut State| {
            state.words = [1, 2, 3];
            ((), Write::State { idle_at })
        })
        .await
        .unwrap();
    let stored: Vec<u8> = redis::cmd("GET")
        .arg(&redis_key)
        .query_async(&mut raw)
        .await
        .unwrap();
    let expected = State {
        words: [1, 2, 3],
        log: vec![],
    };
    assert_eq!(stored, encode(idle_at, &expected));
    let ttl: u64 = redis::cmd("PTTL")
        .arg(&redis_key)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(ttl > 60_000 && ttl <= 60_000 + TTL_GRACE_MS, "{ttl}");

    // A write of a state that is already idle deletes the key.
    store
        .update(&k, now, |_: &mut State| ((), Write::State { idle_at: now }))
        .await
        .unwrap();
    let exists: bool = redis::cmd("EXISTS")
        .arg(&redis_key)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(!exists);

    // A value that is not a state is an error, never a fresh bucket.
    let _: () = redis::cmd("SET")
        .arg(&redis_key)
        .arg("junk")
        .query_async(&mut raw)
        .await
        .unwrap();
    let error = store
        .update(&k, now, |_: &mut State| ((), Write::Nothing))
        .await;
    assert!(
        matches!(error, Err(StoreError::Unavailable(_))),
        "{error:?}"
    );
}

#[tokio::test]
async fn a_closed_port_is_unavailable_and_the_url_is_not_echoed() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let store = RedisStore::new(&format!("redis://user:secret-pw@127.0.0.1:{port}")).unwrap();
    let error = store.ping().await.unwrap_err();
    assert_eq!(error.kind(), "store_unavailable");
    assert!(!error.to_string().contains("secret-pw"), "{error}");
    let error = store
        .update(&key("r", 1), 0, |_: &mut State| ((), Write::Nothing))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), "store_unavailable");
    let Err(error) = RedisStore::new("postgres://user:secret-pw@host/db") else {
        panic!("a postgres URL was accepted");
    };
    assert!(!error.to_string().contains("secret-pw"), "{error}");
}

#[test]
fn ttl_rounds_up_adds_grace_and_is_capped() {
    assert_eq!(ttl_ms(100, 100), TTL_GRACE_MS);
    assert_eq!(ttl_ms(101, 100), 1 + TTL_GRACE_MS);
    assert_eq!(ttl_ms(100 + NANOS_PER_MILLI, 100), 1 + TTL_GRACE_MS);
    assert_eq!(ttl_ms(100 + NANOS_PER_MILLI + 1, 100), 2 + TTL_GRACE_MS);
    assert_eq!(ttl_ms(50, 100), TTL_GRACE_MS); // a clock that went backwards
    assert_eq!(ttl_ms(u64::MAX, 0), MAX_TTL_MS);
}

#[test]
fn urls_are_logged_without_credentials() {
    for (url, shown) in [
        ("redis://:pw@redis:6379/0", "redis://redis:6379/0"),
        ("redis://user:p@ss@host", "redis://host"),
        (
            "rediss://u:pw@host:6380?protocol=resp3",
            "rediss://host:6380?protocol=resp3",
        ),
        ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
        (
            "redis+unix:///run/redis.sock",
            "redis+unix:///run/redis.sock",
        ),
        ("localhost:6379", "<not a URL>"),
    ] {
        assert_eq!(redact_url(url), shown, "{url}");
    }
}

#[test]
fn stored_states_round_trip_and_idle_ones_are_fresh() {
    let state = State {
        words: [7, 8, 9],
        log: vec![10, 20],
    };
    let bytes = encode(1_000, &state);
    assert_eq!(live_state(&bytes, 999).unwrap(), state);
    assert_eq!(live_state(&bytes, 1_000).unwrap(), State::default());
    assert_eq!(live_state(&[], 0).unwrap(), State::default());
    assert!(live_state(&bytes[..12], 0).is_err());
    assert!(live_state(&bytes[..7], 0).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_contract_on_a_cluster() {
    let Some(cluster) = TestCluster::start() else {
        return;
    };
    let prefix = format!("tollgate-test:{}", std::process::id());
    let next = std::sync::atomic::AtomicU64::new(0);
    contract::run_all(|| {
        let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        RedisStore::new_cluster(&cluster.urls())
            .unwrap()
            .with_prefix(format!("{prefix}:{n}"))
    })
    .await;
    // A single seed is enough: the other nodes are learnt from it.
    let seed = format!("redis://127.0.0.1:{}", cluster.ports()[0]);
    let store = RedisStore::new_cluster(&seed).unwrap();
    store.ping().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_buckets_spread_over_the_nodes() {
    let Some(cluster) = TestCluster::start() else {
        return;
    };
    let store = RedisStore::new_cluster(&cluster.urls())
        .unwrap()
        .with_prefix("spread");
    let mut slots = std::collections::HashSet::new();
    for rule in 0..64 {
        let k = key(&format!("rule-{rule}"), rule);
        slots.insert(cluster.slot_of(&store.redis_key(&k)).unwrap());
        store
            .update(&k, 0, |state: &mut State| {
                state.words[0] = 1;
                ((), Write::State { idle_at: HOUR })
            })
            .await
            .unwrap();
        let read = store
            .update(&k, 1, |state: &mut State| (state.words[0], Write::Nothing))
            .await
            .unwrap();
        assert_eq!(read, 1);
    }
    let per_node: Vec<u64> = cluster
        .ports()
        .iter()
        .map(|&port| cluster.keys_on(port).unwrap())
        .collect();
    assert_eq!(per_node.iter().sum::<u64>(), 64, "{per_node:?}");
    assert!(
        per_node.iter().filter(|&&n| n > 0).count() >= 2,
        "{per_node:?}"
    );
    assert!(slots.len() > 1, "{slots:?}");
}

const HOUR: u64 = 3_600_000_000_000;

#[tokio::test]
async fn batch_keys_and_expiry_are_as_documented() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let prefix = redis.unique_prefix();
    let store = RedisStore::new(redis.url())
        .unwrap()
        .with_prefix(prefix.clone());
    let mut raw = raw(&redis).await;
    let now = 1_000_000_000_000;
    let start = store.begin_batch(0xab, 42, 0xcd, now).await.unwrap();
    assert_eq!((start.fresh, start.nodes), (true, 1));

    let sender_key = format!("{prefix}:sync:{{00000000000000ab}}");
    assert_eq!(store.sender_key(0xab), sender_key);
    let seq: String = redis::cmd("GET")
        .arg(&sender_key)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(seq, "00000000000000000042");
    let ttl: u64 = redis::cmd("PTTL")
        .arg(&sender_key)
        .query_async(&mut raw)
        .await
        .unwrap();
    let sender_ttl_ms = crate::storage::SENDER_TTL / NANOS_PER_MILLI;
    assert!(
        ttl > sender_ttl_ms - 60_000 && ttl <= sender_ttl_ms,
        "{ttl}"
    );

    let nodes_key = format!("{prefix}:{{nodes}}");
    assert_eq!(store.nodes_key(), nodes_key);
    let score: f64 = redis::cmd("ZSCORE")
        .arg(&nodes_key)
        .arg("00000000000000cd")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(score, now as f64);
    let ttl: u64 = redis::cmd("PTTL")
        .arg(&nodes_key)
        .query_async(&mut raw)
        .await
        .unwrap();
    let node_ttl_ms = crate::storage::NODE_TTL / NANOS_PER_MILLI;
    assert!(
        ttl > node_ttl_ms && ttl <= node_ttl_ms + TTL_GRACE_MS,
        "{ttl}"
    );

    // A value that is not a seq is an error, never a fresh batch.
    let _: () = redis::cmd("SET")
        .arg(&sender_key)
        .arg("junk")
        .query_async(&mut raw)
        .await
        .unwrap();
    let error = store.begin_batch(0xab, 43, 0xcd, now).await.unwrap_err();
    assert_eq!(error.kind(), "store_unavailable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_keys_spread_over_the_cluster() {
    let Some(cluster) = TestCluster::start() else {
        return;
    };
    let store = RedisStore::new_cluster(&cluster.urls())
        .unwrap()
        .with_prefix(format!("batch-spread:{}", std::process::id()));
    let mut slots = std::collections::HashSet::new();
    for sender in 0..16 {
        slots.insert(cluster.slot_of(&store.sender_key(sender)).unwrap());
        assert!(store.begin_batch(sender, 1, 1, 0).await.unwrap().fresh);
        assert!(!store.begin_batch(sender, 1, 1, 0).await.unwrap().fresh);
    }
    assert!(slots.len() > 1, "{slots:?}");
}

/// `state.words[0] += 1`, counting its runs in `runs`.
fn counted_increment(
    runs: &std::sync::atomic::AtomicU64,
) -> impl FnMut(&mut State) -> ((), Write) + Send + '_ {
    |state: &mut State| {
        runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        state.words[0] += 1;
        ((), Write::State { idle_at: u64::MAX })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_store_never_races_itself_and_two_stay_exact() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let prefix = redis.unique_prefix();
    let new_store = || Arc::new(RedisStore::new(redis.url()).unwrap().with_prefix(&prefix));
    let k = key("hot", 1);
    let run = |store: Arc<RedisStore>, runs: Arc<AtomicU64>, updates: usize| {
        let k = k.clone();
        tokio::spawn(async move {
            let tasks: Vec<_> = (0..updates)
                .map(|_| {
                    let (store, runs, k) = (Arc::clone(&store), Arc::clone(&runs), k.clone());
                    tokio::spawn(async move {
                        store.update(&k, 1, counted_increment(&runs)).await.unwrap();
                    })
                })
                .collect();
            for task in tasks {
                task.await.unwrap();
            }
        })
    };
    // One store, 64 concurrent updates of one bucket: each decided exactly once.
    let one = new_store();
    let runs = Arc::new(AtomicU64::new(0));
    run(Arc::clone(&one), Arc::clone(&runs), 64).await.unwrap();
    assert_eq!(runs.load(Ordering::Relaxed), 64);
    assert_eq!(one.turns.len(), 0);
    // Two stores (two sidecars) racing: exact, conflicts resolved by the compare-and-set.
    let (two, runs_two) = (new_store(), Arc::new(AtomicU64::new(0)));
    let both = [
        run(Arc::clone(&one), Arc::clone(&runs), 100),
        run(Arc::clone(&two), Arc::clone(&runs_two), 100),
    ];
    for side in both {
        side.await.unwrap();
    }
    assert!(runs.load(Ordering::Relaxed) >= 164);
    assert_eq!(one.update(&k, 2, read_word).await.unwrap(), 264);
    assert_eq!((one.turns.len(), two.turns.len()), (0, 0));
}

fn read_word(state: &mut State) -> (u64, Write) {
    (state.words[0], Write::Nothing)
}

#[tokio::test]
async fn a_value_left_by_a_previous_turn_is_checked_against_redis() {
    let Some(redis) = TestRedis::start() else {
        return;
    };
    let prefix = redis.unique_prefix();
    let (one, other) = (
        RedisStore::new(redis.url()).unwrap().with_prefix(&prefix),
        RedisStore::new(redis.url()).unwrap().with_prefix(&prefix),
    );
    let k = key("stale", 1);
    let runs = std::sync::atomic::AtomicU64::new(0);
    one.update(&k, 1, counted_increment(&runs)).await.unwrap();
    // A turn of `one` left the value it wrote (1), then another sidecar wrote 2 and 3.
    let ticket = one.turns.ticket(one.redis_key(&k));
    *ticket.turn().await = Some(encode(u64::MAX, &{
        let mut state = State::default();
        state.words[0] = 1;
        state
    }));
    other.update(&k, 1, counted_increment(&runs)).await.unwrap();
    other.update(&k, 1, counted_increment(&runs)).await.unwrap();
    // A decision writing nothing reads the current value rather than trusting the old one…
    assert_eq!(one.update(&k, 1, read_word).await.unwrap(), 3);
    // …and one that writes loses its compare-and-set and decides again on the current value.
    *ticket.turn().await = Some(Vec::new());
    runs.store(0, std::sync::atomic::Ordering::Relaxed);
    one.update(&k, 1, counted_increment(&runs)).await.unwrap();
    assert_eq!(runs.load(std::sync::atomic::Ordering::Relaxed), 2);
    drop(ticket);
    assert_eq!(one.update(&k, 1, read_word).await.unwrap(), 4);
    assert_eq!(one.turns.len(), 0);
}
