//! `global` rules' allocation: how much of a bucket's global remaining each filter worker may
//! spend before it syncs again.
//!
//! Without it every node may spend the whole remaining between two syncs, so bursts on `n`
//! nodes admit up to `n` times the limit. With it (a batch that sets `lease_ns`), each answered
//! entry carries the worker's *allowance*, and the worker admits no more than that until its
//! next answer or until the lease ends. The rule, after Doorman's demand-proportional
//! capacity leases and CockroachDB's distributed token bucket:
//!
//! - **Budget** `B`: the bucket's global remaining after the batch, plus for token and leaky
//!   buckets what it refills in one sync interval (`⌊interval / period⌋`: a bucket slower
//!   than one permit per interval lends nothing ahead).
//! - **Demand** `d`: what the worker admitted and refused for the bucket since its previous
//!   batch (`hits + denied`, at least 1); other workers' demands are those of their live
//!   leases.
//! - **Grant** `g = min(⌈B · d / (d + Σ d_other)⌉, B − Σ reserved_other)`: its demand's
//!   share of the budget, never more than what the other workers' leases leave. A worker
//!   alone on a bucket gets all of it; a quiet one gets at least 1 while anything is left.
//! - **Reservation**: the worker's lease reserves `max(g, g_previous − hits)` — its new
//!   allowance, or what its previous one may still spend while this batch was on its way —
//!   and other workers' grants never touch reserved permits. A lease not renewed for
//!   `lease_ns` (the worker went quiet on the bucket) keeps at most [`IDLE_FLOOR`] permits, on
//!   the worker as here, and its demand no longer weighs: a worker that burst and went quiet
//!   does not keep the others from the rest. Its line is forgotten [`RETAIN`] leases later.
//! - **Opening**: for one sync interval and the timeout after a bucket's first sync (the time
//!   every node's first batch for it needs to arrive), nothing is granted: each worker keeps
//!   deciding on its node's *starter share* (a fresh bucket of `limit ÷ nodes`, see the
//!   filter's `allocation` module), which the nodes can all spend at once without
//!   overshooting, and reports it. Only then is the remaining divided by demand.
//!
//! So as long as every worker spends only its allowance, the workers together admit at most
//! the global remaining: the limit holds however fast each one bursts. What can still go
//! over: a starter share spent by a node that first meets the bucket after its opening, and
//! at most [`IDLE_FLOOR`] per worker quiet on a bucket for longer than [`RETAIN`] leases.
//!
//! The leases of a bucket live in the counter store next to it, as one more key
//! ([`ledger_key`]), updated atomically like the bucket itself; a ledger whose leases all
//! ended is forgotten like an idle bucket.

use tollgate_filter::Nanos;

use tollgate_filter::algorithm::{Algorithm, Quota, State};
use tollgate_filter::protocol::{SyncEntry, SyncRequest};

use crate::storage::{CounterKey, CounterStore, StoreError, Write};

/// Appended to a rule's name to name its ledgers (rule names never contain a `/`).
pub const LEDGER_SUFFIX: &str = "/allocation";

/// A ledger holds at most this many leases (workers); the oldest makes room.
pub const MAX_LEASES: usize = 256;

/// What a lease not renewed for `lease_ns` still holds at most (the filter's
/// `allocation::IDLE_FLOOR`).
pub const IDLE_FLOOR: u64 = tollgate_filter::allocation::IDLE_FLOOR;

/// A lease's line is kept this many `lease_ns` after its grant.
pub const RETAIN: u64 = 100;

/// What one batch asks of the allocation (`None` from [`Lease::of`]: an older filter, no
/// allowances).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The worker.
    pub sender: u64,
    /// How long its allowances hold.
    pub lease_ns: Nanos,
    /// Its sync interval (token and leaky buckets' allowances include one interval's refill).
    pub interval_ns: Nanos,
}

impl Lease {
    /// The batch's lease, if it asks for allowances.
    pub fn of(batch: &SyncRequest) -> Option<Lease> {
        (batch.lease_ns > 0).then_some(Lease {
            sender: batch.sender,
            lease_ns: batch.lease_ns,
            interval_ns: batch.interval_ns,
        })
    }

    /// How long after a ledger opens it grants nothing: one interval and the timeout (what is
    /// left of the lease after two more intervals), the time every node's first batch for the
    /// bucket needs to arrive.
    fn opening(&self) -> Nanos {
        self.lease_ns
            .saturating_sub(self.interval_ns.saturating_mul(2))
            .max(self.interval_ns)
    }
}

/// One entry's claim on its bucket's budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claim {
    /// The worker.
    pub sender: u64,
    /// Its hits that were applied (0 for a duplicate batch).
    pub applied: u64,
    /// Its demand (`hits + denied`).
    pub demand: u64,
    /// How long its lease holds in full.
    pub lease_ns: Nanos,
    /// How long after the ledger opens no allowance is granted.
    pub opening_ns: Nanos,
}

