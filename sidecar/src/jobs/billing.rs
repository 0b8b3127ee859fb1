//! The billing jobs: `billing_meter`, every `TOLLGATE_BILLING_INTERVAL` sender passes over
//! the meter event outbox ([`MeterSender::pass`]) and the outbox gauges (stale, dead,
//! waiting); `billing_periods`, every `TOLLGATE_BILLING_CLOSE_INTERVAL` the overage invoices
//! of periods that ended ([`close_periods`]). Without `TOLLGATE_STRIPE_API_KEY` nothing is
//! sent: the rows wait.

use std::sync::Arc;
use std::time::Duration;

use super::Jobs;
use crate::Clock;
use crate::metrics::Metrics;
use crate::services::billing::Pace;
use crate::services::billing::SendSettings;
use crate::services::billing::invoices::close_periods;
use crate::services::billing::meter::{MeterMetrics, MeterSender};
use crate::services::billing::reconcile::{ReconcileMetrics, reconcile};
use crate::storage::sql::billing::BillingStore;
use crate::storage::sql::billing::overage::OverageStore;
use crate::storage::sql::billing::reconcile::ReconcileStore;
use crate::storage::sql::registry::RegistryStore;
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

/// Starts the `billing_periods` job: closes the periods that ended, every `interval`.
pub fn start_periods<S: OverageStore + RegistryStore>(
    jobs: &mut Jobs,
    store: Arc<S>,
    client: Option<StripeClient>,
    rate: u32,
    concurrency: usize,
    interval: Duration,
    clock: Clock,
) {
    let Some(client) = client else {
        return;
    };
    let pace = Pace::new(rate);
    jobs.every("billing_periods", interval, move || {
        let (store, client, pace) = (Arc::clone(&store), client.clone(), pace.clone());
        async move {
            let now = i64::try_from(clock() / 1_000_000_000).unwrap_or(i64::MAX);
            let report = close_periods(&*store, &client, &pace, concurrency, now, &None)
                .await
                .map_err(|e| format!("billing periods: {e}"))?;
            for invoice in &report.invoiced {
                tracing::info!(
                    tenant = %invoice.tenant, period_start = invoice.period_start,
                    amount = invoice.amount, currency = %invoice.currency,
                    invoice = invoice.invoice_id.as_deref().unwrap_or("-"),
                    "overage invoiced"
                );
            }
            for problem in &report.problems {
                tracing::warn!(%problem, "billing periods");
            }
            Ok(())
        }
    });
}

/// Starts the `billing_reconcile` job: reconciles yesterday (UTC) every `interval` (the same
/// discrepancy is corrected once, however often it runs; the corrections go out with the
/// meter events).
pub fn start_reconcile<S: ReconcileStore + OverageStore>(
    jobs: &mut Jobs,
    store: Arc<S>,
    client: Option<StripeClient>,
    interval: Duration,
    settle: Duration,
    metrics: &Metrics,
    clock: Clock,
) {
    let Some(client) = client else {
        return;
    };
    let counters = ReconcileMetrics::new(metrics);
    jobs.every("billing_reconcile", interval, move || {
        let (store, client, counters) = (Arc::clone(&store), client.clone(), counters.clone());
        async move {
            let now = i64::try_from(clock() / 1_000_000_000).unwrap_or(i64::MAX);
            let yesterday = tollgate_filter::usage::format_date(now.div_euclid(86_400) - 1);
            let report = reconcile(&*store, &client, &counters, &yesterday, now, settle).await?;
            for problem in &report.problems {
                tracing::warn!(%problem, "billing reconciliation");
            }
            Ok(())
        }
    });
}
