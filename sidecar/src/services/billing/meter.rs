//! The meter event sender: drains the outbox (`billing_meter_events`) into
//! `POST /v1/billing/meter_events`.
//!
//! A pass claims due rows (a lease keeps other senders off them), sorts out the ones that
//! cannot be sent yet — the tenant has no `stripe_customer_id` (`no_customer`), no meter event
//! name (`no_meter`): they wait, nothing is lost, and are looked at again each minute and at
//! every `billing report` — then groups the rest by (customer, meter) and serves the groups
//! a few at a time, each one call at a time as Stripe asks, all under one global pace.
//!
//! Per answer: 2xx → `sent`; 400 "an event already exists with identifier" → `sent` (an
//! earlier attempt got through); 429, 5xx, 409, a timeout or a dropped connection (or
//! `Stripe-Should-Retry: true`) → `pending` again after an exponential backoff with jitter, at
//! least Stripe's `Retry-After`, and the rest of that group waits as long; any other 4xx →
//! `dead` with Stripe's error kept, counted and logged. A row whose usage is older than
//! Stripe's 35 days is dead before it is sent; unsent usage older than 30 days shows in
//! `tollgate_billing_meter_events_stale` first.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{StreamExt, stream};
use metrics::{Counter, Gauge};

use super::{Pace, STALE_AFTER_DAYS, STRIPE_MAX_AGE_DAYS, SendSettings, backoff};
use crate::Clock;
use crate::metrics::Metrics;
use crate::storage::sql::billing::{BillingStore, MeterRow, Settled};
use crate::stripe::{Answer, MeterEvent, StripeClient, already_exists};

const EVENTS: &str = "tollgate_billing_meter_events_total";
const EVENTS_HELP: &str = "Meter event attempts by outcome: sent, duplicate (Stripe already had \
     the identifier: delivered), retried (429/5xx/timeout), dead (refused for good), waiting \
     (no customer id or meter name).";
const STALE: &str = "tollgate_billing_meter_events_stale";
const DEAD: &str = "tollgate_billing_meter_events_dead";
const WAITING: &str = "tollgate_billing_meter_events_waiting";
const DAY: i64 = 86_400;

/// How long waiting rows (no customer, no meter) rest between two looks.
const WAITING_RECHECK: Duration = Duration::from_secs(60);

/// The sender's metrics.
#[derive(Clone)]
pub struct MeterMetrics {
    sent: Counter,
    duplicate: Counter,
    retried: Counter,
    dead: Counter,
    waiting: Counter,
    stale_rows: Gauge,
    dead_rows: Gauge,
    waiting_rows: Gauge,
}

impl MeterMetrics {
    /// Registered in `metrics`.
    pub fn new(metrics: &Metrics) -> Self {
        let outcome = |value| metrics.own_labeled_counter(EVENTS, EVENTS_HELP, "outcome", value);
        MeterMetrics {
            sent: outcome("sent"),
            duplicate: outcome("duplicate"),
            retried: outcome("retried"),
            dead: outcome("dead"),
            waiting: outcome("waiting"),
            stale_rows: metrics.own_gauge(
                STALE,
                "ALERT when > 0: unsent meter events of usage older than 30 days (Stripe \
                 refuses them after 35).",
            ),
            dead_rows: metrics.own_gauge(
                DEAD,
                "Meter events Stripe refused for good (dead-lettered, error kept in the outbox).",
            ),
            waiting_rows: metrics.own_gauge(
                WAITING,
                "Meter events waiting for a tenant's stripe_customer_id or a meter event name.",
            ),
        }
    }
}

/// What the sender did (one pass, or a whole drain).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SendReport {
    /// Rows claimed.
    pub claimed: u64,
    /// Accepted by Stripe now.
    pub sent: u64,
    /// Refused as an existing identifier: delivered before.
    pub already_delivered: u64,
    /// Attempts to be retried later.
    pub retried: u64,
    /// Dead-lettered now.
    pub dead_lettered: u64,
    /// Rows found waiting (no customer id, no meter name).
    pub waiting: u64,
}

