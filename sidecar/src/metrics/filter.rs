//! The filter workers' own counters (`POST /v1/stats`), exported here: each report carries a
//! worker's totals since it started, and the counters grow by the difference from that
//! worker's previous report, so a lost, repeated or late report counts nothing twice.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use tollgate_filter::protocol::{RuleTotals, StatsReport};

use super::{MAX_RULE_LABELS, OTHER_RULE};

/// Workers remembered at most; beyond, the one heard from longest ago is forgotten (its next
/// report then counts its whole totals again: senders are per worker and live as long as it).
pub const MAX_SENDERS: usize = 16_384;
/// A worker not heard from for this long (seconds) is forgotten.
pub const FORGET_AFTER_SECONDS: u64 = 3_600;

/// The latest totals of each worker.
#[derive(Default)]
pub struct FilterTotals {
    senders: Mutex<HashMap<u64, Seen>>,
}

struct Seen {
    at: u64,
    rules: HashMap<String, RuleTotals>,
    counters: HashMap<String, u64>,
}

/// What a report adds: per rule and outcome, per counter.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Increments {
    /// `(rule, outcome, increment)`, nonzero only.
    pub rules: Vec<(String, &'static str, u64)>,
    /// `(counter, increment)`, nonzero only.
    pub counters: Vec<(String, u64)>,
}

impl FilterTotals {
    /// What `report`, received at `now` (Unix seconds), adds to the counters; remembers it.
    pub fn increments(&self, report: &StatsReport, now: u64) -> Increments {
        let mut senders = self.senders.lock().unwrap_or_else(PoisonError::into_inner);
        senders.retain(|_, seen| now.saturating_sub(seen.at) < FORGET_AFTER_SECONDS);
        if !senders.contains_key(&report.sender)
            && senders.len() >= MAX_SENDERS
            && let Some(oldest) = senders.iter().min_by_key(|(_, s)| s.at).map(|(k, _)| *k)
        {
            senders.remove(&oldest);
        }
        let seen = senders.entry(report.sender).or_insert_with(|| Seen {
            at: now,
            rules: HashMap::new(),
            counters: HashMap::new(),
        });
        seen.at = now;
        let mut increments = Increments::default();
        for totals in &report.rules {
            let before = seen.rules.get(&totals.rule);
            for (index, (outcome, value)) in totals.outcomes().into_iter().enumerate() {
                let old = before
                    .and_then(|b| b.outcomes().get(index).map(|(_, v)| *v))
                    .unwrap_or(0);
                let added = value.saturating_sub(old);
                if added > 0 {
                    increments.rules.push((totals.rule.clone(), outcome, added));
                }
            }
            seen.rules.insert(totals.rule.clone(), totals.clone());
        }
        for (name, &value) in &report.counters {
            let old = seen.counters.insert(name.clone(), value).unwrap_or(0);
            let added = value.saturating_sub(old);
            if added > 0 {
                increments.counters.push((name.clone(), added));
            }
        }
        increments
    }
}

/// `rule`, or [`OTHER_RULE`] when `known` already holds [`MAX_RULE_LABELS`] others.
pub fn rule_label<'a>(known: &mut std::collections::HashSet<String>, rule: &'a str) -> &'a str {
    if known.contains(rule) {
        return rule;
    }
    if known.len() < MAX_RULE_LABELS {
        known.insert(rule.to_owned());
        return rule;
    }
    OTHER_RULE
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    fn report(sender: u64, allowed: u64, refused: u64, dropped: u64) -> StatsReport {
        StatsReport {
            sender,
            rules: vec![RuleTotals {
                rule: "per-ip".into(),
                allowed,
                refused,
                ..RuleTotals::default()
            }],
            counters: [("usage.dropped".to_owned(), dropped)].into(),
        }
    }

    #[test]
    fn a_repeated_or_late_report_adds_nothing_and_a_new_worker_counts_from_zero() {
        let totals = FilterTotals::default();
        let first = totals.increments(&report(1, 10, 2, 0), 100);
        assert_eq!(
            first.rules,
            vec![
                ("per-ip".to_owned(), "allowed", 10),
                ("per-ip".to_owned(), "refused", 2)
            ]
        );
        assert!(first.counters.is_empty());
        assert_eq!(
            totals.increments(&report(1, 10, 2, 0), 110),
            Increments::default(),
            "the same report again"
        );
        let later = totals.increments(&report(1, 15, 2, 3), 120);
        assert_eq!(later.rules, vec![("per-ip".to_owned(), "allowed", 5)]);
        assert_eq!(later.counters, vec![("usage.dropped".to_owned(), 3)]);
        assert_eq!(
            totals.increments(&report(1, 12, 2, 3), 130),
            Increments::default(),
            "an older report overtaken by a newer one"
        );
        let other = totals.increments(&report(2, 4, 0, 0), 130);
        assert_eq!(other.rules, vec![("per-ip".to_owned(), "allowed", 4)]);
    }

    #[test]
    fn a_worker_silent_for_an_hour_is_forgotten() {
        let totals = FilterTotals::default();
        totals.increments(&report(1, 10, 0, 0), 0);
        totals.increments(&report(2, 1, 0, 0), FORGET_AFTER_SECONDS);
        assert_eq!(totals.senders.lock().unwrap().len(), 1);
    }

    #[test]
    fn rule_labels_stop_growing_at_the_limit() {
        let mut known = std::collections::HashSet::new();
        for n in 0..MAX_RULE_LABELS {
            assert_eq!(rule_label(&mut known, &format!("r{n}")), format!("r{n}"));
        }
        assert_eq!(rule_label(&mut known, "one-too-many"), OTHER_RULE);
        assert_eq!(rule_label(&mut known, "r0"), "r0");
    }
}
