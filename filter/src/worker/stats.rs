//! The worker's counters, flushed to the proxy's metrics once a second, and their totals
//! reported to the sidecar's `/metrics` every [`REPORT_EVERY`] ([`StatsOut`]).

use log::warn;

use super::{RuleCounters, Worker, host::Host, sidecar};
use crate::policy::{Policy, Sidecar};
use crate::protocol::{RuleTotals, STATS_PATH, StatsReport};
use crate::{Nanos, SECOND};

/// How often a worker reports its totals to the sidecar.
pub const REPORT_EVERY: Nanos = 10 * SECOND;

/// The totals since the worker started, on their way to the sidecar ([`STATS_PATH`]).
#[derive(Debug)]
pub struct StatsOut {
    report: StatsReport,
    next_send: Nanos,
    /// The token of the report call out.
    call: Option<u32>,
}

impl StatsOut {
    /// A worker's totals under `policy`, reported as `sender`, first at `now` + [`REPORT_EVERY`].
    pub fn new(sender: u64, policy: &Policy, now: Nanos) -> Self {
        let rules = policy
            .rules
            .iter()
            .map(|rule| RuleTotals {
                rule: rule.name.clone(),
                ..RuleTotals::default()
            })
            .collect();
        StatsOut {
            report: StatsReport {
                sender,
                rules,
                counters: Default::default(),
            },
            next_send: now.saturating_add(REPORT_EVERY),
            call: None,
        }
    }

    fn add_rule(&mut self, index: usize, counters: &RuleCounters) {
        if let Some(totals) = self.report.rules.get_mut(index) {
            totals.allowed = totals.allowed.saturating_add(counters.allowed);
            totals.refused = totals.refused.saturating_add(counters.refused);
            totals.shadow_refused = totals
                .shadow_refused
                .saturating_add(counters.shadow_refused);
            totals.queued = totals.queued.saturating_add(counters.queued);
            totals.sidecar_failures = totals
                .sidecar_failures
                .saturating_add(counters.sidecar_failures);
        }
    }

    fn add(&mut self, group: &str, names: &[&str], values: &[u64]) {
        for (name, &value) in names.iter().zip(values) {
            let total = self
                .report
                .counters
                .entry(format!("{group}.{name}"))
                .or_insert(0);
            *total = total.saturating_add(value);
        }
    }

    /// Sends the totals when they are due and no report is out.
    pub fn send(&mut self, host: &mut impl Host, sidecar: &Sidecar, now: Nanos) {
        if now < self.next_send || self.call.is_some() {
            return;
        }
        self.next_send = now.saturating_add(REPORT_EVERY);
        if let Ok(body) = serde_json::to_vec(&self.report) {
            self.call = sidecar::call(
                host,
                sidecar,
                STATS_PATH,
                &body,
                sidecar.timeout_ms.max(1_000),
            );
        }
    }

    /// Whether `token` is the report call (answered: the next one may go; a lost report is
    /// made good by the next, which carries the same totals and more).
    pub fn answered(&mut self, token: u32) -> bool {
        let mine = self.call == Some(token);
        if mine {
            self.call = None;
        }
        mine
    }

    /// The totals as they stand.
    pub fn report(&self) -> &StatsReport {
        &self.report
    }
}

impl Worker {
    pub(super) fn flush_stats(&mut self, host: &mut impl Host) {
        self.flush_rule_counters(host);
        self.flush_sync_stats(host);
        self.flush_follow_stats(host);
        self.flush_usage_stats(host);
    }

    fn flush_rule_counters(&mut self, host: &mut impl Host) {
        for (index, (counters, ids)) in self.counters.iter_mut().zip(&self.metric_ids).enumerate() {
            if let Some(report) = self.report.as_mut() {
                report.add_rule(index, counters);
            }
            let values = [
                counters.allowed,
                counters.refused,
                counters.shadow_refused,
                counters.queued,
                counters.sidecar_failures,
            ];
            for (value, id) in values.into_iter().zip(ids) {
                if let (Some(id), true) = (id, value > 0) {
                    host.increment(*id, value);
                }
            }
            *counters = RuleCounters::default();
        }
    }

    fn flush_sync_stats(&mut self, host: &mut impl Host) {
        if let Some(sync) = self.sync.as_mut() {
            let values = [sync.stats.batches, sync.stats.failures, sync.stats.dropped];
            if let Some(report) = self.report.as_mut() {
                report.add("sync", &["batches", "failures", "dropped"], &values);
            }
            for (value, id) in values.into_iter().zip(self.sync_ids) {
                if let (Some(id), true) = (id, value > 0) {
                    host.increment(id, value);
                }
            }
            if sync.stats.dropped > 0 {
                warn!(
                    "{} global admissions could not be kept for the sidecar (too many keys while it was gone)",
                    sync.stats.dropped
                );
            }
            sync.stats = Default::default();
        }
    }

    fn flush_follow_stats(&mut self, host: &mut impl Host) {
        if let Some(follow) = self.follow.as_mut() {
            let values = [follow.stats.updates, follow.stats.failures];
            if let Some(report) = self.report.as_mut() {
                report.add("registry", &["updates", "failures"], &values);
            }
            for (value, id) in values.into_iter().zip(self.follow_ids) {
                if let (Some(id), true) = (id, value > 0) {
                    host.increment(id, value);
                }
            }
            follow.stats = Default::default();
        }
    }

    fn flush_usage_stats(&mut self, host: &mut impl Host) {
        if let Some(usage) = self.usage.as_mut() {
            let stats = usage.stats;
            let values = [
                stats.batches,
                stats.failures,
                stats.dropped,
                stats.log_dropped,
            ];
            if let Some(report) = self.report.as_mut() {
                let names = ["batches", "failures", "dropped", "log_dropped"];
                report.add("usage", &names, &values);
            }
            for (value, id) in values.into_iter().zip(self.usage_ids) {
                if let (Some(id), true) = (id, value > 0) {
                    host.increment(id, value);
                }
            }
            if stats.dropped > 0 {
                warn!(
                    "{} requests could not be metered: the usage buffer was full (sidecar gone too long?) or their tenant id is not a usable label",
                    stats.dropped
                );
            }
            if stats.log_dropped > 0 {
                warn!(
                    "{} requests could not be kept for the request log: its buffer was full (sidecar gone too long?)",
                    stats.log_dropped
                );
            }
            usage.stats = Default::default();
        }
    }
}

/// Each rule's counters: allowed, refused, shadow_refused, queued, sidecar_failures.
pub(super) fn rule_metric_ids(host: &mut impl Host, policy: &Policy) -> Vec<[Option<u32>; 5]> {
    policy
        .rules
        .iter()
        .map(|rule| {
            [
                "allowed",
                "refused",
                "shadow_refused",
                "queued",
                "sidecar_failures",
            ]
            .map(|what| host.define_counter(&format!("tollgate.{}.{}", rule.name, what)))
        })
        .collect()
}

/// The usage sender's counters (`log_dropped` only when the request log is on).
pub(super) fn usage_metric_ids(host: &mut impl Host, policy: &Policy) -> [Option<u32>; 4] {
    match policy.usage {
        Some(usage) => ["batches", "failures", "dropped", "log_dropped"].map(|what| {
            (what != "log_dropped" || usage.request_log)
                .then(|| host.define_counter(&format!("tollgate.usage.{what}")))
                .flatten()
        }),
        None => [None; 4],
    }
}