impl SendReport {
    fn add(&mut self, other: SendReport) {
        self.claimed += other.claimed;
        self.sent += other.sent;
        self.already_delivered += other.already_delivered;
        self.retried += other.retried;
        self.dead_lettered += other.dead_lettered;
        self.waiting += other.waiting;
    }
}

/// The sender: outbox, Stripe, pace, settings.
pub struct MeterSender<B> {
    store: Arc<B>,
    client: StripeClient,
    pace: Pace,
    settings: SendSettings,
    metrics: MeterMetrics,
    clock: Clock,
}

fn millis(clock: Clock) -> i64 {
    i64::try_from(clock() / 1_000_000).unwrap_or(i64::MAX)
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl<B: BillingStore> MeterSender<B> {
    /// A sender of `store`'s outbox to `client`.
    pub fn new(
        store: Arc<B>,
        client: StripeClient,
        settings: SendSettings,
        metrics: MeterMetrics,
        clock: Clock,
    ) -> Self {
        MeterSender {
            pace: Pace::new(settings.rate_per_second),
            store,
            client,
            settings,
            metrics,
            clock,
        }
    }

    /// One pass over the due rows (see the module docs); `recheck_waiting`: also the waiting
    /// rows whose next look is not due yet.
    pub async fn pass(&self, recheck_waiting: bool) -> Result<SendReport, sqlx::Error> {
        let now = millis(self.clock);
        let rows = self
            .store
            .claim_meter_events(
                now,
                now + duration_ms(self.settings.lease),
                self.settings.batch,
                recheck_waiting,
            )
            .await?;
        let mut report = SendReport {
            claimed: rows.len() as u64,
            ..SendReport::default()
        };
        let mut settled = Vec::new();
        let mut groups: BTreeMap<(String, String), Vec<MeterRow>> = BTreeMap::new();
        let oldest = now / 1_000 - STRIPE_MAX_AGE_DAYS * DAY;
        for row in rows {
            let waiting = if row.event_name.is_empty() {
                Some((
                    "no_meter",
                    format!(
                        "the plan of tenant {:?} has no meter_event_name",
                        row.tenant
                    ),
                ))
            } else if row.customer.is_none() {
                Some((
                    "no_customer",
                    format!(
                        "tenant {:?} has no stripe_customer_id (set it: PUT /v1/admin/tenants/{{id}})",
                        row.tenant
                    ),
                ))
            } else {
                None
            };
            if let Some((status, error)) = waiting {
                report.waiting += 1;
                self.metrics.waiting.increment(1);
                settled.push(Settled {
                    id: row.id,
                    status,
                    attempted: false,
                    next_attempt_ms: now + duration_ms(WAITING_RECHECK),
                    error: Some(error),
                    sent_at: None,
                    customer: None,
                });
            } else if row.timestamp < oldest {
                let error = format!(
                    "usage of {} is older than Stripe's {STRIPE_MAX_AGE_DAYS} days: not sent",
                    row.date
                );
                settled.push(self.dead(&row, None, error));
                report.dead_lettered += 1;
            } else {
                let key = (
                    row.customer.clone().unwrap_or_default(),
                    row.event_name.clone(),
                );
                groups.entry(key).or_default().push(row);
            }
        }
        let mut sends = stream::iter(groups.into_values())
            .map(|rows| self.send_group(rows))
            .buffer_unordered(self.settings.concurrency.max(1));
        while let Some((one, rows)) = sends.next().await {
            report.add(one);
            settled.extend(rows);
        }
        self.store.settle_meter_events(&settled).await?;
        Ok(report)
    }

    /// One (customer, meter) group, one call at a time; stops at the first retry.
    async fn send_group(&self, rows: Vec<MeterRow>) -> (SendReport, Vec<Settled>) {
        let mut report = SendReport::default();
        let mut settled = Vec::with_capacity(rows.len());
        let mut rows = rows.into_iter();
        while let Some(row) = rows.next() {
            let customer = row.customer.clone().unwrap_or_default();
            self.pace.acquire().await;
            let answer = self
                .client
                .meter_event(&MeterEvent {
                    event_name: &row.event_name,
                    customer: &customer,
                    value: row.value,
                    identifier: &row.identifier,
                    timestamp: row.timestamp,
                })
                .await;
            let now = millis(self.clock);
            let sent = |error: Option<String>| Settled {
                id: row.id,
                status: "sent",
                attempted: true,
                next_attempt_ms: 0,
                error,
                sent_at: Some(now / 1_000),
                customer: Some(customer.clone()),
            };
            match answer {
                Answer::Ok(_) => {
                    report.sent += 1;
                    self.metrics.sent.increment(1);
                    settled.push(sent(None));
                }
                ref refused if already_exists(refused) => {
                    report.already_delivered += 1;
                    self.metrics.duplicate.increment(1);
                    settled.push(sent(Some("already existed at Stripe".into())));
                }
                Answer::Refused { status, error } => {
                    report.dead_lettered += 1;
                    settled.push(self.dead(&row, Some(status), error));
                }
                Answer::Retry {
                    status,
                    error,
                    after,
                } => {
                    report.retried += 1;
                    self.metrics.retried.increment(1);
                    let wait = backoff(self.settings.retry_base, row.attempts, after);
                    let next = now + duration_ms(wait);
                    tracing::warn!(
                        identifier = %row.identifier, tenant = %row.tenant, status = ?status,
                        %error, retry_in_ms = duration_ms(wait), "meter event to be retried"
                    );
                    let error = format!(
                        "{}: {error}",
                        status.map_or("no answer".into(), |s| s.to_string())
                    );
                    settled.push(Settled {
                        id: row.id,
                        status: "pending",
                        attempted: true,
                        next_attempt_ms: next,
                        error: Some(error),
                        sent_at: None,
                        customer: None,
                    });
                    // The rest of this customer's events wait as long (one call at a time).
                    settled.extend(rows.by_ref().map(|rest| Settled {
                        id: rest.id,
                        status: "pending",
                        attempted: false,
                        next_attempt_ms: next,
                        error: None,
                        sent_at: None,
                        customer: None,
                    }));
                }
            }
        }
        (report, settled)
    }

    fn dead(&self, row: &MeterRow, status: Option<u16>, error: String) -> Settled {
        self.metrics.dead.increment(1);
        tracing::error!(
            identifier = %row.identifier, tenant = %row.tenant, date = %row.date,
            value = row.value, status = ?status, %error,
            "meter event dead-lettered: Stripe refused it for good"
        );
        Settled {
            id: row.id,
            status: "dead",
            attempted: status.is_some(),
            next_attempt_ms: 0,
            error: Some(match status {
                Some(status) => format!("{status}: {error}"),
                None => error,
            }),
            sent_at: None,
            customer: row.customer.clone(),
        }
    }

    /// Passes until nothing is due, waiting for retries, for at most `limit`: everything
    /// pending sent now (`billing report`). Waiting rows are looked at once, at the start.
    pub async fn drain(&self, limit: Duration) -> Result<SendReport, sqlx::Error> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut report = self.pass(true).await?;
        loop {
            let one = self.pass(false).await?;
            let claimed = one.claimed;
            report.add(one);
            if claimed > 0 {
                continue;
            }
            let Some(next) = self.store.next_attempt_ms().await? else {
                break;
            };
            let wait = Duration::from_millis(u64::try_from(next - millis(self.clock)).unwrap_or(0));
            let wake = tokio::time::Instant::now() + wait.max(Duration::from_millis(10));
            if wake > deadline {
                break;
            }
            tokio::time::sleep_until(wake).await;
        }
        Ok(report)
    }

    /// Updates the outbox gauges (stale, dead, waiting).
    pub async fn watch(&self) -> Result<(), sqlx::Error> {
        let now = millis(self.clock) / 1_000;
        let stale = self
            .store
            .unsent_older_than(now - STALE_AFTER_DAYS * DAY)
            .await?;
        if stale > 0 {
            tracing::error!(
                rows = stale,
                "meter events of usage older than {STALE_AFTER_DAYS} days are still unsent: \
                 Stripe refuses them after {STRIPE_MAX_AGE_DAYS} days"
            );
        }
        let counts = self.store.outbox_counts().await?;
        self.metrics.stale_rows.set(stale as f64);
        self.metrics.dead_rows.set(counts.dead as f64);
        self.metrics
            .waiting_rows
            .set((counts.no_customer + counts.no_meter) as f64);
        Ok(())
    }
}
