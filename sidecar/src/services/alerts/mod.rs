//! Quota alerts: which are due ([`decide`], pure), recording them with their deliveries in
//! one transaction (the outbox, [`Evaluator::evaluate`]), and sending them ([`deliver`]) by
//! webhook ([`webhook`]) and e-mail ([`email`]).
//!
//! A round of evaluation reads every tenant whose plan has a `monthly_quota`, its current
//! period ([`period`](crate::services::registry::period)), the period's requests for all of
//! them at once ([`UsageQueries::period_requests`]) and the alerts already recorded for those
//! periods; what is due and not recorded is written, each alert with a webhook delivery (when
//! the tenant has a webhook and its endpoint is not disabled) and an e-mail delivery (when it
//! has an alert address and SMTP is configured). Ids are derived from the alert's unique key,
//! so the same alert always has the same `webhook-id`.

pub mod decide;
pub mod deliver;
pub mod email;
pub mod history;
pub mod time;
pub mod webhook;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, Notify};

use self::decide::{Due, Quota, Situation, decide};
use crate::metrics::Metrics;
use crate::services::registry::period::period;
use crate::storage::sql::alerts::{AlertKind, AlertStore, Channel, NewAlert, NewDelivery};
use crate::storage::sql::registry::{RegistryStore, TenantRecord};
use crate::storage::sql::{TenantRange, UsageQueries};

/// Tenants read from the registry at once.
const PAGE: u32 = 5_000;
/// Alerts recorded per transaction.
const RECORD_BATCH: usize = 5_000;
const DAY: u64 = 86_400;

/// What one evaluation round did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Evaluation {
    /// Tenants with a quota, evaluated.
    pub tenants: usize,
    /// Alerts recorded now.
    pub fired: usize,
    /// Their deliveries.
    pub deliveries: u64,
}

/// Shared by the evaluator and the delivery worker: the worker does not read the outbox while
/// a round records into it (so a test hook can stop the process between the two), and is
/// woken when a round recorded something.
#[derive(Clone, Default)]
pub struct Outbox {
    gate: Arc<Mutex<()>>,
    wake: Arc<Notify>,
}

/// Evaluates the alerts over a store (registry and outbox) and the usage.
pub struct Evaluator<D, Q> {
    /// The registry and the outbox.
    pub store: Arc<D>,
    /// The usage (flushed, or flushed and live).
    pub usage: Arc<Q>,
    /// Counted into.
    pub metrics: Arc<Metrics>,
    /// Whether e-mail deliveries are made (SMTP configured).
    pub email: bool,
    /// Shared with the delivery worker.
    pub outbox: Outbox,
    /// Test hook: sleep this long after recording alerts, before the worker may see them.
    pub pause_after_decision: Option<Duration>,
}

impl<D: RegistryStore + AlertStore, Q: UsageQueries> Evaluator<D, Q> {
    /// One round as of `now` (Unix seconds); deliveries become due at `due_ms` (Unix ms, the
    /// real clock: `alerts run --now` moves the evaluation, not the sending).
    pub async fn evaluate(&self, now: u64, due_ms: u64) -> Result<Evaluation, sqlx::Error> {
        let started = Instant::now();
        let quotas = self.quotas().await?;
        let tenants = self.tenants(&quotas).await?;
        let periods: Vec<(u64, u64)> = tenants
            .iter()
            .map(|t| period(t.billing_anchor_day, now))
            .collect();
        let earliest = periods.iter().map(|p| p.0).min().unwrap_or(now);
        let mut fired: HashMap<String, HashSet<(u64, AlertKind, u32)>> = HashMap::new();
        for (tenant, start, kind, threshold) in self.store.fired_since(earliest).await? {
            fired
                .entry(tenant)
                .or_default()
                .insert((start, kind, threshold));
        }
        let ranges: Vec<TenantRange> = tenants
            .iter()
            .zip(&periods)
            .map(|(t, &(start, end))| TenantRange {
                tenant: t.id.clone(),
                from: day(start),
                to: day(end.saturating_sub(DAY)),
            })
            .collect();
        let used = self.usage.period_requests(&ranges).await?;
        let disabled: HashSet<(String, String)> =
            self.store.disabled_webhooks().await?.into_iter().collect();
        let none = HashSet::new();
        let mut alerts = Vec::new();
        for (tenant, &(start, end)) in tenants.iter().zip(&periods) {
            let Some(quota) = quotas.get(&tenant.plan) else {
                continue;
            };
            let done = fired.get(&tenant.id).unwrap_or(&none);
            let situation = Situation {
                tenant: &tenant.id,
                thresholds: &tenant.alerts.thresholds,
                quota,
                period: (start, end),
                used: used.get(&tenant.id).copied().unwrap_or(0),
                now,
            };
            for due in decide(&situation, |kind, t| done.contains(&(start, kind, t))) {
                alerts.push(self.alert(tenant, &situation, due, &disabled));
            }
        }
        let mut evaluation = Evaluation {
            tenants: tenants.len(),
            ..Evaluation::default()
        };
        if !alerts.is_empty() {
            let _gate = self.outbox.gate.lock().await;
            let kinds: HashMap<&str, AlertKind> =
                alerts.iter().map(|a| (a.id.as_str(), a.kind)).collect();
            for batch in alerts.chunks(RECORD_BATCH) {
                let recorded = self.store.record(batch, now, due_ms).await?;
                for id in &recorded.ids {
                    if let Some(kind) = kinds.get(id.as_str()) {
                        self.metrics.alert_fired(kind.event_type());
                    }
                }
                evaluation.fired += recorded.ids.len();
                evaluation.deliveries += recorded.deliveries;
            }
            if let (Some(pause), true) = (self.pause_after_decision, evaluation.fired > 0) {
                tracing::warn!(
                    alerts = evaluation.fired,
                    "test hook: alert decisions committed; pausing before delivery for {pause:?}"
                );
                tokio::time::sleep(pause).await;
            }
        }
        if evaluation.fired > 0 {
            self.outbox.wake.notify_one();
        }
        self.metrics
            .alert_evaluation(started.elapsed().as_secs_f64(), tenants.len());
        Ok(evaluation)
    }

