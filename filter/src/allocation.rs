//! `global` rules' allocation on one worker: how many permits of each global bucket this
//! worker may admit before the sidecar answers again.
//!
//! Between two syncs every node decides alone; if each could spend the whole global remaining,
//! a burst on every node would admit the limit once per node. So a worker spends only its
//! *allowance*: the share of the global remaining the sidecar granted it in its last answer
//! for the bucket ([`crate::protocol::SyncTotal::allowance`]), less what it admitted since that
//! batch left. An allowance is a lease: not renewed for [`crate::sync::Sync::stale_after`]
//! after its batch was sent (three sync intervals and the sidecar's timeout), it keeps at most
//! [`IDLE_FLOOR`] permits — the sidecar reserves no more for it then — so a worker that
//! burst and went quiet does not keep permits the busy ones could use, while a slow client
//! still finds a permit (its admission then syncs and brings a fresh allowance).
//!
//! A worker without an allowance for a bucket (a key it never synced) decides with the
//! *starter share* ([`starter_share`]): what a fresh bucket holds divided by the node count
//! the sidecar reports, in the node-wide bucket, so that all workers of a node share it
//! exactly — `limit ÷ nodes` for every node at once cannot overshoot. Its syncs of the key
//! ask for an allowance; the sidecar grants none for one interval and the timeout after the
//! key's first sync (until every node could report its starter spending), then one in
//! proportion to demand. While the sidecar is silent every node keeps to [`node_share`].

use hashbrown::HashMap;

use crate::Nanos;
use crate::algorithm::{Algorithm, Quota};

/// Buckets with an allowance a worker remembers at most; beyond it a new allowance is not
/// kept and its bucket stays on the starter share (never more permits, only fewer).
pub const MAX_ALLOWANCES: usize = 16_384;

/// What an allowance keeps at most once its lease ended without a renewal.
pub const IDLE_FLOOR: u64 = 1;

/// One bucket's allowance on this worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allowance {
    /// Permits the worker may still admit.
    pub left: u64,
    /// The last instant (inclusive) of its lease: after it, it keeps at most [`IDLE_FLOOR`].
    pub until: Nanos,
}

impl Allowance {
    /// The permits it leaves at `now`.
    pub fn at(&self, now: Nanos) -> u64 {
        if now <= self.until {
            self.left
        } else {
            self.left.min(IDLE_FLOOR)
        }
    }
}

/// One worker's allowances, and the node count its starter shares divide by.
#[derive(Debug)]
pub struct Allowances {
    table: HashMap<u64, Allowance>,
    nodes: u64,
}

impl Default for Allowances {
    fn default() -> Self {
        Allowances {
            table: HashMap::new(),
            nodes: 1,
        }
    }
}

impl Allowances {
    /// What starter shares divide a `global` quota by (≥ 1): the configured node count, or
    /// the last one the sidecar reported.
    pub fn nodes(&self) -> u64 {
        self.nodes.max(1)
    }

    /// Sets the node count ([`Allowances::nodes`]).
    pub fn set_nodes(&mut self, nodes: u64) {
        self.nodes = nodes.max(1);
    }

    /// The permits `key`'s allowance leaves at `now`; `None`: no allowance (the bucket is on
    /// the starter share).
    pub fn left(&self, key: u64, now: Nanos) -> Option<u64> {
        self.table.get(&key).map(|a| a.at(now))
    }

    /// Replaces `key`'s allowance with the one the sidecar just granted. A full table is
    /// cleared of allowances whose lease ended first; if it is still full the grant is not
    /// kept.
    pub fn grant(&mut self, key: u64, allowance: Allowance, now: Nanos) {
        if self.table.len() >= MAX_ALLOWANCES && !self.table.contains_key(&key) {
            self.table.retain(|_, a| now <= a.until);
            if self.table.len() >= MAX_ALLOWANCES {
                return;
            }
        }
        self.table.insert(key, allowance);
    }

    /// Takes `permits` from `key`'s allowance (an admission at `now`).
    pub fn spend(&mut self, key: u64, permits: u64, now: Nanos) {
        if let Some(allowance) = self.table.get_mut(&key) {
            allowance.left = allowance.at(now).saturating_sub(permits);
        }
    }

    /// Gives `permits` back to `key`'s allowance (an admission another rule refused).
    pub fn give_back(&mut self, key: u64, permits: u64) {
        if let Some(allowance) = self.table.get_mut(&key) {
            allowance.left = allowance.left.saturating_add(permits);
        }
    }

    /// Buckets with an allowance kept (live or lapsed).
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether no allowance is kept.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }
}

/// A `global` rule's quota on this worker at `now`: one of `share` equal node shares while
/// the sidecar is silent (`share` > 1); the rule's own when the worker holds an allowance of
/// the bucket (which then caps it, see [`crate::allocation`]); otherwise the starter share.
pub fn global_quota(
    algorithm: Algorithm,
    configured: Quota,
    allowances: &Allowances,
    key: u64,
    share: u64,
    now: Nanos,
) -> Quota {
    if share > 1 {
        node_share(configured, share)
    } else if allowances.left(key, now).is_some() {
        configured
    } else {
        starter_share(algorithm, configured, allowances.nodes())
    }
}

/// One of `nodes` equal shares of what a fresh bucket of `quota` holds. A token bucket's
/// burst is divided, not its rate, so that the tokens a node spends on its starter share weigh
/// the same once it decides with the whole quota; the other algorithms divide the limit.
pub fn starter_share(algorithm: Algorithm, quota: Quota, nodes: u64) -> Quota {
    match algorithm {
        Algorithm::TokenBucket => Quota {
            burst: (quota.burst / nodes.max(1)).max(1),
            ..quota
        },
        _ => node_share(quota, nodes),
    }
}

/// `quota` cut to one of `nodes` equal shares (limit and burst divided, at least 1 each).
pub fn node_share(quota: Quota, nodes: u64) -> Quota {
    if nodes <= 1 {
        return quota;
    }
    Quota::new(
        (quota.limit / nodes).max(1),
        quota.window,
        (quota.burst / nodes).max(1),
        quota.queue,
    )
}

#[cfg(test)]
mod tests;
