//! The billing job (`billing_meter`): every `TOLLGATE_BILLING_INTERVAL` one sender pass over
//! the meter event outbox ([`MeterSender::pass`]) and the outbox gauges (stale, dead,
//! waiting). Without `TOLLGATE_STRIPE_API_KEY` only the gauges are kept: the rows wait.

use std::sync::Arc;
use std::time::Duration;

use super::Jobs;
use crate::Clock;
use crate::metrics::Metrics;
use crate::services::billing::SendSettings;
use crate::services::billing::meter::{MeterMetrics, MeterSender};
use crate::storage::sql::billing::BillingStore;
use crate::stripe::StripeClient;

/// Starts the billing job on `jobs`; `client` is `Err(reason)` without a usable Stripe key.
pub fn start<B: BillingStore>(
    jobs: &mut Jobs,
    store: Arc<B>,
    client: Result<StripeClient, String>,
    settings: SendSettings,
    interval: Duration,
    metrics: &Metrics,
    clock: Clock,
) {
    let meter_metrics = MeterMetrics::new(metrics);
    let client = match client {
        Ok(client) => Some(client),
        Err(reason) => {
            tracing::warn!(%reason, "billing: meter events are not sent");
            None
        }
    };
    let sender = client.map(|client| {
        Arc::new(MeterSender::new(
            Arc::clone(&store),
            client,
            settings,
            meter_metrics.clone(),
            clock,
        ))
    });
    jobs.every("billing_meter", interval, move || {
        let sender = sender.clone();
        async move {
            let Some(sender) = sender else {
                return Ok(());
            };
            // Passes until nothing is due now (a backlog goes out at the paced rate, not one
            // batch per interval); retries wait for their time.
            loop {
                let report = sender
                    .pass(false)
                    .await
                    .map_err(|e| format!("billing: {e}"))?;
                if report.sent + report.already_delivered + report.dead_lettered > 0 {
                    tracing::info!(
                        sent = report.sent,
                        already_delivered = report.already_delivered,
                        retried = report.retried,
                        dead_lettered = report.dead_lettered,
                        "meter events reported"
                    );
                }
                if report.claimed == 0 || report.claimed == report.waiting + report.retried {
                    break;
                }
            }
            sender.watch().await.map_err(|e| format!("billing: {e}"))
        }
    });
}
