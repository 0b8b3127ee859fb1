//! The registry's tables ([`RegistryStore`]): plans, tenants (with their plan history and
//! quota state), API keys (SHA-256 only) and the change log whose ids are registry versions.
//!
//! Every write runs in one transaction with its `registry_changes` row, so a version names
//! exactly the writes before it. Times are Unix seconds (UTC).

use std::future::Future;

use tollgate_filter::registry::{Overage, TenantStatus};

/// How a plan is billed.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Billing {
    /// Not billed by Tollgate.
    None,
    /// Every request reported to Stripe.
    Metered,
    /// Quota included, overage invoiced at period end.
    Fixed,
}

/// Overage pricing: `amount` (smallest currency unit) per `per` requests.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OveragePrice {
    /// Requests one `amount` buys.
    pub per: u64,
    /// Price in the currency's smallest unit (cents).
    pub amount: u64,
    /// ISO 4217 code, lowercase (`usd`).
    pub currency: String,
}

/// A plan as stored.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct PlanRecord {
    /// Its name.
    pub name: String,
    /// Its rate.
    pub requests_per_minute: u64,
    /// Token-bucket capacity; `None`: the rule's own.
    pub burst: Option<u64>,
    /// Requests included per period; `None`: no quota.
    pub monthly_quota: Option<u64>,
    /// Past the quota: refuse or bill.
    #[schema(value_type = String, example = "block")]
    pub overage: Overage,
    /// The overage's price.
    pub overage_price: Option<OveragePrice>,
    /// How it is billed.
    pub billing: Billing,
    /// The Stripe meter event name.
    pub meter_event_name: String,
}

/// A tenant's alert settings.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Alerts {
    /// Where alerts are posted.
    pub webhook_url: Option<String>,
    /// Where alerts are mailed.
    pub email: Option<String>,
    /// Percentages of the quota that raise an alert.
    pub thresholds: Vec<u32>,
}

/// A tenant as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantRecord {
    /// Its id.
    pub id: String,
    /// Its plan's name.
    pub plan: String,
    /// Its Stripe customer.
    pub stripe_customer_id: Option<String>,
    /// Day of the month (1–28, UTC) its billing periods start.
    pub billing_anchor_day: u32,
    /// Active or suspended.
    pub status: TenantStatus,
    /// Alert settings.
    pub alerts: Alerts,
    /// The webhook's signing secret (`whsec_…`), when it has a webhook.
    pub webhook_secret: Option<String>,
    /// The period the quota state is for (its start).
    pub quota_period_start: u64,
    /// Whether that period's requests reached the quota.
    pub quota_exhausted: bool,
    /// Created.
    pub created_at: u64,
    /// Last written.
    pub updated_at: u64,
}

/// An API key as stored: never the key.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct KeyRecord {
    /// Its public id (`key_…`).
    pub key_id: String,
    /// Lowercase hex SHA-256 of the key.
    #[serde(skip)]
    pub sha256: String,
    /// The key's first characters, to recognise it.
    pub prefix: String,
    /// Its tenant.
    pub tenant: String,
    /// Created.
    pub created_at: u64,
    /// Stops working after this time.
    pub expires_at: Option<u64>,
    /// Revoked at this time.
    pub revoked_at: Option<u64>,
}

/// What changed after a version.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// The registry's version now (0: never written).
    pub version: u64,
    /// The oldest version still in the log (0: empty).
    pub oldest: u64,
    /// `(kind, entity)` changed after the version asked, each once, oldest first.
    pub changed: Vec<(String, String)>,
}

/// Whether a put created or replaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Put {
    /// It did not exist.
    Created,
    /// It existed and was replaced.
    Replaced,
}

