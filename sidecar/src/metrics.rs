//! The sidecar's Prometheus metrics.
//!
//! Each [`Metrics`] owns its own recorder (no process-global state), so every `app()` — one in
//! production, one per test — counts on its own, and `/metrics` renders exactly its counters.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};

use metrics::{Counter, Key, Label, Metadata, Recorder, SharedString};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

/// Distinct rule names used as labels; decisions for further rules count under [`OTHER_RULE`]
/// (rule names come from requests, and a label per arbitrary name would grow without bound).
pub const MAX_RULE_LABELS: usize = 1_000;
/// The `rule` label of decisions beyond [`MAX_RULE_LABELS`] distinct rules.
pub const OTHER_RULE: &str = "_other";

const DECISIONS: &str = "tollgate_decisions_total";
const ERRORS: &str = "tollgate_errors_total";
static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

/// The counters one sidecar exports.
pub struct Metrics {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    /// Per rule: the admitted and refused counters.
    decisions: RwLock<HashMap<String, [Counter; 2]>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Fresh, empty metrics.
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new().build_recorder();
        recorder.describe_counter(
            DECISIONS.into(),
            None,
            SharedString::const_str("Strict decisions by rule and outcome (admitted, refused)."),
        );
        recorder.describe_counter(
            ERRORS.into(),
            None,
            SharedString::const_str("Requests that failed, by stable error code."),
        );
        let handle = recorder.handle();
        Metrics {
            recorder,
            handle,
            decisions: RwLock::new(HashMap::new()),
        }
    }

    /// Counts one decision of `rule`.
    pub fn decision(&self, rule: &str, admitted: bool) {
        let pick = |[yes, no]: &[Counter; 2]| if admitted { yes.clone() } else { no.clone() };
        let known = self
            .decisions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(rule)
            .map(pick);
        let counter = match known {
            Some(counter) => counter,
            None => {
                let mut decisions = self
                    .decisions
                    .write()
                    .unwrap_or_else(PoisonError::into_inner);
                // Another request may have added `rule` since the read.
                let room = decisions.contains_key(rule) || decisions.len() < MAX_RULE_LABELS;
                let rule = if room { rule } else { OTHER_RULE };
                let counters = decisions.entry(rule.to_owned()).or_insert_with(|| {
                    [
                        self.counter(DECISIONS, rule, "admitted"),
                        self.counter(DECISIONS, rule, "refused"),
                    ]
                });
                pick(counters)
            }
        };
        counter.increment(1);
    }

    fn counter(&self, name: &'static str, rule: &str, outcome: &'static str) -> Counter {
        let labels = vec![
            Label::new("rule", rule.to_owned()),
            Label::new("outcome", outcome),
        ];
        self.recorder
            .register_counter(&Key::from_parts(name, labels), &METADATA)
    }

    /// Counts one failed request with the stable error code `kind`.
    pub fn error(&self, kind: &'static str) {
        let key = Key::from_parts(ERRORS, vec![Label::new("kind", kind)]);
        self.recorder.register_counter(&key, &METADATA).increment(1);
    }

    /// The Prometheus text exposition of every counter.
    pub fn render(&self) -> String {
        self.handle.render()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_rule_outcome_and_error_kind() {
        let metrics = Metrics::new();
        metrics.decision("per-tenant", true);
        metrics.decision("per-tenant", true);
        metrics.decision("per-tenant", false);
        metrics.error("invalid_json");
        let text = metrics.render();
        assert!(
            text.contains(r#"tollgate_decisions_total{rule="per-tenant",outcome="admitted"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"tollgate_decisions_total{rule="per-tenant",outcome="refused"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"tollgate_errors_total{kind="invalid_json"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn rule_labels_are_bounded() {
        let metrics = Metrics::new();
        for n in 0..MAX_RULE_LABELS + 5 {
            metrics.decision(&format!("rule-{n}"), true);
        }
        let text = metrics.render();
        assert!(
            text.contains(r#"tollgate_decisions_total{rule="_other",outcome="admitted"} 5"#),
            "{text}"
        );
        assert!(!text.contains(&format!("rule-{MAX_RULE_LABELS}\"")));
    }
}
