//! `global` rules' side of the sync with the sidecar, as plain logic (the host only sends and
//! receives): what a worker admitted per bucket since its last batch, the batch in flight, and
//! what to fold back into the node's buckets when the answer comes.
//!
//! Each worker keeps its own [`Sync`]. Every `sync_interval_ms` it sends one batch
//! ([`Sync::next_batch`]) — an empty one when nothing changed, as a heartbeat that keeps the
//! node counted — and never has two in flight. A batch that fails is kept and sent again
//! unchanged (same `seq`: the sidecar applies it at most once) before anything newer; what is
//! admitted meanwhile waits in a bounded table, one entry per bucket however many requests,
//! and the admissions that find the table full are counted in [`SyncStats::dropped`].
//!
//! The answer's totals are folded into the node's buckets by taking whatever the bucket has
//! beyond the global remaining ([`Fold`]); folding only ever lowers what a node may admit.
//! Each batch also asks for allowances ([`crate::allocation`]): every answered bucket comes
//! with the permits this worker may admit until its next answer — its share of the global
//! remaining, in proportion to its demand (`hits` and `denied`, what it admitted and refused
//! since its previous batch) — so that between two syncs the nodes together spend at most
//! the global remaining, however fast each bursts.
//!
//! While the sidecar does not answer for [`Sync::stale_after`] (three intervals and a
//! timeout), [`Sync::share`] tells the decision to limit each `global` rule to this node's
//! share: the limit divided by the configured node count, or the last one the sidecar saw.

use hashbrown::HashMap;

use crate::Nanos;
use crate::algorithm::Algorithm;
use crate::allocation::Allowance;
use crate::decision::RuleResult;
use crate::engine::Ask;
use crate::policy::{Policy, Scope, Sidecar};
use crate::protocol::{MAX_SYNC_ENTRIES, SyncEntry, SyncRequest, SyncResponse, WireAlgorithm};

/// Buckets with unsent admissions a worker keeps at most (beyond it admissions are dropped
/// from the sync and counted): enough for 16 full batches.
pub const MAX_PENDING: usize = 16 * MAX_SYNC_ENTRIES;

/// Counters for the host's stats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Batches the sidecar answered.
    pub batches: u64,
    /// Batches that failed (timeout, sidecar gone, bad answer); each is sent again.
    pub failures: u64,
    /// Admitted permits that could not be kept for the sidecar (the table was full).
    pub dropped: u64,
}

/// Admissions of one bucket not yet sent.
#[derive(Clone, Copy, Debug)]
struct Pending {
    rule: usize,
    ask: Ask,
    hits: u64,
    /// Permits refused since the previous batch (demand beyond the allowance).
    denied: u64,
    first_at: Nanos,
}

/// One bucket's total folded into the node's bucket: take whatever `ask`'s bucket has beyond
/// `target` permits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fold {
    /// The bucket, with the rule's full quota.
    pub ask: Ask,
    /// Permits the node may still admit: the global remaining less what this worker admitted
    /// since the batch left.
    pub target: u64,
    /// This worker's allowance of the bucket (the sidecar's grant less what it admitted since
    /// the batch left), when the sidecar granted one.
    pub allowance: Option<Allowance>,
}

/// A batch sent and not yet acknowledged.
#[derive(Clone, Debug)]
struct Batch {
    seq: u64,
    entries: Vec<Pending>,
    /// When it was last sent: allowances it brings hold `lease` from then.
    sent_at: Nanos,
    lease: Nanos,
    /// A call is out (false: it failed and waits to be sent again).
    waiting: bool,
}

/// One worker's sync state.
#[derive(Debug)]
pub struct Sync {
    sender: u64,
    node: u64,
    next_seq: u64,
    pending: HashMap<u64, Pending>,
    in_flight: Option<Batch>,
    last_ok: Nanos,
    nodes: u64,
    /// Whether the sidecar ever answered (`nodes` is its count).
    heard: bool,
    /// Counters not yet sent to the host.
    pub stats: SyncStats,
}