    /// Plans with a monthly quota, by name.
    async fn quotas(&self) -> Result<HashMap<String, Quota>, sqlx::Error> {
        Ok(self
            .store
            .plans()
            .await?
            .into_iter()
            .filter_map(|plan| {
                let quota = plan.monthly_quota?;
                Some((
                    plan.name.clone(),
                    Quota {
                        plan: plan.name,
                        quota,
                        overage: plan.overage,
                        price: plan.overage_price,
                    },
                ))
            })
            .collect())
    }

    /// Every tenant on a plan of `quotas`.
    async fn tenants(
        &self,
        quotas: &HashMap<String, Quota>,
    ) -> Result<Vec<TenantRecord>, sqlx::Error> {
        let mut tenants = Vec::new();
        let mut after = String::new();
        loop {
            let page = self.store.tenants("", &after, PAGE).await?;
            let full = page.len() == PAGE as usize;
            if let Some(last) = page.last() {
                after.clone_from(&last.id);
            }
            tenants.extend(page.into_iter().filter(|t| quotas.contains_key(&t.plan)));
            if !full {
                return Ok(tenants);
            }
        }
    }

    fn alert(
        &self,
        tenant: &TenantRecord,
        situation: &Situation<'_>,
        due: Due,
        disabled: &HashSet<(String, String)>,
    ) -> NewAlert {
        let (start, end) = situation.period;
        let id = alert_id(&tenant.id, start, due.kind, due.threshold);
        let payload = json!({
            "type": due.kind.event_type(),
            "timestamp": time::rfc3339(situation.now),
            "data": due.data,
        })
        .to_string();
        let mut deliveries = Vec::new();
        if let (Some(url), Some(_)) = (&tenant.alerts.webhook_url, &tenant.webhook_secret)
            && !disabled.contains(&(tenant.id.clone(), url.clone()))
        {
            deliveries.push(NewDelivery {
                id: delivery_id(&id, Channel::Webhook),
                channel: Channel::Webhook,
                target: url.clone(),
            });
        }
        if let (Some(address), true) = (&tenant.alerts.email, self.email) {
            deliveries.push(NewDelivery {
                id: delivery_id(&id, Channel::Email),
                channel: Channel::Email,
                target: address.clone(),
            });
        }
        NewAlert {
            id,
            tenant: tenant.id.clone(),
            period_start: start,
            period_end: end,
            kind: due.kind,
            threshold: due.threshold,
            used: situation.used,
            quota: situation.quota.quota,
            payload,
            deliveries,
        }
    }
}

/// `YYYY-MM-DD` of `secs`.
fn day(secs: u64) -> String {
    tollgate_filter::usage::format_date(i64::try_from(secs / DAY).unwrap_or(i64::MAX))
}

fn hash_hex(text: &str, chars: usize) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()
        .chars()
        .take(chars)
        .collect()
}

/// The id of the alert with this unique key: `evt_` and 32 hex digits of its SHA-256.
pub fn alert_id(tenant: &str, period_start: u64, kind: AlertKind, threshold: u32) -> String {
    let key = format!(
        "tollgate:alert:v1\n{tenant}\n{period_start}\n{}\n{threshold}",
        kind.as_str()
    );
    format!("evt_{}", hash_hex(&key, 32))
}

/// The id of an alert's delivery on `channel` (`msg_…`): the `webhook-id` or Message-ID.
pub fn delivery_id(alert_id: &str, channel: Channel) -> String {
    format!(
        "msg_{}",
        hash_hex(&format!("{alert_id}\n{}", channel.as_str()), 32)
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests;
