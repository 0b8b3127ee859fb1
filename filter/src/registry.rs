//! The registry feed on the wire: tenants, plans and API keys as the sidecar's registry holds
//! them, sent to the filter so that it follows sign-ups, key rotations, plan changes,
//! suspensions and used-up monthly quotas without a configuration push.
//!
//! The filter asks [`REGISTRY_PATH`]`?since=<version>` in the background (never on the request
//! path) and the sidecar answers a [`RegistryFeed`]: every change after `since`, or everything
//! (`full: true`) when `since` is 0 or older than the changes it keeps. Versions only grow; a
//! filter applies a feed whose `version` is above what it has, and keeps the last registry it
//! had while the sidecar does not answer.
//!
//! API keys travel only as the lowercase hex SHA-256 of the key ([`RegistryKey::sha256`]): the
//! filter hashes a presented key and looks the hash up; neither side stores a plain key.
//!
//! ```
//! use tollgate_filter::registry::{RegistryFeed, TenantStatus};
//!
//! let feed: RegistryFeed = serde_json::from_str(r#"{
//!     "version": 7, "full": true,
//!     "plans": [{"name": "pro", "requests_per_minute": 1000, "burst": null,
//!                "monthly_quota": 100000, "overage": "block"}],
//!     "tenants": [{"id": "acme", "plan": "pro", "status": "active",
//!                  "period_start": 1764547200, "period_end": 1767225600,
//!                  "quota_exhausted": false}],
//!     "keys": [{"sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
//!               "tenant": "acme", "expires_at": null}],
//!     "removed_keys": [], "removed_tenants": []
//! }"#).unwrap();
//! assert_eq!(feed.tenants[0].status, TenantStatus::Active);
//! ```

use serde::{Deserialize, Serialize};

pub mod table;

/// The sidecar path that answers `GET ?since=<version>` with a [`RegistryFeed`].
pub const REGISTRY_PATH: &str = "/v1/registry";

/// Changes to the registry after a version, or all of it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryFeed {
    /// The registry's version after these changes.
    pub version: u64,
    /// `true`: this is the whole registry (replace what you have); `false`: changes since the
    /// `since` that was asked.
    pub full: bool,
    /// Plans created or changed.
    #[serde(default)]
    pub plans: Vec<RegistryPlan>,
    /// Tenants created or changed (plan, status, period, quota state).
    #[serde(default)]
    pub tenants: Vec<RegistryTenant>,
    /// Keys created (or changed: expiry).
    #[serde(default)]
    pub keys: Vec<RegistryKey>,
    /// Hashes of keys revoked since `since`: they stop working.
    #[serde(default)]
    pub removed_keys: Vec<String>,
    /// Ids of tenants deleted since `since`.
    #[serde(default)]
    pub removed_tenants: Vec<String>,
}

/// What happens once a tenant has used its plan's monthly quota.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overage {
    /// Refuse (`429 quota_exceeded`) until the period ends.
    Block,
    /// Admit and bill the excess.
    Bill,
}

/// A plan's limits, as the filter needs them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryPlan {
    /// The plan's name (`free`, `pro`, …).
    pub name: String,
    /// Its rate: what `"limit": "plan"` rules use.
    pub requests_per_minute: u64,
    /// Token-bucket capacity for plan-limited rules; `None`: the rule's own.
    pub burst: Option<u64>,
    /// Requests included per billing period; `None`: no quota.
    pub monthly_quota: Option<u64>,
    /// What happens past the quota.
    pub overage: Overage,
}

/// Whether a tenant may use the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantStatus {
    /// Served.
    Active,
    /// Refused with `403`.
    Suspended,
}

/// A tenant, as the filter needs it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryTenant {
    /// The tenant's id.
    pub id: String,
    /// Its plan's name.
    pub plan: String,
    /// Active or suspended.
    pub status: TenantStatus,
    /// Its current billing period, Unix seconds (UTC): start, inclusive.
    pub period_start: u64,
    /// End of the current period, exclusive (`Retry-After` of a quota refusal counts to it).
    pub period_end: u64,
    /// `true` when its plan has `overage: block` and the period's requests reached the quota:
    /// the filter refuses with `quota_exceeded` until `period_end`.
    pub quota_exhausted: bool,
}

/// An API key, as the filter needs it: its hash, never the key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryKey {
    /// Lowercase hex SHA-256 of the key.
    pub sha256: String,
    /// The tenant it identifies.
    pub tenant: String,
    /// Unix seconds after which it stops working; `None`: no expiry.
    pub expires_at: Option<u64>,
}
