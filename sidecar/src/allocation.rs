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
//! - **Grant** `g = min(⌈B · d / (d + Σ d_other)⌉, 2·d, B − Σ reserved_other)`: its demand's
//!   share of the budget, at most twice its demand (a quiet worker does not lock up permits a
//!   busy one will ask for a moment later), never more than what the other workers' live
//!   leases leave. A busy worker alone on a bucket gets all of it at its next sync (its
//!   demand counts the requests it refused); a quiet one gets at least 1 while anything is
//!   left.
//! - **Reservation**: the worker's lease reserves `max(g, r − hits)` (its new grant, or what its
//!   previous reservation `r` may still spend while this batch was on its way); other workers'
//!   grants never touch reserved permits. A lease not renewed for `lease_ns` (the worker
//!   went quiet on the bucket) keeps at most [`IDLE_FLOOR`] permits, on the worker as here,
//!   so a worker that burst and went quiet does not keep the others from the rest; its
//!   demand no longer weighs. Its line is forgotten [`RETAIN`] leases later.
//!
//! - **Opening**: a worker with no allowance for a bucket spends its node's *starter share*
//!   (what a fresh bucket of `limit ÷ nodes` holds) before its first sync of it. For one sync
//!   interval and the timeout after a bucket's ledger opens, every live node's starter share
//!   not yet reported (`max(0, starter − hits the node reported)`) is reserved too, so nodes
//!   that all start on a bucket in the same instant cannot be granted what the others are
//!   spending meanwhile.
//!
//! So as long as every worker spends only its allowance, the workers together admit at most
//! the global remaining: the limit holds however fast each one bursts. What is left over is a
//! starter share spent by a node that first meets the bucket after its opening, and at most
//! [`IDLE_FLOOR`] per worker quiet on a bucket for longer than [`RETAIN`] leases.
//!
//! The leases of a bucket live in the counter store next to it, as one more key
//! ([`ledger_key`]), updated atomically like the bucket itself; a ledger whose leases all
//! ended is forgotten like an idle bucket.

use std::collections::HashMap;
use tollgate_filter::Nanos;

use tollgate_filter::algorithm::{Algorithm, Quota, State};
use tollgate_filter::decision::node_share;
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
    /// Its node.
    pub node: u64,
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
            node: batch.node,
            lease_ns: batch.lease_ns,
            interval_ns: batch.interval_ns,
        })
    }

    /// How long after a ledger opens the nodes' starter shares are reserved: one interval and
    /// the timeout (what is left of the lease after two more intervals).
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
    /// Its node.
    pub node: u64,
    /// Its hits that were applied (0 for a duplicate batch).
    pub applied: u64,
    /// Its demand (`hits + denied`).
    pub demand: u64,
    /// How long its lease holds in full.
    pub lease_ns: Nanos,
    /// How long after the ledger opens starter shares are reserved.
    pub opening_ns: Nanos,
    /// Live nodes.
    pub nodes: u64,
    /// What one node's starter share of the bucket holds.
    pub starter: u64,
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

/// What a node's starter share of a fresh bucket holds (the filter's `limit ÷ nodes` quota).
pub fn starter(algorithm: Algorithm, quota: &Quota, nodes: u64) -> u64 {
    algorithm.available(&node_share(*quota, nodes), &State::default(), 0)
}

/// Grants the entry's worker its allowance of a budget of `budget` permits, recording its
/// lease in the bucket's ledger; `nodes` live nodes share the bucket.
#[allow(clippy::too_many_arguments)] // one entry's facts, each from a different source
pub async fn grant<S: CounterStore>(
    store: &S,
    entry: &SyncEntry,
    quota: &Quota,
    lease: &Lease,
    nodes: u64,
    applied: u64,
    budget: u64,
    now: Nanos,
) -> Result<u64, StoreError> {
    let algorithm = Algorithm::from(entry.algorithm);
    let claim = Claim {
        sender: lease.sender,
        node: lease.node,
        applied,
        demand: entry.hits.saturating_add(entry.denied),
        lease_ns: lease.lease_ns,
        opening_ns: lease.opening(),
        nodes: nodes.max(1),
        starter: starter(algorithm, quota, nodes),
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
    node: u64,
    reserved: u64,
    /// When it was granted.
    at: Nanos,
    demand: u64,
    /// Hits the worker reported since the ledger opened.
    reported: u64,
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

/// The allocation rule (see the module docs) on a ledger `state`: returns the claim's grant.
pub fn allot(state: &mut State, claim: &Claim, budget: u64, now: Nanos) -> (u64, Write) {
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
    let reported = previous
        .map_or(0, |p| p.reported)
        .saturating_add(claim.applied);
    let starters = if now <= opened.saturating_add(claim.opening_ns) {
        unreported_starters(&lines, claim, reported)
    } else {
        0
    };
    let reserved = lines
        .iter()
        .map(|l| l.holds(now, lease))
        .fold(starters, u64::saturating_add);
    let others: u64 = lines
        .iter()
        .filter(|l| l.active(now, lease))
        .map(|l| l.demand)
        .fold(0, u64::saturating_add);
    let demand = claim.demand.max(1);
    let share = u128::from(budget) * u128::from(demand);
    let fair = share.div_ceil(u128::from(demand.saturating_add(others)));
    let grant = u64::try_from(fair)
        .unwrap_or(u64::MAX)
        .min(demand.saturating_mul(2))
        .min(budget.saturating_sub(reserved));
    let still = previous.map_or(0, |p| p.holds(now, lease).saturating_sub(claim.applied));
    lines.push(Line {
        sender: claim.sender,
        node: claim.node,
        reserved: grant.max(still),
        at: now,
        demand,
        reported,
    });
    encode(state, opened, &lines);
    let idle_at = now.saturating_add(retain).saturating_add(1);
    (grant, Write::State { idle_at })
}

/// The starter shares live nodes may be spending that they have not reported yet: per node,
/// its starter share less the hits its workers reported (nodes with no line reported none).
fn unreported_starters(lines: &[Line], claim: &Claim, reported: u64) -> u64 {
    let mut by_node: HashMap<u64, u64> = HashMap::new();
    by_node.insert(claim.node, reported);
    for line in lines {
        let hits = by_node.entry(line.node).or_insert(0);
        *hits = hits.saturating_add(line.reported);
    }
    let silent = claim.nodes.saturating_sub(by_node.len() as u64);
    by_node
        .values()
        .map(|hits| claim.starter.saturating_sub(*hits))
        .fold(silent.saturating_mul(claim.starter), u64::saturating_add)
}

fn decode(state: &State) -> Vec<Line> {
    state
        .log
        .chunks_exact(6)
        .filter_map(|words| match *words {
            [sender, node, reserved, at, demand, reported] => Some(Line {
                sender,
                node,
                reserved,
                at,
                demand,
                reported,
            }),
            _ => None,
        })
        .collect()
}

fn encode(state: &mut State, opened: Nanos, lines: &[Line]) {
    state.words = [opened, 0, 0];
    state.log.clear();
    for l in lines {
        let words = [l.sender, l.node, l.reserved, l.at, l.demand, l.reported];
        state.log.extend(words);
    }
}

#[cfg(test)]
mod tests;