/// The registry's tables.
pub trait RegistryStore: Send + Sync + 'static {
    /// Creates or replaces `plan`.
    fn put_plan(
        &self,
        plan: &PlanRecord,
        now: u64,
    ) -> impl Future<Output = Result<Put, sqlx::Error>> + Send;
    /// The plan named `name`.
    fn plan(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<PlanRecord>, sqlx::Error>> + Send;
    /// Every plan, by name.
    fn plans(&self) -> impl Future<Output = Result<Vec<PlanRecord>, sqlx::Error>> + Send;
    /// Creates or replaces `tenant` (its quota state and creation time are kept); a new plan
    /// is recorded in the plan history at `now`. Returns whether it was created, and its
    /// creation time.
    fn put_tenant(
        &self,
        tenant: &TenantRecord,
        now: u64,
    ) -> impl Future<Output = Result<(Put, u64), sqlx::Error>> + Send;
    /// The tenant `id`.
    fn tenant(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<TenantRecord>, sqlx::Error>> + Send;
    /// Up to `limit` tenants whose id starts with `prefix` and sorts after `after`, by id.
    fn tenants(
        &self,
        prefix: &str,
        after: &str,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<TenantRecord>, sqlx::Error>> + Send;
    /// `(plan, since)` of `tenant`, oldest first.
    fn plan_history(
        &self,
        tenant: &str,
    ) -> impl Future<Output = Result<Vec<(String, u64)>, sqlx::Error>> + Send;
    /// Records the quota state of `tenant`; a change bumps the version. Returns whether it
    /// changed.
    fn set_quota_state(
        &self,
        tenant: &str,
        period_start: u64,
        exhausted: bool,
        now: u64,
    ) -> impl Future<Output = Result<bool, sqlx::Error>> + Send;
    /// Stores a new key.
    fn insert_key(
        &self,
        key: &KeyRecord,
        now: u64,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;
    /// The key `key_id`.
    fn key(
        &self,
        key_id: &str,
    ) -> impl Future<Output = Result<Option<KeyRecord>, sqlx::Error>> + Send;
    /// The key whose hash is `sha256`.
    fn key_by_hash(
        &self,
        sha256: &str,
    ) -> impl Future<Output = Result<Option<KeyRecord>, sqlx::Error>> + Send;
    /// `tenant`'s keys, oldest first.
    fn keys(
        &self,
        tenant: &str,
    ) -> impl Future<Output = Result<Vec<KeyRecord>, sqlx::Error>> + Send;
    /// Every key neither revoked nor expired at `now`.
    fn live_keys(
        &self,
        now: u64,
    ) -> impl Future<Output = Result<Vec<KeyRecord>, sqlx::Error>> + Send;
    /// Revokes `key_id` at `now` (`false`: no such key; revoking twice keeps the first time).
    fn revoke_key(
        &self,
        key_id: &str,
        now: u64,
    ) -> impl Future<Output = Result<bool, sqlx::Error>> + Send;
    /// Sets `key_id` to expire at `expires_at` (`false`: no such key).
    fn expire_key(
        &self,
        key_id: &str,
        expires_at: u64,
        now: u64,
    ) -> impl Future<Output = Result<bool, sqlx::Error>> + Send;
    /// What changed after version `since`.
    fn changes(&self, since: u64) -> impl Future<Output = Result<Changes, sqlx::Error>> + Send;
    /// Deletes tenant `id`, its API keys and its plan history (its usage stays), recording a
    /// change for the tenant and one per key (entity `sha256:<hex>`); `false`: no such tenant.
    fn delete_tenant(
        &self,
        id: &str,
        now: u64,
    ) -> impl Future<Output = Result<bool, sqlx::Error>> + Send;
    /// Keeps the newest `keep` changes of the log and deletes the others (a feed asked
    /// `since` an older version answers the whole registry); returns how many went.
    fn prune_changes(&self, keep: u64) -> impl Future<Output = Result<u64, sqlx::Error>> + Send;
    /// Requests of `tenant` flushed for the dates `from` (included) to `to` (excluded),
    /// `YYYY-MM-DD`.
    fn requests_between(
        &self,
        tenant: &str,
        from: &str,
        to: &str,
    ) -> impl Future<Output = Result<u64, sqlx::Error>> + Send;
}

/// `overage`'s stored text.
pub(crate) fn overage_text(overage: Overage) -> &'static str {
    match overage {
        Overage::Block => "block",
        Overage::Bill => "bill",
    }
}

/// `billing`'s stored text.
pub(crate) fn billing_text(billing: Billing) -> &'static str {
    match billing {
        Billing::None => "none",
        Billing::Metered => "metered",
        Billing::Fixed => "fixed",
    }
}

/// `status`'s stored text.
pub(crate) fn status_text(status: TenantStatus) -> &'static str {
    match status {
        TenantStatus::Active => "active",
        TenantStatus::Suspended => "suspended",
    }
}

/// Parses stored enum text (the tables' CHECKs allow nothing else).
pub(crate) fn parse_enum<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, sqlx::Error> {
    serde_json::from_value(serde_json::Value::String(text.to_owned()))
        .map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

/// Stored thresholds (`[80,100]`).
pub(crate) fn parse_thresholds(text: &str) -> Result<Vec<u32>, sqlx::Error> {
    serde_json::from_str(text).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

/// An unsigned from a stored signed integer (negative: 0; the CHECKs forbid it).
pub(crate) fn unsigned(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// A stored signed integer from an unsigned (saturating).
pub(crate) fn signed(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

pub(crate) mod removal;
pub(crate) mod statements;
