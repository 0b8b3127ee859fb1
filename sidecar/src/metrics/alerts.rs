//! The quota alerts' metrics (see the table in [`super`]).

use metrics::{Key, Label, Recorder as _, SharedString};

use super::{METADATA, Metrics};

const FIRED: &str = "tollgate_alerts_fired_total";
const DELIVERIES: &str = "tollgate_alert_deliveries_total";
const EVALUATION_SECONDS: &str = "tollgate_alert_evaluation_seconds";
const EVALUATED_TENANTS: &str = "tollgate_alert_evaluated_tenants";

impl Metrics {
    /// Counts one alert recorded, of webhook type `event_type` (`quota.threshold_reached`, …).
    /// (Described by [`alert_evaluation`](Self::alert_evaluation), which every round calls.)
    pub fn alert_fired(&self, event_type: &'static str) {
        let key = Key::from_parts(FIRED, vec![Label::new("type", event_type)]);
        self.recorder.register_counter(&key, &METADATA).increment(1);
    }

    /// Counts one delivery attempt on `channel` (`webhook`, `email`) by `outcome`
    /// (`delivered`, `pending`: to be retried, `failed`: given up, `disabled`).
    pub fn alert_delivery(&self, channel: &'static str, outcome: &'static str) {
        self.describe_alerts();
        let labels = vec![
            Label::new("channel", channel),
            Label::new("outcome", outcome),
        ];
        let key = Key::from_parts(DELIVERIES, labels);
        self.recorder.register_counter(&key, &METADATA).increment(1);
    }

    /// Records the last evaluation round: how long it took and how many tenants it read.
    pub fn alert_evaluation(&self, seconds: f64, tenants: usize) {
        self.describe_alerts();
        self.recorder
            .register_gauge(&Key::from_static_name(EVALUATION_SECONDS), &METADATA)
            .set(seconds);
        self.recorder
            .register_gauge(&Key::from_static_name(EVALUATED_TENANTS), &METADATA)
            .set(tenants as f64);
    }

    fn describe_alerts(&self) {
        for (name, help) in [
            (FIRED, "Quota alerts recorded, by webhook type."),
            (
                DELIVERIES,
                "Alert delivery attempts by channel and outcome (delivered, pending: to be \
                 retried, failed: given up, disabled: endpoint gone or channel removed).",
            ),
        ] {
            self.recorder
                .describe_counter(name.into(), None, SharedString::const_str(help));
        }
        self.recorder.describe_gauge(
            EVALUATION_SECONDS.into(),
            None,
            SharedString::const_str("How long the last alert evaluation round took."),
        );
        self.recorder.describe_gauge(
            EVALUATED_TENANTS.into(),
            None,
            SharedString::const_str(
                "Tenants with a quota read by the last alert evaluation round.",
            ),
        );
    }
}
