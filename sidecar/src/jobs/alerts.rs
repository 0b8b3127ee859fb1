//! The quota alert jobs: `alerts_evaluate` ([`Evaluator::evaluate`] every
//! `TOLLGATE_ALERT_INTERVAL`, default 60 s) and `alerts_deliver` (the delivery worker: due
//! deliveries sent every second, at once when a round recorded alerts, and a last time on
//! shutdown). `tollgate-sidecar alerts run` builds the same parts ([`parts`]) and runs each
//! once.

use std::sync::Arc;
use std::time::Duration;

use super::Jobs;
use crate::config::Settings;
use crate::metrics::Metrics;
use crate::services::alerts::deliver::Deliverer;
use crate::services::alerts::email::Mailer;
use crate::services::alerts::webhook::WebhookClient;
use crate::services::alerts::{Evaluator, Outbox};
use crate::storage::sql::UsageQueries;
use crate::storage::sql::alerts::AlertStore;
use crate::storage::sql::registry::RegistryStore;

/// How long a claimed delivery is left to its worker before another may retry it: longer
/// than any attempt (the timeout) can take.
fn lease(settings: &Settings) -> Duration {
    settings.alert_timeout.saturating_mul(2) + Duration::from_secs(30)
}

/// Unix milliseconds now.
pub fn clock_ms() -> u64 {
    crate::system_clock() / 1_000_000
}

/// The evaluator and the delivery worker `settings` ask for, over `store` and `usage`.
pub fn parts<D, Q>(
    settings: &Settings,
    store: Arc<D>,
    usage: Arc<Q>,
    metrics: Arc<Metrics>,
) -> Result<(Evaluator<D, Q>, Deliverer<D>), String>
where
    D: RegistryStore + AlertStore,
    Q: UsageQueries,
{
    let mailer = match &settings.smtp_url {
        Some(url) => Some(Mailer::new(
            url,
            &settings.alert_from,
            settings.alert_timeout,
        )?),
        None => {
            tracing::info!("no TOLLGATE_SMTP_URL: quota alerts go by webhook only, no e-mail");
            None
        }
    };
    let webhooks = WebhookClient::new(settings.alert_timeout)
        .map_err(|e| format!("cannot build the webhook client: {e}"))?;
    let outbox = Outbox::default();
    let evaluator = Evaluator {
        store: Arc::clone(&store),
        usage,
        metrics: Arc::clone(&metrics),
        email: mailer.is_some(),
        outbox: outbox.clone(),
        pause_after_decision: settings.test_alerts_pause_after_decision,
    };
    let deliverer = Deliverer {
        store,
        webhooks,
        mailer,
        schedule: settings.alert_retry_schedule.0.clone(),
        lease: lease(settings),
        metrics,
        outbox,
        clock_ms,
    };
    Ok((evaluator, deliverer))
}

/// Starts `alerts_evaluate` (every `interval`) and `alerts_deliver` on `jobs`.
pub fn start<D, Q>(
    jobs: &mut Jobs,
    evaluator: Evaluator<D, Q>,
    deliverer: Deliverer<D>,
    interval: Duration,
) where
    D: RegistryStore + AlertStore,
    Q: UsageQueries,
{
    let evaluator = Arc::new(evaluator);
    jobs.every("alerts_evaluate", interval, move || {
        let evaluator = Arc::clone(&evaluator);
        async move {
            let now = crate::system_clock() / 1_000_000_000;
            match evaluator.evaluate(now, clock_ms()).await {
                Ok(round) => {
                    if round.fired > 0 {
                        tracing::info!(
                            alerts = round.fired,
                            deliveries = round.deliveries,
                            "quota alerts recorded"
                        );
                    }
                    Ok(())
                }
                Err(error) => Err(format!("alert evaluation failed: {error}")),
            }
        }
    });
    jobs.start("alerts_deliver", move |mut context| async move {
        loop {
            let ok = match deliverer.deliver_due().await {
                Ok(_) => true,
                Err(error) => {
                    tracing::warn!(%error, "alert delivery pass failed; retried");
                    false
                }
            };
            context.health.ran(ok);
            tokio::select! {
                () = deliverer.wait(Duration::from_secs(1)) => {}
                () = context.stopping() => break,
            }
        }
    });
}
