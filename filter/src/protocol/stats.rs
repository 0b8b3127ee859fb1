//! A worker's counters for the sidecar's `/metrics` ([`STATS_PATH`]): what the proxy's own
//! stats hold (`tollgate.<rule>.allowed`, …), for hosts that show them nowhere (nginx) and for
//! one place to scrape a whole node.
//!
//! **Totals, not deltas.** A report carries every counter since the worker started, so a
//! report that is lost, repeated or overtaken changes nothing: the sidecar adds the difference
//! to the previous report of the same `sender` (the whole value for a sender it has not seen).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The sidecar path that takes a [`StatsReport`] (answer: `204 No Content`).
pub const STATS_PATH: &str = "/v1/stats";

/// The most rules one [`StatsReport`] may carry (a configuration has far fewer).
pub const MAX_STATS_RULES: usize = 1_024;

/// The most other counters one [`StatsReport`] may carry.
pub const MAX_STATS_COUNTERS: usize = 64;

/// One worker's counters since it started.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsReport {
    /// The reporting worker (random per filter instance).
    pub sender: u64,
    /// Each rule's decisions, in the configuration's order.
    pub rules: Vec<RuleTotals>,
    /// The worker's other counters by name: `sync.batches`, `usage.dropped`,
    /// `registry.failures`, … (those the configuration uses).
    #[serde(default)]
    pub counters: BTreeMap<String, u64>,
}

/// One rule's decisions since the worker started.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleTotals {
    /// The rule's name.
    pub rule: String,
    /// Requests admitted.
    pub allowed: u64,
    /// Requests refused (429).
    pub refused: u64,
    /// Requests a `shadow` rule would have refused.
    pub shadow_refused: u64,
    /// Requests held in a leaky-bucket queue.
    pub queued: u64,
    /// `strict` checks the sidecar did not answer (decided by `failure_mode`).
    pub sidecar_failures: u64,
}

impl RuleTotals {
    /// The outcomes and their counts, in a fixed order (the sidecar's `outcome` label).
    pub fn outcomes(&self) -> [(&'static str, u64); 5] {
        [
            ("allowed", self.allowed),
            ("refused", self.refused),
            ("shadow_refused", self.shadow_refused),
            ("queued", self.queued),
            ("sidecar_failures", self.sidecar_failures),
        ]
    }
}

impl StatsReport {
    /// Checks the sizes and names; the error names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.rules.len() > MAX_STATS_RULES {
            return Err(format!(
                "rules: {} rules, at most {MAX_STATS_RULES}",
                self.rules.len()
            ));
        }
        if self.counters.len() > MAX_STATS_COUNTERS {
            return Err(format!(
                "counters: {} counters, at most {MAX_STATS_COUNTERS}",
                self.counters.len()
            ));
        }
        for (index, rule) in self.rules.iter().enumerate() {
            if rule.rule.is_empty() || rule.rule.len() > super::MAX_RULE_LEN {
                return Err(format!(
                    "rules[{index}].rule: must be 1 to {} bytes",
                    super::MAX_RULE_LEN
                ));
            }
        }
        for name in self.counters.keys() {
            let valid = !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'.' || b == b'_');
            if !valid {
                return Err(format!(
                    "counters.{name}: a name is 1 to 64 of a-z, '.' and '_'"
                ));
            }
        }
        Ok(())
    }
}
