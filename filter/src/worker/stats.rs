//! The worker's counters, flushed to the proxy's metrics once a second.

use log::warn;

use super::{RuleCounters, Worker, host::Host};
use crate::policy::Policy;

impl Worker {
    pub(super) fn flush_stats(&mut self, host: &mut impl Host) {
        self.flush_rule_counters(host);
        self.flush_sync_stats(host);
        self.flush_follow_stats(host);
        self.flush_usage_stats(host);
    }

    fn flush_rule_counters(&mut self, host: &mut impl Host) {
        for (counters, ids) in self.counters.iter_mut().zip(&self.metric_ids) {
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
