//! The [`CounterStore`] contract, written once and run against every impl (the in-memory one
//! now; the Redis one reuses [`run_all`] with a factory that connects to a throw-away Redis).
//!
//! Each check gets a fresh store from the factory, so impls that share a backend must give
//! each store its own key space (e.g. a random key prefix).
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::sync::Arc;

use tollgate_filter::algorithm::State;

use super::{CounterKey, CounterStore, Write};

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
