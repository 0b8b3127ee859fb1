//! Following the sidecar's registry: every `registry.interval_ms` the root context asks
//! `GET /v1/registry?since=<version>` (one call out at a time, never on the request path) and
//! applies the answer; while the sidecar does not answer the worker keeps the registry it has.
//! Each worker follows on its own (one small call per worker and interval).

use super::host::Host;
use super::sidecar;
use crate::Nanos;
use crate::policy::{Plan, Registry, Sidecar};
use crate::registry::table::Table;
use crate::registry::{REGISTRY_PATH, RegistryFeed};

/// The least time a registry call may take (a whole registry can be large).
const MIN_TIMEOUT_MS: u64 = 5_000;

/// Counters not yet sent to the host's stats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FollowStats {
    /// Feeds applied.
    pub updates: u64,
    /// Calls that failed (no answer, not 200, not a feed).
    pub failures: u64,
}

/// One worker's view of the registry and its call out.
#[derive(Debug)]
pub struct Follow {
    interval: Nanos,
    next: Nanos,
    call: Option<u32>,
    /// When the call out is given up for lost (a host that never answers it).
    lost_at: Nanos,
    pub table: Table,
    pub stats: FollowStats,
}

impl Follow {
    pub fn new(config: Registry, now: Nanos) -> Self {
        Follow {
            interval: config.interval_ms.saturating_mul(1_000_000),
            next: now,
            call: None,
            lost_at: 0,
            table: Table::default(),
            stats: FollowStats::default(),
        }
    }

    /// Whether a call is due by `soon` (and none is out, or the one out is lost).
    pub fn due(&self, soon: Nanos) -> bool {
        (self.call.is_none() || soon >= self.lost_at) && soon >= self.next
    }

    /// Asks for the changes after the version held.
    pub fn send(&mut self, host: &mut impl Host, sidecar: &Sidecar, now: Nanos) {
        self.next = now.saturating_add(self.interval);
        let path = format!("{REGISTRY_PATH}?since={}", self.table.version);
        let timeout = sidecar.timeout_ms.max(MIN_TIMEOUT_MS);
        self.lost_at = now.saturating_add(timeout.saturating_mul(2_000_000));
        self.call = sidecar::get(host, sidecar, &path, timeout);
        if self.call.is_none() {
            self.stats.failures += 1;
        }
    }

    /// Whether `token` is this follower's call.
    pub fn owns(&self, token: u32) -> bool {
        self.call == Some(token)
    }

    /// The answer to the call out: applies it; true when the registry changed.
    pub fn answered(&mut self, host: &mut impl Host, num_headers: usize, body_size: usize) -> bool {
        self.call = None;
        match sidecar::read_response::<RegistryFeed>(host, num_headers, body_size) {
            Some(feed) => {
                let changed = self.table.apply(feed);
                self.stats.updates += u64::from(changed);
                changed
            }
            None => {
                self.stats.failures += 1;
                false
            }
        }
    }
}

/// The configuration's plans with the registry's over them: a registry plan of the same name
/// replaces its rate and burst (static plan ids stay), the others follow, by name.
pub fn merged_plans(base: &[Plan], table: &Table) -> Vec<Plan> {
    let mut plans = base.to_vec();
    let mut names: Vec<&String> = table.plans.keys().collect();
    names.sort();
    for name in names {
        let Some(plan) = table.plans.get(name) else {
            continue;
        };
        let merged = Plan {
            name: plan.name.clone(),
            requests_per_minute: plan.requests_per_minute.max(1),
            burst: plan.burst,
        };
        match plans.iter_mut().find(|p| p.name == plan.name) {
            Some(existing) => *existing = merged,
            None => plans.push(merged),
        }
    }
    plans
}

#[cfg(test)]
mod tests;
