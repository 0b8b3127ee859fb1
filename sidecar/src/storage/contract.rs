//! The [`CounterStore`] contract, written once and run against every impl (the in-memory one
//! now; the Redis one reuses [`run_all`] with a factory that connects to a throw-away Redis).
//!
//! Each check gets a fresh store from the factory, so impls that share a backend must give
//! each store its own key space (e.g. a random key prefix).
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::sync::Arc;

use tollgate_filter::algorithm::State;

use super::{BatchStart, CounterKey, CounterStore, NODE_TTL, SENDER_TTL, Write};

/// A Unix time in nanoseconds (exact as a Redis sorted-set score, a double).
const T: u64 = 1_000_000_000_000;

fn key(rule: &str, key: u64) -> CounterKey {
    CounterKey {
        rule: rule.into(),
        key,
    }
}

/// Sets the first state word to `value`, live until `idle_at`; returns what it saw there.
fn set(value: u64, idle_at: u64) -> impl FnMut(&mut State) -> (u64, Write) + Send {
    move |state: &mut State| {
        let seen = state.words[0];
        state.words[0] = value;
        (seen, Write::State { idle_at })
    }
}

/// Reads the state without writing.
fn read(state: &mut State) -> (State, Write) {
    (state.clone(), Write::Nothing)
}

/// Runs every contract check, each on a fresh store from `new_store`.
pub(crate) async fn run_all<S: CounterStore>(new_store: impl Fn() -> S) {
    absent_keys_are_fresh(&new_store()).await;
    writes_persist_and_nothing_writes_nothing(&new_store()).await;
    idle_states_are_forgotten(&new_store()).await;
    keys_are_independent(&new_store()).await;
    the_sliding_log_persists(&new_store()).await;
    updates_of_one_key_are_atomic(Arc::new(new_store())).await;
    each_batch_is_fresh_once(&new_store()).await;
    one_batch_delivered_concurrently_is_fresh_once(Arc::new(new_store())).await;
    nodes_count_while_they_sync(&new_store()).await;
    nodes_count_from_the_start_of_time(&new_store()).await;
    new_store().ping().await.unwrap();
}

async fn absent_keys_are_fresh(store: &impl CounterStore) {
    let state = store.update(&key("r", 1), 100, read).await.unwrap();
    assert_eq!(state, State::default());
}

async fn writes_persist_and_nothing_writes_nothing(store: &impl CounterStore) {
    let k = key("r", 1);
    assert_eq!(store.update(&k, 100, set(5, 1_000)).await.unwrap(), 0);
    assert_eq!(store.update(&k, 200, read).await.unwrap().words[0], 5);
    // A closure that asks for no write on an absent key creates nothing.
    let absent = key("r", 2);
    store
        .update(&absent, 100, |_: &mut State| ((), Write::Nothing))
        .await
        .unwrap();
    assert_eq!(
        store.update(&absent, 100, read).await.unwrap(),
        State::default()
    );
}

async fn idle_states_are_forgotten(store: &impl CounterStore) {
    let k = key("r", 1);
    store.update(&k, 100, set(5, 1_000)).await.unwrap();
    assert_eq!(store.update(&k, 999, read).await.unwrap().words[0], 5);
    assert_eq!(
        store.update(&k, 1_000, read).await.unwrap(),
        State::default()
    );
    // The next write starts from the fresh state.
    assert_eq!(store.update(&k, 1_001, set(7, 2_000)).await.unwrap(), 0);
}

async fn keys_are_independent(store: &impl CounterStore) {
    store.update(&key("a", 1), 0, set(1, 1_000)).await.unwrap();
    store.update(&key("b", 1), 0, set(2, 1_000)).await.unwrap();
    store.update(&key("a", 2), 0, set(3, 1_000)).await.unwrap();
    for (k, value) in [(key("a", 1), 1), (key("b", 1), 2), (key("a", 2), 3)] {
        assert_eq!(store.update(&k, 1, read).await.unwrap().words[0], value);
    }
}

async fn the_sliding_log_persists(store: &impl CounterStore) {
    let k = key("log", 1);
    let log = vec![10, 20, 30];
    let expected = log.clone();
    store
        .update(&k, 0, move |state: &mut State| {
            state.log.clone_from(&log);
            ((), Write::State { idle_at: 1_000 })
        })
        .await
        .unwrap();
    assert_eq!(store.update(&k, 1, read).await.unwrap().log, expected);
}