impl Sync {
    /// A worker's sync, identified as `sender` (random per worker) on node `node`, started at
    /// `now` (the first batches get [`Sync::stale_after`] to succeed before the node falls
    /// back to its share).
    pub fn new(sender: u64, node: u64, now: Nanos) -> Self {
        Sync {
            sender,
            node,
            next_seq: 1,
            pending: HashMap::new(),
            in_flight: None,
            last_ok: now,
            nodes: 1,
            heard: false,
            stats: SyncStats::default(),
        }
    }

    /// Counts `permits` admitted at `now` by `rule` for `ask`'s bucket (`ask` with the rule's
    /// full quota).
    pub fn record(&mut self, rule: usize, ask: &Ask, permits: u64, now: Nanos) {
        if let Some(entry) = self.pending.get_mut(&ask.key) {
            entry.hits = entry.hits.saturating_add(permits);
            return;
        }
        if self.pending.len() >= MAX_PENDING {
            self.stats.dropped = self.stats.dropped.saturating_add(permits);
            return;
        }
        self.pending.insert(
            ask.key,
            Pending {
                rule,
                ask: *ask,
                hits: permits,
                denied: 0,
                first_at: now,
            },
        );
    }

    /// Counts `permits` refused at `now` by `rule` for `ask`'s bucket: demand the next batch
    /// reports, so that the sidecar grows this worker's share (nothing when the table is full).
    pub fn deny(&mut self, rule: usize, ask: &Ask, permits: u64, now: Nanos) {
        if let Some(entry) = self.pending.get_mut(&ask.key) {
            entry.denied = entry.denied.saturating_add(permits);
        } else if self.pending.len() < MAX_PENDING {
            let pending = Pending {
                rule,
                ask: *ask,
                hits: 0,
                denied: permits,
                first_at: now,
            };
            self.pending.insert(ask.key, pending);
        }
    }

    /// Records a decided request's `global` rules: their permits when the request was
    /// `admitted`, else the refusals of the `global` rules that refused it.
    pub fn record_decision(
        &mut self,
        policy: &Policy,
        results: &[RuleResult],
        admitted: bool,
        now: Nanos,
    ) {
        for result in results {
            let global = policy
                .rules
                .get(result.rule)
                .is_some_and(|r| r.scope == Scope::Global);
            if !global || result.cached_only {
                continue;
            }
            let ask = Ask {
                quota: result.configured,
                ..result.ask
            };
            if admitted && result.outcome.admitted {
                self.record(result.rule, &ask, ask.cost, now);
            } else if !admitted && result.refused {
                self.deny(result.rule, &ask, ask.cost, now);
            }
        }
    }

    /// The next batch to send at `now`, or `None` while one is out. A failed batch goes again
    /// unchanged; otherwise up to [`MAX_SYNC_ENTRIES`] buckets are taken from the table (none:
    /// a heartbeat).
    pub fn next_batch(&mut self, policy: &Policy, now: Nanos) -> Option<SyncRequest> {
        if self.in_flight.as_ref().is_some_and(|b| b.waiting) {
            return None;
        }
        let batch = match self.in_flight.take() {
            Some(batch) => batch,
            None => {
                let keys: Vec<u64> = self
                    .pending
                    .keys()
                    .take(MAX_SYNC_ENTRIES)
                    .copied()
                    .collect();
                let entries = keys
                    .iter()
                    .filter_map(|key| self.pending.remove(key))
                    .collect();
                let seq = self.next_seq;
                self.next_seq = self.next_seq.saturating_add(1);
                Batch {
                    seq,
                    entries,
                    sent_at: now,
                    lease: 0,
                    waiting: false,
                }
            }
        };
        let (lease, interval) = policy.sidecar.as_ref().map_or((0, 0), |sidecar| {
            (
                Self::stale_after(sidecar),
                sidecar.sync_interval_ms.saturating_mul(1_000_000),
            )
        });
        let request = SyncRequest {
            sender: self.sender,
            node: self.node,
            seq: batch.seq,
            entries: batch
                .entries
                .iter()
                .map(|p| entry(policy, p, now))
                .collect(),
            lease_ns: lease,
            interval_ns: interval,
        };
        self.in_flight = Some(Batch {
            waiting: true,
            sent_at: now,
            lease,
            ..batch
        });
        Some(request)
    }

