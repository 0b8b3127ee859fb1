//! The delivery worker: sends the outbox's due deliveries, records every attempt, and decides
//! what comes next.
//!
//! - A webhook answered `2xx` is delivered; `410 Gone` disables the tenant's endpoint (until
//!   its settings are written again) with every pending webhook of the tenant; anything else
//!   (another status, a redirect, no answer within the timeout) is retried.
//! - An e-mail accepted by the SMTP server is delivered; a permanent refusal (5xx, a bad
//!   address) fails at once; anything else is retried.
//! - Retries follow the schedule (default 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 14 h after each
//!   failed attempt: eight attempts over about 32 hours), each wait up to 10 % longer at
//!   random, and at least the `Retry-After` a webhook answered (at most a day); after the last
//!   one the delivery fails for good.
//! - Each due delivery is claimed first (its next attempt moved a lease ahead), so sidecars
//!   sharing a database do not send it twice at once; a worker that dies mid-send leaves it
//!   to be retried after the lease, under the same id.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;

use super::Outbox;
use super::email::Mailer;
use super::webhook::WebhookClient;
use crate::metrics::Metrics;
use crate::storage::sql::alerts::{AlertStore, Attempt, Channel, DueDelivery, Outcome};

/// Deliveries read at once.
const BATCH: u32 = 100;
/// Deliveries sent at once.
const CONCURRENCY: usize = 8;
/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER_MS: u64 = 86_400_000;

/// What one pass sent.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Delivered {
    /// Sent.
    pub delivered: u64,
    /// Failed, to be retried.
    pub retrying: u64,
    /// Given up for good.
    pub failed: u64,
    /// The endpoint is gone (410) or the channel was removed.
    pub disabled: u64,
}

/// Sends the outbox.
pub struct Deliverer<D> {
    /// The outbox's tables (and the tenants').
    pub store: Arc<D>,
    /// Webhooks.
    pub webhooks: WebhookClient,
    /// E-mail; `None` without `TOLLGATE_SMTP_URL`.
    pub mailer: Option<Mailer>,
    /// The waits after each failed attempt.
    pub schedule: Vec<Duration>,
    /// How long a claimed delivery is left alone before another worker may retry it.
    pub lease: Duration,
    /// Counted into.
    pub metrics: Arc<Metrics>,
    /// Shared with the evaluator.
    pub outbox: Outbox,
    /// Unix ms now.
    pub clock_ms: fn() -> u64,
}

impl<D: AlertStore> Deliverer<D> {
    /// Waits until a round recorded alerts, or `at_most`.
    pub async fn wait(&self, at_most: Duration) {
        let _ = tokio::time::timeout(at_most, self.outbox.wake.notified()).await;
    }

    /// Sends every delivery due now (each once), and returns what became of them.
    pub async fn deliver_due(&self) -> Result<Delivered, sqlx::Error> {
        let mut report = Delivered::default();
        let now = (self.clock_ms)();
        loop {
            let due = {
                let _gate = self.outbox.gate.lock().await;
                self.store.due(now, BATCH).await?
            };
            let count = due.len();
            let outcomes: Vec<Result<Option<(Channel, Outcome)>, sqlx::Error>> =
                futures_util::stream::iter(due)
                    .map(|delivery| self.attempt(delivery))
                    .buffer_unordered(CONCURRENCY)
                    .collect()
                    .await;
            for outcome in outcomes {
                let Some((channel, outcome)) = outcome? else {
                    continue;
                };
                self.metrics
                    .alert_delivery(channel.as_str(), outcome.status());
                match outcome {
                    Outcome::Delivered => report.delivered += 1,
                    Outcome::Retry(_) => report.retrying += 1,
                    Outcome::Failed => report.failed += 1,
                    Outcome::Disabled => report.disabled += 1,
                }
            }
            if count < BATCH as usize {
                return Ok(report);
            }
        }
    }

