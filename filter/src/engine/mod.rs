//! Node-wide buckets in host shared data, spent through per-worker leases.
//!
//! Every worker (one VM each) keeps a small local cache. For the algorithms that allow it
//! ([`Algorithm::leasable`]) a worker takes a batch of permits from the node-wide bucket in one
//! compare-and-swap and spends them locally, so that most requests touch no shared data at all.
//! Leased permits are already counted as admitted in the node-wide state, so leasing never
//! over-admits; a lease lapses at [`Grant::valid_until`] (a token bucket's one permit at a time), after which spending it
//! could break the algorithm's promise ([`Lease`]). Near the limit leases shrink to one permit, so the
//! last permits of a bucket go exactly to the requests that ask for them. A refusal is
//! remembered until its retry time, so refusing costs no shared-data access either.
//!
//! The node-wide state lives in a fixed table of shared-data slots ([`slots`]): however many
//! distinct keys clients invent, the proxy holds at most `state_slots` entries.

mod local;
pub mod slots;

use crate::Nanos;
use crate::algorithm::{Algorithm, Grant, Lease, Quota};
use crate::allocation::{Allowance, Allowances};

pub use local::LocalCache;
pub use slots::{SharedStore, SlotTable, StoreError};

/// The largest batch a worker leases at once.
pub const MAX_LEASE: u64 = 1024;

/// Below this many spare permits (what the bucket could admit beyond the request's own) no
/// worker leases: a permit leased by one worker cannot be spent by another, so near the limit
/// a lease idle on one worker would make another refuse a request the bucket still had room
/// for. Small buckets (a free plan's burst of 10) thus stay exact across workers, at the price
/// of one shared-data round trip per request.
pub const LEASE_FLOOR: u64 = 64;

/// A lease takes at most this fraction (1/n) of the spare permits, so what one idle worker
/// can hold back from the others stays small beside what is left.
pub const LEASE_SHARE: u64 = 8;

/// The most permits a request costing `cost` may lease when `available` are available now and
/// the worker would like `wanted`: `cost` alone unless [`LEASE_FLOOR`] are spare.
pub fn lease_max(cost: u64, wanted: u64, available: u64) -> u64 {
    let spare = available.saturating_sub(cost);
    if spare < LEASE_FLOOR {
        return cost;
    }
    let batches = (spare / LEASE_SHARE / cost.max(1)).max(1);
    wanted.min(cost.saturating_mul(batches)).max(cost)
}

/// One rule's question about one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ask {
    /// The bucket: a hash of the rule and the request's key parts.
    pub key: u64,
    /// The rule's algorithm.
    pub algorithm: Algorithm,
    /// The rule's quota for this request.
    pub quota: Quota,
    /// Permits this request costs.
    pub cost: u64,
}

/// The answer for one rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Whether the rule admits the request.
    pub admitted: bool,
    /// Permits left (for headers).
    pub remaining: u64,
    /// When the whole quota is available again.
    pub reset: Nanos,
    /// When refused: when to retry.
    pub retry_at: Nanos,
    /// Leaky bucket queue: how long to hold the request.
    pub delay: Nanos,
    /// Where the permits came from, to give them back if another rule refuses.
    pub source: Source,
    /// The shared data failed (a full zone): nothing was decided; `failure_mode` says what
    /// to do (admitted is set, as for `open`).
    pub store_failed: bool,
}

/// Where an admission's permits came from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Source {
    /// Nothing was taken (refused, or the store failed open).
    #[default]
    Nothing,
    /// From this worker's lease.
    Lease,
    /// Straight from the node-wide bucket, at this instant.
    Shared(Nanos),
}

/// Counters the host turns into proxy stats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Shared-data reads.
    pub shared_reads: u64,
    /// Compare-and-swap conflicts retried.
    pub cas_conflicts: u64,
    /// Active buckets evicted because their slot chain was full (their holders start afresh).
    pub evicted_active: u64,
    /// Shared-data failures (the rule then admitted: failing open is the only choice without state).
    pub store_failures: u64,
}

/// A worker's view of the node-wide buckets.
#[derive(Debug)]
pub struct Limiter {
    table: SlotTable,
    cache: LocalCache,
    /// This worker's allowances of `global` buckets (what the sidecar lets it admit).
    pub allowances: Allowances,
    /// What this worker has counted since the host last read it.
    pub stats: EngineStats,
}

impl Limiter {
    /// A limiter over `slots` shared-data slots, caching at most `cache_capacity` keys locally.
    pub fn new(slots: u32, cache_capacity: usize) -> Self {
        Limiter {
            table: SlotTable::new(slots),
            cache: LocalCache::new(cache_capacity),
            allowances: Allowances::default(),
            stats: EngineStats::default(),
        }
    }

