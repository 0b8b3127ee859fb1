//! The quota alerts' outbox ([`AlertStore`]): the decisions (`alert_events`, one per tenant,
//! period, kind and threshold), the messages to send for them (`alert_deliveries`, written in
//! the same transaction), every delivery attempt (`alert_attempts`) and the webhook endpoints
//! disabled by a `410 Gone` (`alert_webhooks_disabled`). Migration `0007_alerts`.
//!
//! Times are Unix seconds, except delivery times (`next_attempt_at`, an attempt's `at`): Unix
//! milliseconds.

use std::future::Future;

/// What an alert is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AlertKind {
    /// A percentage of the monthly quota was reached (`quota.threshold_reached`).
    ThresholdReached,
    /// The period ends within a day (`quota.period_ending`).
    PeriodEnding,
}

impl AlertKind {
    /// The stored text (`threshold_reached`, `period_ending`).
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::ThresholdReached => "threshold_reached",
            AlertKind::PeriodEnding => "period_ending",
        }
    }

    /// The webhook's `type` (`quota.threshold_reached`, `quota.period_ending`).
    pub fn event_type(self) -> &'static str {
        match self {
            AlertKind::ThresholdReached => "quota.threshold_reached",
            AlertKind::PeriodEnding => "quota.period_ending",
        }
    }

    /// Parses the stored text.
    pub fn parse(text: &str) -> Result<AlertKind, sqlx::Error> {
        match text {
            "threshold_reached" => Ok(AlertKind::ThresholdReached),
            "period_ending" => Ok(AlertKind::PeriodEnding),
            other => Err(sqlx::Error::Decode(
                format!("unknown alert kind {other:?}").into(),
            )),
        }
    }
}

/// Where a delivery goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Channel {
    /// A Standard Webhooks POST to the tenant's `webhook_url`.
    Webhook,
    /// An e-mail to the tenant's alert address.
    Email,
}

impl Channel {
    /// The stored text and metric label (`webhook`, `email`).
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Webhook => "webhook",
            Channel::Email => "email",
        }
    }

    /// Parses the stored text.
    pub fn parse(text: &str) -> Result<Channel, sqlx::Error> {
        match text {
            "webhook" => Ok(Channel::Webhook),
            "email" => Ok(Channel::Email),
            other => Err(sqlx::Error::Decode(
                format!("unknown alert channel {other:?}").into(),
            )),
        }
    }
}

/// An alert decided, with its deliveries, to record ([`AlertStore::record`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewAlert {
    /// Its id (`evt_…`, derived from the unique key).
    pub id: String,
    /// The tenant.
    pub tenant: String,
    /// The period's start (Unix seconds).
    pub period_start: u64,
    /// The period's end (excluded).
    pub period_end: u64,
    /// What it is about.
    pub kind: AlertKind,
    /// The percentage (0 for [`AlertKind::PeriodEnding`]).
    pub threshold: u32,
    /// Requests of the period when decided.
    pub used: u64,
    /// The monthly quota.
    pub quota: u64,
    /// The webhook body (JSON), sent as is by every attempt.
    pub payload: String,
    /// The messages to send.
    pub deliveries: Vec<NewDelivery>,
}

/// One message of a [`NewAlert`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewDelivery {
    /// Its id (`msg_…`): the `webhook-id`, or the e-mail's Message-ID.
    pub id: String,
    /// Webhook or e-mail.
    pub channel: Channel,
    /// The URL or address when decided.
    pub target: String,
}

/// What [`AlertStore::record`] wrote (alerts recorded before are skipped).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recorded {
    /// The ids of the new alerts.
    pub ids: Vec<String>,
    /// Their deliveries.
    pub deliveries: u64,
}

/// The unique key of a recorded alert: tenant, period start, kind, threshold.
pub type FiredKey = (String, u64, AlertKind, u32);

/// A delivery due, with what sending it needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DueDelivery {
    /// Its id (`msg_…`).
    pub id: String,
    /// Its alert.
    pub event_id: String,
    /// The tenant.
    pub tenant: String,
    /// Webhook or e-mail.
    pub channel: Channel,
    /// The URL or address when decided.
    pub target: String,
    /// Attempts so far.
    pub attempts: u32,
    /// When it is due (Unix ms): what [`AlertStore::claim`] expects.
    pub next_attempt_at: u64,
    /// The alert's kind.
    pub kind: AlertKind,
    /// The webhook body.
    pub payload: String,
    /// The tenant's webhook URL now (`None`: removed, or no such tenant).
    pub webhook_url: Option<String>,
    /// The tenant's webhook secret now.
    pub webhook_secret: Option<String>,
    /// The tenant's alert e-mail now.
    pub email: Option<String>,
    /// Whether the tenant's current webhook URL is disabled (a 410 since its settings were
    /// last written).
    pub webhook_disabled: bool,
}