    /// One attempt at `delivery`; `None` when another worker claimed it first.
    async fn attempt(
        &self,
        delivery: DueDelivery,
    ) -> Result<Option<(Channel, Outcome)>, sqlx::Error> {
        let at = (self.clock_ms)();
        let lease = at.saturating_add(millis(self.lease));
        if !self
            .store
            .claim(&delivery.id, delivery.next_attempt_at, lease)
            .await?
        {
            return Ok(None);
        }
        let started = Instant::now();
        let (status, error, next) = match delivery.channel {
            Channel::Webhook => self.webhook(&delivery, at).await?,
            Channel::Email => self.email(&delivery).await,
        };
        let attempt = Attempt {
            delivery_id: delivery.id.clone(),
            attempt: delivery.attempts + 1,
            at,
            status,
            error,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        };
        let outcome = match next {
            Next::Done => Outcome::Delivered,
            Next::Disabled => Outcome::Disabled,
            Next::GiveUp => Outcome::Failed,
            Next::Retry(at_least_ms) => match self.schedule.get(delivery.attempts as usize) {
                Some(wait) => {
                    let wait = jittered(millis(*wait)).max(at_least_ms.min(MAX_RETRY_AFTER_MS));
                    Outcome::Retry((self.clock_ms)().saturating_add(wait))
                }
                None => Outcome::Failed,
            },
        };
        match &outcome {
            Outcome::Delivered => {}
            other => tracing::warn!(
                delivery = %delivery.id, tenant = %delivery.tenant,
                channel = delivery.channel.as_str(), attempt = attempt.attempt,
                status = ?attempt.status, error = attempt.error.as_deref().unwrap_or(""),
                outcome = other.status(), "alert delivery attempt failed"
            ),
        }
        self.store.finish(&attempt, outcome, at / 1_000).await?;
        Ok(Some((delivery.channel, outcome)))
    }

    async fn webhook(
        &self,
        delivery: &DueDelivery,
        at: u64,
    ) -> Result<(Option<u32>, Option<String>, Next), sqlx::Error> {
        let (Some(url), Some(secret)) = (&delivery.webhook_url, &delivery.webhook_secret) else {
            let why = "the tenant has no webhook any more".to_owned();
            return Ok((None, Some(why), Next::Disabled));
        };
        if delivery.webhook_disabled {
            let why = "the endpoint is disabled (it answered 410 Gone)".to_owned();
            return Ok((None, Some(why), Next::Disabled));
        }
        let answer = self
            .webhooks
            .post(url, &delivery.id, at / 1_000, secret, &delivery.payload)
            .await;
        let status = answer.status.map(u32::from);
        let next = match answer.status {
            Some(200..=299) => Next::Done,
            Some(410) => {
                let reason = "the endpoint answered 410 Gone";
                let disabled = self
                    .store
                    .disable_webhook(&delivery.tenant, url, at / 1_000, reason)
                    .await?;
                tracing::warn!(
                    tenant = %delivery.tenant, pending = disabled,
                    "webhook endpoint answered 410 Gone: disabled until the tenant's settings are written again"
                );
                Next::Disabled
            }
            _ => Next::Retry(answer.retry_after.unwrap_or(0).saturating_mul(1_000)),
        };
        Ok((status, answer.error, next))
    }

    async fn email(&self, delivery: &DueDelivery) -> (Option<u32>, Option<String>, Next) {
        let Some(address) = &delivery.email else {
            let why = "the tenant has no alert e-mail any more".to_owned();
            return (None, Some(why), Next::Disabled);
        };
        let Some(mailer) = &self.mailer else {
            let why = "TOLLGATE_SMTP_URL is not set".to_owned();
            return (None, Some(why), Next::Retry(0));
        };
        let payload = serde_json::from_str(&delivery.payload).unwrap_or_default();
        match mailer
            .send(address, &delivery.id, delivery.kind, &payload)
            .await
        {
            Ok(code) => (Some(u32::from(code)), None, Next::Done),
            Err(error) => {
                let next = if error.permanent {
                    Next::GiveUp
                } else {
                    Next::Retry(0)
                };
                (error.code.map(u32::from), Some(error.message), next)
            }
        }
    }
}

enum Next {
    Done,
    Disabled,
    GiveUp,
    /// Retry, waiting at least this long (ms).
    Retry(u64),
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// `ms` and up to 10 % more, at random.
fn jittered(ms: u64) -> u64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        return ms;
    }
    let extra = ms / 10;
    if extra == 0 {
        return ms;
    }
    ms.saturating_add(u64::from_le_bytes(bytes) % extra)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn jitter_adds_at_most_a_tenth() {
        for _ in 0..100 {
            let j = jittered(10_000);
            assert!((10_000..11_000).contains(&j), "{j}");
        }
    }
}
