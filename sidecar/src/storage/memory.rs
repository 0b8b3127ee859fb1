//! The in-process counter store: the embedded default when no Redis is configured (one
//! sidecar, so one node's view is the whole truth).
//!
//! Keys are spread over 16 `std::sync::Mutex<HashMap>`s so that updates of different
//! keys rarely wait on each other; an update holds its shard's lock only while the decision
//! runs (pure arithmetic, never an `.await`). Memory is bounded: a bucket idle past its
//! `idle_at` equals a fresh one and is swept away when its shard grows; only when a shard is
//! full of *active* buckets does a new key get [`StoreError::Full`] (evicting an active bucket
//! would forget permits and over-admit).
//!
//! `global` sync batches are recorded in one more lock ([`batches`]): each sender's latest
//! applied `seq` (at most [`batches::MAX_SENDERS`] senders, the one seen longest ago evicted
//! first, any idle for [`super::SENDER_TTL`] forgotten) and each node's latest batch (at most
//! [`batches::MAX_NODES`]).

mod batches;

use std::collections::HashMap;
use std::future::{Future, ready};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, PoisonError};

use tollgate_filter::Nanos;
use tollgate_filter::algorithm::State;

use self::batches::Batches;
use super::{BatchStart, CounterKey, CounterStore, StoreError, Write};

/// Number of independently locked shards.
const SHARDS: usize = 16;
/// The fewest entries a shard holds before it first sweeps idle buckets.
const MIN_SWEEP: usize = 1024;

struct Entry {
    state: State,
    idle_at: Nanos,
}

struct Shard {
    map: HashMap<CounterKey, Entry>,
    /// Sweep idle buckets when the shard reaches this many entries.
    next_sweep: usize,
    /// No entry's `idle_at` is earlier: until then a sweep would free nothing.
    earliest_idle: Nanos,
}

/// An in-memory [`CounterStore`] holding at most about `capacity` active buckets.
pub struct MemoryStore {
    shards: Vec<Mutex<Shard>>,
    shard_capacity: usize,
    hasher: RandomState,
    batches: Mutex<Batches>,
}

impl MemoryStore {
    /// A store for at most `capacity` active buckets (rounded up to a multiple of its 16 shards;
    /// at least one per shard).
    pub fn new(capacity: usize) -> Self {
        let shard_capacity = capacity.div_ceil(SHARDS).max(1);
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    map: HashMap::new(),
                    next_sweep: MIN_SWEEP.min(shard_capacity),
                    earliest_idle: Nanos::MAX,
                })
            })
            .collect();
        MemoryStore {
            shards,
            shard_capacity,
            hasher: RandomState::new(),
            batches: Mutex::new(Batches::default()),
        }
    }

    /// How many buckets the store holds (idle ones not yet swept included).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|shard| lock(shard).map.len()).sum()
    }

    /// Whether the store holds no bucket.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn shard(&self, key: &CounterKey) -> Option<&Mutex<Shard>> {
        let hash = self.hasher.hash_one(key);
        // The remainder is below SHARDS, so the conversion is lossless.
        self.shards.get((hash % SHARDS as u64) as usize)
    }

    fn update_now<F, R>(&self, key: &CounterKey, now: Nanos, mut decide: F) -> Result<R, StoreError>
    where
        F: FnMut(&mut State) -> (R, Write),
    {
        let shard = self
            .shard(key)
            .ok_or_else(|| StoreError::Unavailable("no shard for key".into()))?;
        let mut shard = lock(shard);
        if let Some(entry) = shard.map.get_mut(key) {
            if entry.idle_at <= now {
                entry.state = State::default();
            }
            let (value, write) = decide(&mut entry.state);
            if let Write::State { idle_at } = write {
                entry.idle_at = idle_at;
                shard.earliest_idle = shard.earliest_idle.min(idle_at);
            }
            return Ok(value);
        }
        let mut state = State::default();
        let (value, write) = decide(&mut state);
        if let Write::State { idle_at } = write {
            shard.insert(
                key.clone(),
                Entry { state, idle_at },
                now,
                self.shard_capacity,
            )?;
        }
        Ok(value)
    }
}