async fn updates_of_one_key_are_atomic<S: CounterStore>(store: Arc<S>) {
    const TASKS: u64 = 32;
    const EACH: u64 = 50;
    let k = key("hot", 7);
    let increment = |state: &mut State| {
        state.words[0] += 1;
        ((), Write::State { idle_at: u64::MAX })
    };
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let (store, k) = (Arc::clone(&store), k.clone());
            tokio::spawn(async move {
                for _ in 0..EACH {
                    store.update(&k, 1, increment).await.unwrap();
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        store.update(&k, 2, read).await.unwrap().words[0],
        TASKS * EACH
    );
}

/// Whether `(sender, seq)` is fresh at `now` (from node 1).
async fn fresh(store: &impl CounterStore, sender: u64, seq: u64, now: u64) -> bool {
    store.begin_batch(sender, seq, 1, now).await.unwrap().fresh
}

async fn each_batch_is_fresh_once(store: &impl CounterStore) {
    assert_eq!(
        store.begin_batch(1, 5, 1, T).await.unwrap(),
        BatchStart {
            fresh: true,
            nodes: 1
        }
    );
    // The same batch again, and older ones (late or out of order), are duplicates.
    assert!(!fresh(store, 1, 5, T + 1).await);
    assert!(!fresh(store, 1, 4, T + 2).await);
    assert!(!fresh(store, 1, 0, T + 3).await);
    // Newer ones are fresh, gaps allowed.
    assert!(fresh(store, 1, 6, T + 4).await);
    assert!(fresh(store, 1, 9, T + 5).await);
    assert!(!fresh(store, 1, 7, T + 6).await);
    // Senders are independent; a new sender's first batch may have any seq.
    assert!(fresh(store, 2, 0, T).await);
    assert!(!fresh(store, 2, 0, T).await);
    assert!(fresh(store, u64::MAX, 3, T).await);
    // Every u64 compares exactly (Redis compares 20 digits as two halves).
    for (older, newer) in [
        (9_999_999_999, 10_000_000_000),
        (10_000_000_000, 10_000_000_001),
        (u64::MAX - 1, u64::MAX),
        ((1 << 53) + 1, (1 << 53) + 2),
    ] {
        let sender = newer ^ 0xabcd;
        assert!(fresh(store, sender, older, T).await, "{older}");
        assert!(fresh(store, sender, newer, T).await, "{newer}");
        assert!(!fresh(store, sender, older, T).await, "{older}");
        assert!(!fresh(store, sender, newer, T).await, "{newer}");
    }
    // Remembered for at least SENDER_TTL after the sender's latest batch.
    assert!(!fresh(store, 1, 9, T + 5 + SENDER_TTL - 1).await);
}

async fn one_batch_delivered_concurrently_is_fresh_once<S: CounterStore>(store: Arc<S>) {
    const DELIVERIES: usize = 32;
    for seq in [1, 2] {
        let tasks: Vec<_> = (0..DELIVERIES)
            .map(|_| {
                let store = Arc::clone(&store);
                tokio::spawn(async move { store.begin_batch(7, seq, 1, T).await.unwrap().fresh })
            })
            .collect();
        let mut fresh = 0;
        for task in tasks {
            fresh += usize::from(task.await.unwrap());
        }
        assert_eq!(fresh, 1, "seq {seq}");
    }
}

/// The node count `node`'s batch at `now` answers (each call a new sender: fresh or not, the
/// node counts).
async fn nodes(store: &impl CounterStore, node: u64, now: u64) -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let sender = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    store.begin_batch(sender, 1, node, now).await.unwrap().nodes
}

async fn nodes_count_while_they_sync(store: &impl CounterStore) {
    assert_eq!(nodes(store, 1, T).await, 1);
    assert_eq!(nodes(store, 2, T + 1).await, 2);
    // A node's next batch does not count it twice, and moves its time on.
    assert_eq!(nodes(store, 1, T + 2).await, 2);
    // A duplicate batch counts its node too.
    let start = store.begin_batch(u64::MAX - 1, 0, 3, T + 3).await.unwrap();
    assert_eq!(start.nodes, 3);
    let again = store.begin_batch(u64::MAX - 1, 0, 3, T + 4).await.unwrap();
    assert_eq!((again.fresh, again.nodes), (false, 3));
    // A node counts until NODE_TTL after its latest batch, not at it: node 2 (T + 1) goes.
    assert_eq!(nodes(store, 4, T + 1 + NODE_TTL - 1).await, 4);
    assert_eq!(nodes(store, 4, T + 1 + NODE_TTL).await, 3);
    // A sidecar whose clock lags reports a node seen earlier: the later time stands.
    assert_eq!(nodes(store, 5, T + 3 * NODE_TTL).await, 1);
    assert_eq!(nodes(store, 5, T + 2 * NODE_TTL).await, 1);
    assert_eq!(nodes(store, 6, T + 4 * NODE_TTL - 1).await, 2);
    assert_eq!(nodes(store, 6, T + 4 * NODE_TTL).await, 1);
}

async fn nodes_count_from_the_start_of_time(store: &impl CounterStore) {
    assert_eq!(nodes(store, 1, 0).await, 1);
    assert_eq!(nodes(store, 2, NODE_TTL - 1).await, 2);
    assert_eq!(nodes(store, 2, NODE_TTL).await, 1);
}
