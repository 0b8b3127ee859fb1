//! A worker's own memory of buckets: unspent leased permits and refusals still in force.

use hashbrown::HashMap;

use super::{Outcome, Source};
use crate::Nanos;
use crate::algorithm::Lease;

#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    /// The permits this worker leased and has not spent.
    lease: Lease,
    /// What the node-wide bucket had left when the lease was taken.
    shared_remaining: u64,
    /// The node-wide reset reported with the lease.
    reset: Nanos,
    /// Refuse without asking until this instant.
    refused_until: Nanos,
    /// How many tokens of refill a token-bucket lease may hold back: grows while this worker
    /// is the only one taking from the key, drops to 0 once another worker takes too (held
    /// back tokens can then not be handed back and would be lost until they lapse).
    hold_back: u64,
}

impl Entry {
    fn live(&self, now: Nanos) -> bool {
        self.lease.valid_until >= now || self.refused_until > now
    }
}

/// Per-worker cache of leases and refusals, bounded in size: when full, lapsed entries are
/// dropped, and if that is not enough, everything is (dropping a lease only under-admits).
#[derive(Debug)]
pub struct LocalCache {
    entries: HashMap<u64, Entry>,
    capacity: usize,
}

impl LocalCache {
    /// A cache of at most `capacity` keys.
    pub fn new(capacity: usize) -> Self {
        LocalCache {
            entries: HashMap::with_capacity(capacity.min(4096)),
            capacity: capacity.max(16),
        }
    }

    /// Spends `cost` leased permits of `key`, if this worker holds that many and they are valid.
    pub fn spend(&mut self, key: u64, cost: u64, now: Nanos) -> Option<Outcome> {
        let entry = self.entries.get_mut(&key)?;
        if !entry.lease.spend(cost, now) {
            return None;
        }
        Some(Outcome {
            admitted: true,
            remaining: entry
                .shared_remaining
                .saturating_add(entry.lease.usable(now)),
            reset: entry.reset,
            retry_at: now,
            delay: 0,
            source: Source::Lease,
            store_failed: false,
        })
    }

    /// The retry time of a refusal of `key` still in force at `now`.
    pub fn refused_until(&self, key: u64, now: Nanos) -> Option<Nanos> {
        self.entries
            .get(&key)
            .map(|e| e.refused_until)
            .filter(|&until| until > now)
    }

    /// What the node-wide bucket had left at this worker's last lease of `key` (a hint for
    /// the size of the next lease, however old).
    pub fn last_remaining(&self, key: u64) -> Option<u64> {
        self.entries.get(&key).map(|e| e.shared_remaining)
    }

    /// The lease this worker holds on `key`, to give back before taking a new one.
    pub fn lease_held(&self, key: u64) -> Option<Lease> {
        self.entries
            .get(&key)
            .map(|e| e.lease)
            .filter(|l| l.granted_at > 0 || l.left > 0 || l.held_back > 0)
    }

    /// Remembers that `key` is refused until `retry_at` (and that its lease was given up).
    pub fn refuse(&mut self, key: u64, retry_at: Nanos, now: Nanos) {
        let entry = self.entry(key, now);
        entry.lease = Lease::default();
        if retry_at > now {
            entry.refused_until = retry_at;
        }
    }

    /// Drops a remembered refusal (permits went back to the node-wide bucket).
    pub fn forget_refusal(&mut self, key: u64) {
        if let Some(entry) = self.entries.get_mut(&key) {
            entry.refused_until = 0;
        }
    }

    /// Drops every remembered refusal (the limits they were decided under have changed).
    pub fn forget_refusals(&mut self) {
        for entry in self.entries.values_mut() {
            entry.refused_until = 0;
        }
    }

    /// Holds a fresh lease of `key`; returns how many of its permits are left to spend.
    pub fn lease(
        &mut self,
        key: u64,
        lease: Lease,
        shared_remaining: u64,
        reset: Nanos,
        now: Nanos,
    ) -> u64 {
        let entry = self.entry(key, now);
        *entry = Entry {
            lease,
            shared_remaining,
            reset,
            refused_until: 0,
            hold_back: entry.hold_back,
        };
        lease.usable(now)
    }

    /// Forgets the lease of `key` (it was handed back); the next lease is sized for `remaining`.
    pub fn drop_lease(&mut self, key: u64, remaining: u64) {
        if let Some(entry) = self.entries.get_mut(&key) {
            entry.lease = Lease::default();
            entry.shared_remaining = remaining;
        }
    }

    /// How much refill a new lease of `key` may hold back.
    pub fn hold_back(&self, key: u64) -> u64 {
        self.entries.get(&key).map_or(0, |e| e.hold_back)
    }

    /// Adapts the hold-back allowance of `key` to whether the last lease went back cleanly.
    pub fn returned(&mut self, key: u64, cleanly: bool, now: Nanos) {
        let entry = self.entry(key, now);
        entry.hold_back = if cleanly {
            entry.hold_back.saturating_mul(2).clamp(1, super::MAX_LEASE)
        } else {
            0
        };
    }

    /// Puts `permits` spent from the lease back (the request was refused by another rule).
    pub fn give_back(&mut self, key: u64, permits: u64, now: Nanos) {
        if let Some(entry) = self.entries.get_mut(&key)
            && entry.lease.valid_until >= now
        {
            entry.lease.give_back(permits);
        }
    }

    /// How many keys are cached.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn entry(&mut self, key: u64, now: Nanos) -> &mut Entry {
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            self.entries.retain(|_, e| e.live(now));
            if self.entries.len() > self.capacity / 2 {
                self.entries.clear();
            }
        }
        self.entries.entry(key).or_default()
    }
}