/// The ledger of `rule`'s bucket `key`.
pub fn ledger_key(rule: &str, key: u64) -> CounterKey {
    CounterKey {
        rule: format!("{rule}{LEDGER_SUFFIX}"),
        key,
    }
}

/// What `remaining` permits of a bucket are worth to the allocation: for token and leaky
/// buckets, plus their whole permits of refill over one interval.
pub fn budget(algorithm: Algorithm, quota: &Quota, remaining: u64, interval_ns: Nanos) -> u64 {
    let refill = match algorithm {
        Algorithm::TokenBucket | Algorithm::LeakyBucket => {
            interval_ns / algorithm.refill_period(quota).max(1)
        }
        _ => 0,
    };
    remaining.saturating_add(refill)
}

/// Grants the entry's worker its allowance of a budget of `budget` permits, recording its
/// lease in the bucket's ledger (`None`: the ledger is opening, the worker keeps its starter
/// share).
pub async fn grant<S: CounterStore>(
    store: &S,
    entry: &SyncEntry,
    lease: &Lease,
    applied: u64,
    budget: u64,
    now: Nanos,
) -> Result<Option<u64>, StoreError> {
    let claim = Claim {
        sender: lease.sender,
        applied,
        demand: entry.hits.saturating_add(entry.denied),
        lease_ns: lease.lease_ns,
        opening_ns: lease.opening(),
    };
    let key = ledger_key(&entry.rule, entry.key);
    store
        .update(&key, now, |state| allot(state, &claim, budget, now))
        .await
}

/// One worker's lease in a ledger.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Line {
    sender: u64,
    /// Its latest allowance.
    granted: u64,
    /// What it may spend: its allowance, or more of the one before while its batch was out.
    reserved: u64,
    /// When it was granted.
    at: Nanos,
    demand: u64,
}

impl Line {
    /// Whether the lease was renewed in the last `lease`.
    fn active(&self, now: Nanos, lease: Nanos) -> bool {
        now <= self.at.saturating_add(lease)
    }

    /// What it reserves at `now`.
    fn holds(&self, now: Nanos, lease: Nanos) -> u64 {
        if self.active(now, lease) {
            self.reserved
        } else {
            self.reserved.min(IDLE_FLOOR)
        }
    }
}

/// The allocation rule (see the module docs) on a ledger `state`: returns the claim's grant
/// (`None` while the ledger opens).
pub fn allot(state: &mut State, claim: &Claim, budget: u64, now: Nanos) -> (Option<u64>, Write) {
    let lease = claim.lease_ns;
    let retain = lease.saturating_mul(RETAIN);
    let mut lines = decode(state);
    lines.retain(|line| line.active(now, retain));
    let opened = match state.words[0] {
        0 => now,
        _ if lines.is_empty() => now,
        at => at,
    };
    let previous = lines
        .iter()
        .position(|line| line.sender == claim.sender)
        .map(|at| lines.swap_remove(at));
    if lines.len() >= MAX_LEASES
        && let Some(first) = (0..lines.len()).min_by_key(|&at| lines.get(at).map(|l| l.at))
    {
        lines.swap_remove(first);
    }
    let reserved = lines
        .iter()
        .map(|l| l.holds(now, lease))
        .fold(0, u64::saturating_add);
    let others: u64 = lines
        .iter()
        .filter(|l| l.active(now, lease))
        .map(|l| l.demand)
        .fold(0, u64::saturating_add);
    let demand = claim.demand.max(1);
    let share = u128::from(budget) * u128::from(demand);
    let fair = share.div_ceil(u128::from(demand.saturating_add(others)));
    let opening = now <= opened.saturating_add(claim.opening_ns);
    let grant = if opening {
        0
    } else {
        u64::try_from(fair)
            .unwrap_or(u64::MAX)
            .min(budget.saturating_sub(reserved))
    };
    // Until its next batch the worker may still spend what its previous allowance left when
    // this batch went out (the hits in it came from that allowance).
    let still = previous.map_or(0, |p| {
        let left = if p.active(now, lease) {
            p.granted
        } else {
            p.granted.min(IDLE_FLOOR)
        };
        left.saturating_sub(claim.applied)
    });
    lines.push(Line {
        sender: claim.sender,
        granted: grant,
        reserved: grant.max(still),
        at: now,
        demand,
    });
    encode(state, opened, &lines);
    let idle_at = now.saturating_add(retain).saturating_add(1);
    ((!opening).then_some(grant), Write::State { idle_at })
}

fn decode(state: &State) -> Vec<Line> {
    state
        .log
        .chunks_exact(5)
        .filter_map(|words| match *words {
            [sender, granted, reserved, at, demand] => Some(Line {
                sender,
                granted,
                reserved,
                at,
                demand,
            }),
            _ => None,
        })
        .collect()
}

fn encode(state: &mut State, opened: Nanos, lines: &[Line]) {
    state.words = [opened, 0, 0];
    state.log.clear();
    for l in lines {
        state
            .log
            .extend([l.sender, l.granted, l.reserved, l.at, l.demand]);
    }
}

#[cfg(test)]
mod tests;