/// One attempt to send a delivery.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Attempt {
    /// The delivery.
    pub delivery_id: String,
    /// 1 for the first.
    pub attempt: u32,
    /// When it started (Unix ms).
    pub at: u64,
    /// The HTTP status or SMTP reply code; `None`: no answer.
    pub status: Option<u32>,
    /// What went wrong, if anything.
    pub error: Option<String>,
    /// How long it took.
    pub duration_ms: u64,
}

/// What becomes of a delivery after an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Sent.
    Delivered,
    /// Try again at this time (Unix ms).
    Retry(u64),
    /// Given up: out of retries, or refused for good.
    Failed,
    /// The endpoint is gone (410) or the tenant has no such channel any more.
    Disabled,
}

impl Outcome {
    /// The stored status and metric label.
    pub fn status(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Retry(_) => "pending",
            Outcome::Failed => "failed",
            Outcome::Disabled => "disabled",
        }
    }
}

/// A delivery as stored (for listings and tests).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DeliveryRecord {
    /// Its id.
    pub id: String,
    /// Its alert.
    pub event_id: String,
    /// The tenant.
    pub tenant: String,
    /// `webhook` or `email`.
    pub channel: String,
    /// The URL or address when decided.
    pub target: String,
    /// `pending`, `delivered`, `failed`, `disabled`.
    pub status: String,
    /// Attempts so far.
    pub attempts: u32,
    /// Next attempt (Unix ms), when pending.
    pub next_attempt_at: u64,
    /// The last attempt's error.
    pub last_error: Option<String>,
}

/// The alerts' tables.
pub trait AlertStore: Send + Sync + 'static {
    /// The keys of the alerts recorded for periods starting at or after `period_start`.
    fn fired_since(
        &self,
        period_start: u64,
    ) -> impl Future<Output = Result<Vec<FiredKey>, sqlx::Error>> + Send;

    /// Records `alerts` and their deliveries (due at `now_ms`) in one transaction; an alert
    /// whose key is recorded already is skipped with its deliveries (another sidecar decided
    /// it first).
    fn record(
        &self,
        alerts: &[NewAlert],
        now: u64,
        now_ms: u64,
    ) -> impl Future<Output = Result<Recorded, sqlx::Error>> + Send;

    /// Up to `limit` pending deliveries due at `now_ms`, oldest first.
    fn due(
        &self,
        now_ms: u64,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<DueDelivery>, sqlx::Error>> + Send;

    /// Takes delivery `id` for an attempt, moving its next attempt to `lease_until` (Unix ms):
    /// `false` when another worker took it first (its `next_attempt_at` is no longer
    /// `expected`) or it is no longer pending.
    fn claim(
        &self,
        id: &str,
        expected: u64,
        lease_until: u64,
    ) -> impl Future<Output = Result<bool, sqlx::Error>> + Send;

    /// Records `attempt` and what becomes of its delivery, in one transaction.
    fn finish(
        &self,
        attempt: &Attempt,
        outcome: Outcome,
        now: u64,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;

    /// Disables `tenant`'s webhook endpoint `url` at `now` (Unix seconds); its pending webhook
    /// deliveries become `disabled`. Returns how many.
    fn disable_webhook(
        &self,
        tenant: &str,
        url: &str,
        now: u64,
        reason: &str,
    ) -> impl Future<Output = Result<u64, sqlx::Error>> + Send;

    /// `(tenant, url)` of every disabled endpoint still disabled (the tenant's settings not
    /// written since).
    fn disabled_webhooks(
        &self,
    ) -> impl Future<Output = Result<Vec<(String, String)>, sqlx::Error>> + Send;

    /// `tenant`'s deliveries, oldest first.
    fn deliveries(
        &self,
        tenant: &str,
    ) -> impl Future<Output = Result<Vec<DeliveryRecord>, sqlx::Error>> + Send;

    /// The attempts of delivery `id`, first first.
    fn attempts(&self, id: &str) -> impl Future<Output = Result<Vec<Attempt>, sqlx::Error>> + Send;
}

/// Alerts written by one multi-row statement (10 parameters each: far below either
/// database's limit).
pub(crate) const RECORD_CHUNK: usize = 500;

pub(crate) mod statements;