    /// Decides one rule for one request, taking its permits if admitted.
    pub fn acquire(&mut self, store: &mut impl SharedStore, ask: &Ask, now: Nanos) -> Outcome {
        if ask.algorithm.leasable()
            && let Some(outcome) = self.cache.spend(ask.key, ask.cost, now)
        {
            return outcome;
        }
        if let Some(retry_at) = self.cache.refused_until(ask.key, now) {
            return Outcome {
                retry_at,
                reset: retry_at,
                ..Outcome::default()
            };
        }
        let max = if ask.algorithm.leasable() {
            self.lease_size(ask)
        } else {
            ask.cost
        };
        // The old lease goes back in the same compare-and-swap as the new one is taken.
        let old = if ask.algorithm.leasable() {
            self.cache.lease_held(ask.key)
        } else {
            None
        };
        let hold_back = self.cache.hold_back(ask.key);
        let mut cleanly = true;
        let result = self.table.update(
            store,
            ask,
            now,
            &mut self.stats,
            |alg, quota, state, now| {
                cleanly = old
                    .as_ref()
                    .is_none_or(|old| alg.return_lease(quota, state, now, old));
                let max = if max > ask.cost {
                    lease_max(ask.cost, max, alg.available(quota, state, now))
                } else {
                    max
                };
                alg.lease(quota, state, now, ask.cost, max, hold_back)
            },
        );
        if old.is_some() {
            self.cache.returned(ask.key, cleanly, now);
        }
        let Some(grant) = result else {
            self.stats.store_failures = self.stats.store_failures.saturating_add(1);
            return Outcome {
                admitted: true,
                remaining: ask.quota.limit,
                reset: now,
                retry_at: now,
                store_failed: true,
                ..Outcome::default()
            };
        };
        self.record(ask, &grant, now)
    }

    /// Gives back what `outcome` took for `ask` (another rule refused the request).
    pub fn refund(
        &mut self,
        store: &mut impl SharedStore,
        ask: &Ask,
        outcome: &Outcome,
        now: Nanos,
    ) {
        match outcome.source {
            Source::Nothing => {}
            Source::Lease => self.cache.give_back(ask.key, ask.cost, now),
            Source::Shared(at) => {
                let _ = self.table.update(
                    store,
                    ask,
                    now,
                    &mut self.stats,
                    |alg, quota, state, now| {
                        alg.refund(quota, state, now, at, ask.cost);
                        Grant::default()
                    },
                );
                self.cache.forget_refusal(ask.key);
            }
        }
    }

    /// Lowers what `ask`'s node-wide bucket may still admit to `target` permits (a `global`
    /// rule's total from the sidecar: other nodes' admissions), never raising it. This
    /// worker's lease of the key goes back in the same compare-and-swap when it can, so that
    /// the next request leases from the folded bucket. Returns the permits taken (`None`: the store failed).
    pub fn fold(
        &mut self,
        store: &mut impl SharedStore,
        ask: &Ask,
        target: u64,
        now: Nanos,
    ) -> Option<u64> {
        let old = self.cache.lease_held(ask.key);
        let mut taken = 0;
        let mut returned = false;
        let result = self.table.update(
            store,
            ask,
            now,
            &mut self.stats,
            |alg, quota, state, now| {
                returned = old
                    .as_ref()
                    .is_some_and(|old| alg.return_lease(quota, state, now, old));
                let excess = alg.available(quota, state, now).saturating_sub(target);
                taken = alg.absorb(quota, state, now, excess);
                Grant::default()
            },
        );
        // A lease that could not go back (another worker took from the key since) stays this
        // worker's to spend: dropping it would lose its permits until it lapsed.
        if result.is_some() && returned {
            self.cache.drop_lease(ask.key, target);
        }
        result.map(|_| taken)
    }

    /// Keeps the `global` allowance the sidecar granted for `key` ([`crate::allocation`]). A
    /// refusal cached for the key (decided on the starter share, or with the allowance spent)
    /// is forgotten when the new allowance lets it admit again.
    pub fn allow(&mut self, key: u64, allowance: Allowance, now: Nanos) {
        if allowance.left > 0 {
            self.cache.forget_refusal(key);
        }
        self.allowances.grant(key, allowance, now);
    }

    /// Forgets every cached refusal: `global` rules' limits grew back from the node's share, so
    /// refusals decided under the share no longer hold.
    pub fn forget_refusals(&mut self) {
        self.cache.forget_refusals();
    }

    /// A cached refusal of `key` still in force at `now` (its retry time), without deciding.
    pub fn cached_refusal(&self, key: u64, now: Nanos) -> Option<Nanos> {
        self.cache.refused_until(key, now)
    }

    fn lease_size(&self, ask: &Ask) -> u64 {
        let cost = ask.cost.max(1);
        let last = self.cache.last_remaining(ask.key).unwrap_or(0);
        let batches = (last / cost / 4).clamp(1, MAX_LEASE);
        cost.saturating_mul(batches)
    }

    fn record(&mut self, ask: &Ask, grant: &Grant, now: Nanos) -> Outcome {
        if grant.granted == 0 {
            self.cache.refuse(ask.key, grant.retry_at, now);
            return Outcome {
                retry_at: grant.retry_at,
                reset: grant.reset,
                remaining: grant.remaining,
                ..Outcome::default()
            };
        }
        let (leftover, source) = if ask.algorithm.leasable() {
            let lease = Lease::of(ask.algorithm, &ask.quota, grant, ask.cost, now);
            (
                self.cache
                    .lease(ask.key, lease, grant.remaining, grant.reset, now),
                Source::Lease,
            )
        } else {
            (0, Source::Shared(now))
        };
        Outcome {
            admitted: true,
            remaining: grant.remaining.saturating_add(leftover),
            reset: grant.reset,
            retry_at: now,
            delay: grant.delay,
            source,
            store_failed: false,
        }
    }
}

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
