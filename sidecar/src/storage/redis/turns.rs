//! Turns per bucket: updates of one bucket through one [`RedisStore`](super::RedisStore) take
//! turns instead of racing each other's compare-and-set, and each turn hands the next the
//! value it last saw in Redis, so that the next one can usually skip its `GET`.
//!
//! A key has an entry while an update of it is running or waiting; the last one out moves the
//! value it saw to a bounded map of recent values ([`RECENT`] keys at most: a shard that is
//! full forgets its keys and starts over), where the key's next update finds it: a bucket checked again later
//! costs one round trip too, as long as no other sidecar wrote it meanwhile (else the
//! compare-and-set fails and answers with the current value, or a refusal's `GET` finds it).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::{Mutex as AsyncMutex, MutexGuard as AsyncMutexGuard};

/// Independently locked maps of keys, so that tickets of different keys rarely wait.
const SHARDS: usize = 32;

/// The most keys whose latest value is remembered between updates (about 150 bytes each).
pub const RECENT: usize = 65_536;

/// What the previous turn on a key left: the value it read or wrote last (empty: the key was
/// absent), `None` when it failed or was cancelled half way.
pub(super) type Known = Option<Vec<u8>>;

type Slot = Arc<AsyncMutex<Known>>;
type Shard = Mutex<Keys>;

/// One shard's keys: those with updates in flight, and recent values of others.
#[derive(Default)]
struct Keys {
    in_flight: HashMap<String, Slot>,
    recent: HashMap<String, Vec<u8>>,
}

/// The keys with updates in flight.
pub(super) struct Turns {
    shards: Vec<Shard>,
    hasher: RandomState,
}

/// A place in the queue of one key's updates; dropping it (done or cancelled) leaves the
/// queue, and the last ticket of a key removes the key's entry.
pub(super) struct Ticket<'a> {
    shard: &'a Shard,
    key: String,
    slot: Slot,
}

impl Turns {
    pub(super) fn new() -> Self {
        Turns {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
        }
    }

    /// A ticket for `key` (a Redis key).
    pub(super) fn ticket(&self, key: String) -> Ticket<'_> {
        // The remainder is below SHARDS, so the conversion is lossless.
        let n = (self.hasher.hash_one(&key) % SHARDS as u64) as usize;
        #[allow(clippy::indexing_slicing, reason = "n < SHARDS == shards.len()")]
        let shard = &self.shards[n];
        let mut keys = lock(shard);
        let slot = match keys.in_flight.get(&key) {
            Some(slot) => Arc::clone(slot),
            None => {
                let known = keys.recent.remove(&key);
                let slot = Arc::new(AsyncMutex::new(known));
                keys.in_flight.insert(key.clone(), Arc::clone(&slot));
                slot
            }
        };
        drop(keys);
        Ticket { shard, key, slot }
    }

    /// How many keys have updates in flight.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| lock(shard).in_flight.len())
            .sum()
    }

    /// How many keys have a recent value remembered.
    #[cfg(test)]
    pub(super) fn recent(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| lock(shard).recent.len())
            .sum()
    }
}

impl Ticket<'_> {
    /// The ticket's key.
    pub(super) fn key(&self) -> &str {
        &self.key
    }

    /// Waits for this ticket's turn (first come, first served); the guard is the turn and what
    /// the previous one left.
    pub(super) async fn turn(&self) -> AsyncMutexGuard<'_, Known> {
        self.slot.lock().await
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let mut keys = lock(self.shard);
        // Tickets are only made under this lock: two references (the map's and this one)
        // mean nobody else is running or waiting.
        if Arc::strong_count(&self.slot) != 2 {
            return;
        }
        keys.in_flight.remove(&self.key);
        // Nobody else can hold the turn: the lock is free unless this ticket's own guard is
        // still alive (then the value is simply not remembered).
        let known = self.slot.try_lock().ok().and_then(|mut known| known.take());
        if let Some(value) = known {
            if keys.recent.len() >= RECENT / SHARDS {
                // A full shard starts over: O(1) per update on average, where evicting one
                // arbitrary key (the first a scan finds) grows slower as the scans lengthen.
                keys.recent.clear();
            }
            keys.recent.insert(std::mem::take(&mut self.key), value);
        }
    }
}

/// Locks a shard; a poisoned map is still consistent (nothing panics while holding it).
fn lock(shard: &Shard) -> MutexGuard<'_, Keys> {
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    #[tokio::test]
    async fn entries_live_while_tickets_do_and_turns_go_in_order() {
        let turns = Turns::new();
        let first = turns.ticket("k".into());
        let mut turn = first.turn().await;
        *turn = Some(vec![1]);
        let second = turns.ticket("k".into());
        let other = turns.ticket("other".into());
        assert_eq!(turns.len(), 2);
        let waiting = second.turn();
        drop(turn);
        assert_eq!(*waiting.await, Some(vec![1]));
        drop((first, other));
        assert_eq!(turns.len(), 1);
        drop(second);
        assert_eq!(turns.len(), 0);
        // The value is remembered for the key's next update ("other" left none).
        assert_eq!(turns.recent(), 1);
        let again = turns.ticket("k".into());
        assert_eq!(*again.turn().await, Some(vec![1]));
        assert_eq!(turns.recent(), 0);
    }

    #[tokio::test]
    async fn recent_values_are_bounded() {
        let turns = Turns::new();
        for n in 0..2 * RECENT {
            let ticket = turns.ticket(n.to_string());
            *ticket.turn().await = Some(Vec::new());
        }
        assert!(turns.recent() <= RECENT, "{}", turns.recent());
        assert!(turns.recent() > 0);
        assert_eq!(turns.len(), 0);
    }

    #[tokio::test]
    async fn a_cancelled_wait_leaves_nothing_behind() {
        let turns = Turns::new();
        let first = turns.ticket("k".into());
        let turn = first.turn().await;
        let second = turns.ticket("k".into());
        // Waits, and is dropped while waiting.
        assert!(second.turn().now_or_never().is_none());
        drop(second);
        drop(turn);
        drop(first);
        assert_eq!(turns.len(), 0);
    }
}