    /// The answer to the batch in flight: what to fold into the node's buckets. An answer
    /// that does not match the batch counts as a failure (the batch goes again).
    pub fn answered(&mut self, response: &SyncResponse, now: Nanos) -> Vec<Fold> {
        let Some(batch) = self.in_flight.take() else {
            return Vec::new();
        };
        if response.totals.len() != batch.entries.len() {
            self.in_flight = Some(batch);
            self.failed();
            return Vec::new();
        }
        self.stats.batches = self.stats.batches.saturating_add(1);
        self.last_ok = now;
        self.nodes = response.nodes.max(1);
        self.heard = true;
        batch
            .entries
            .iter()
            .zip(&response.totals)
            .map(|(sent, total)| {
                let since = self.pending.get(&sent.ask.key).map_or(0, |p| p.hits);
                Fold {
                    ask: sent.ask,
                    target: total.remaining.saturating_sub(since),
                    allowance: total.allowance.map(|granted| Allowance {
                        left: granted.saturating_sub(since),
                        until: batch.sent_at.saturating_add(batch.lease),
                    }),
                }
            })
            .collect()
    }

    /// The batch in flight got no usable answer: it is sent again next time.
    pub fn failed(&mut self) {
        if let Some(batch) = self.in_flight.as_mut() {
            batch.waiting = false;
        }
        self.stats.failures = self.stats.failures.saturating_add(1);
    }

    /// How long the sidecar may stay silent before `global` rules fall back to the node's share.
    pub fn stale_after(sidecar: &Sidecar) -> Nanos {
        (3 * sidecar.sync_interval_ms + sidecar.timeout_ms).saturating_mul(1_000_000)
    }

    /// What `global` limits are divided by at `now`: 1 while the sidecar answers, else the
    /// node count (configured, or the last the sidecar reported).
    pub fn share(&self, sidecar: &Sidecar, now: Nanos) -> u64 {
        if now.saturating_sub(self.last_ok) <= Self::stale_after(sidecar) {
            1
        } else {
            sidecar.nodes.unwrap_or(self.nodes).max(1)
        }
    }

    /// The node count `global` rules' starter shares divide by: the last one the sidecar
    /// reported (the nodes actually syncing), or the configured one before any answer.
    pub fn nodes(&self, sidecar: &Sidecar) -> u64 {
        if self.heard {
            self.nodes.max(1)
        } else {
            sidecar.nodes.unwrap_or(1).max(1)
        }
    }

    /// Buckets waiting to be sent (not counting a batch in flight).
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

/// How many permits a token or leaky bucket's global total may lag the node's own view: the
/// sidecar counts a batch's hits from its first admission and batches of different workers
/// arrive out of order, so its refill can run up to one sync interval behind. A fold leaves
/// that much room rather than take permits the node really has (0 for the window algorithms,
/// whose counts do not depend on when within the window they are applied).
pub fn refill_lag(ask: &Ask, interval: Nanos) -> u64 {
    match ask.algorithm {
        Algorithm::TokenBucket | Algorithm::LeakyBucket => {
            interval.div_ceil(ask.algorithm.refill_period(&ask.quota).max(1))
        }
        _ => 0,
    }
}

fn entry(policy: &Policy, pending: &Pending, now: Nanos) -> SyncEntry {
    let quota = &pending.ask.quota;
    SyncEntry {
        rule: policy
            .rules
            .get(pending.rule)
            .map(|r| r.name.clone())
            .unwrap_or_default(),
        key: pending.ask.key,
        algorithm: WireAlgorithm::from(pending.ask.algorithm),
        limit: quota.limit,
        window_ns: quota.window,
        burst: Some(quota.burst),
        hits: pending.hits,
        denied: pending.denied,
        age_ns: now.saturating_sub(pending.first_at),
    }
}

#[cfg(test)]
mod tests;
