//! The in-memory store's record of `global` sync batches: each sender's latest applied `seq`
//! and when each node last synced. Both maps are bounded; see [`MAX_SENDERS`] and
//! [`MAX_NODES`].

use std::collections::{BTreeSet, HashMap};

use tollgate_filter::Nanos;

use crate::storage::{BatchStart, NODE_TTL, SENDER_TTL};

/// The most senders remembered. Beyond it the sender seen longest ago is forgotten (a batch
/// of it that is replayed later would be counted again); senders idle for [`SENDER_TTL`] are
/// forgotten anyway. Each filter worker is one sender, so this is thousands of proxies' worth.
pub const MAX_SENDERS: usize = 65_536;

/// The most nodes counted; beyond it the node seen longest ago is forgotten.
pub const MAX_NODES: usize = 4_096;

struct Sender {
    /// The latest applied `seq`.
    seq: u64,
    /// The latest instant a batch of this sender arrived at.
    seen_at: Nanos,
}

/// Senders and nodes, behind one lock in [`super::MemoryStore`].
#[derive(Default)]
pub(super) struct Batches {
    senders: HashMap<u64, Sender>,
    /// `(seen_at, sender)` of every entry of `senders`, oldest first (for eviction).
    by_age: BTreeSet<(Nanos, u64)>,
    /// When each node last synced.
    nodes: HashMap<u64, Nanos>,
}

impl Batches {
    /// See [`crate::storage::CounterStore::begin_batch`].
    pub(super) fn begin(&mut self, sender: u64, seq: u64, node: u64, now: Nanos) -> BatchStart {
        let fresh = self.mark(sender, seq, now);
        let nodes = self.see(node, now);
        BatchStart { fresh, nodes }
    }

    /// Records `seq` as `sender`'s latest if it is higher; whether it was.
    fn mark(&mut self, sender: u64, seq: u64, now: Nanos) -> bool {
        while let Some(&(seen_at, oldest)) = self.by_age.first() {
            if seen_at.saturating_add(SENDER_TTL) > now {
                break;
            }
            self.by_age.pop_first();
            self.senders.remove(&oldest);
        }
        if let Some(known) = self.senders.get_mut(&sender) {
            let fresh = seq > known.seq;
            known.seq = known.seq.max(seq);
            // A clock that went back never shortens how long the sender is remembered.
            let seen_at = known.seen_at.max(now);
            self.by_age.remove(&(known.seen_at, sender));
            self.by_age.insert((seen_at, sender));
            known.seen_at = seen_at;
            return fresh;
        }
        if self.senders.len() >= MAX_SENDERS
            && let Some((_, oldest)) = self.by_age.pop_first()
        {
            self.senders.remove(&oldest);
        }
        self.senders.insert(sender, Sender { seq, seen_at: now });
        self.by_age.insert((now, sender));
        true
    }

    /// Records `node` as seen at `now`; the number of nodes seen in the last [`NODE_TTL`].
    fn see(&mut self, node: u64, now: Nanos) -> u64 {
        self.nodes
            .retain(|_, seen_at| seen_at.saturating_add(NODE_TTL) > now);
        if !self.nodes.contains_key(&node)
            && self.nodes.len() >= MAX_NODES
            && let Some(oldest) = self
                .nodes
                .iter()
                .min_by_key(|&(_, &seen_at)| seen_at)
                .map(|(&oldest, _)| oldest)
        {
            self.nodes.remove(&oldest);
        }
        let seen_at = self.nodes.entry(node).or_insert(now);
        *seen_at = (*seen_at).max(now);
        self.nodes.len() as u64
    }

    /// How many senders are remembered.
    #[cfg(test)]
    pub(super) fn senders(&self) -> usize {
        self.senders.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn senders_are_bounded_and_the_oldest_seen_goes_first() {
        let mut batches = Batches::default();
        for sender in 0..MAX_SENDERS as u64 {
            assert!(batches.begin(sender, 1, 1, sender).fresh);
        }
        // Sender 0 is seen again, so sender 1 is now the oldest and makes way for a new one.
        assert!(!batches.begin(0, 1, 1, 1_000_000).fresh);
        assert!(batches.begin(u64::MAX, 1, 1, 1_000_001).fresh);
        assert_eq!(batches.senders(), MAX_SENDERS);
        assert!(!batches.begin(0, 1, 1, 1_000_002).fresh);
        assert!(
            batches.begin(1, 1, 1, 1_000_003).fresh,
            "sender 1 was forgotten"
        );
    }

    #[test]
    fn idle_senders_are_forgotten_after_the_ttl() {
        let mut batches = Batches::default();
        assert!(batches.begin(7, 5, 1, 0).fresh);
        assert!(!batches.begin(7, 5, 1, SENDER_TTL - 1).fresh);
        // Seen again at SENDER_TTL − 1: remembered until 2·SENDER_TTL − 1.
        assert!(!batches.begin(7, 5, 1, 2 * SENDER_TTL - 2).fresh);
        assert!(batches.begin(7, 5, 1, 3 * SENDER_TTL).fresh);
        assert_eq!(batches.senders(), 1);
    }

    #[test]
    fn nodes_are_bounded() {
        let mut batches = Batches::default();
        for node in 0..MAX_NODES as u64 + 10 {
            let start = batches.begin(node, 1, node, node);
            assert_eq!(start.nodes, (node + 1).min(MAX_NODES as u64));
        }
    }
}