impl Shard {
    /// Adds a new bucket, sweeping idle ones first when the shard has grown.
    fn insert(
        &mut self,
        key: CounterKey,
        entry: Entry,
        now: Nanos,
        capacity: usize,
    ) -> Result<(), StoreError> {
        // Sweeping is O(shard): only when the shard has grown, and only if something can go.
        if self.map.len() >= self.next_sweep && self.earliest_idle <= now {
            self.map.retain(|_, entry| entry.idle_at > now);
            self.earliest_idle = self
                .map
                .values()
                .map(|e| e.idle_at)
                .min()
                .unwrap_or(Nanos::MAX);
            self.next_sweep = self
                .map
                .len()
                .saturating_mul(2)
                .max(MIN_SWEEP)
                .min(capacity);
        }
        if self.map.len() >= capacity {
            return Err(StoreError::Full {
                capacity: capacity.saturating_mul(SHARDS),
            });
        }
        self.earliest_idle = self.earliest_idle.min(entry.idle_at);
        self.map.insert(key, entry);
        Ok(())
    }
}

/// Locks a shard; a poisoned lock is still consistent (no decision panics, and an entry is
/// only replaced whole), so it is used as is.
fn lock(shard: &Mutex<Shard>) -> std::sync::MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

impl CounterStore for MemoryStore {
    fn update<F, R>(
        &self,
        key: &CounterKey,
        now: Nanos,
        decide: F,
    ) -> impl Future<Output = Result<R, StoreError>> + Send
    where
        F: FnMut(&mut State) -> (R, Write) + Send,
        R: Send,
    {
        ready(self.update_now(key, now, decide))
    }

    fn begin_batch(
        &self,
        sender: u64,
        seq: u64,
        node: u64,
        now: Nanos,
    ) -> impl Future<Output = Result<BatchStart, StoreError>> + Send {
        // Poisoning cannot leave the maps inconsistent in a way that matters: no code under
        // this lock panics, and at worst a sender or node is remembered a little longer.
        let mut batches = self.batches.lock().unwrap_or_else(PoisonError::into_inner);
        ready(Ok(batches.begin(sender, seq, node, now)))
    }

    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send {
        ready(Ok(()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::storage::contract;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn passes_the_contract() {
        contract::run_all(|| MemoryStore::new(1 << 16)).await;
    }

    #[tokio::test]
    async fn idle_buckets_are_swept_and_active_ones_fill_it_up() {
        let capacity = SHARDS * MIN_SWEEP;
        let store = MemoryStore::new(capacity);
        let write = |idle_at| move |_: &mut State| ((), Write::State { idle_at });
        let key = |rule: &str, key| CounterKey {
            rule: rule.into(),
            key,
        };
        // Half the capacity in buckets idle from t=10 on…
        for n in 0..(capacity / 2) as u64 {
            store.update(&key("old", n), 0, write(10)).await.unwrap();
        }
        // …then active buckets until the store says it is full: the idle ones made way.
        let mut added = 0;
        let mut full = false;
        for n in 0..(2 * capacity) as u64 {
            match store.update(&key("new", n), 20, write(u64::MAX)).await {
                Ok(()) => added += 1,
                Err(StoreError::Full { .. }) => full = true,
                Err(other) => panic!("{other}"),
            }
        }
        assert!(full);
        assert!(added > capacity / 2, "{added}");
        assert!(store.len() <= capacity);
        // An existing active bucket is still updated when the store is full.
        store
            .update(&key("new", 0), 30, write(u64::MAX))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_tiny_store_fills_up_and_frees_idle_buckets() {
        let store = MemoryStore::new(1); // one bucket per shard
        let key = |key| CounterKey {
            rule: "r".into(),
            key,
        };
        let write = |idle_at| move |_: &mut State| ((), Write::State { idle_at });
        // 1024 random keys reach every one of the 16 shards (else p ≈ 16·(15/16)^1024 ≈ 0).
        let mut stored = 0;
        for n in 0..1024 {
            match store.update(&key(n), 0, write(10)).await {
                Ok(()) => stored += 1,
                Err(StoreError::Full { capacity }) => assert_eq!(capacity, SHARDS),
                Err(other) => panic!("{other}"),
            }
        }
        assert_eq!(stored, SHARDS);
        // From t=10 on they are all idle and make way for new buckets.
        let mut again = 0;
        for n in 2000..3024 {
            again += usize::from(store.update(&key(n), 10, write(20)).await.is_ok());
        }
        assert_eq!((again, store.len()), (SHARDS, SHARDS));
    }
}
