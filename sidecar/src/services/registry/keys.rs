//! API keys and webhook secrets, generated here from the operating system's random source:
//! a key is `tg_` and 192 random bits (base64url), shown once; only its SHA-256 (hex) and
//! its first [`PREFIX_LEN`] characters are stored.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::input::Invalid;
use super::{Registry, RegistryError};
use crate::storage::sql::registry::{KeyRecord, RegistryStore};

/// Characters of a key kept to recognise it (`tg_` and 8 more).
pub const PREFIX_LEN: usize = 11;

/// The longest rotation overlap: 30 days.
pub const MAX_OVERLAP_SECONDS: u64 = 30 * 86_400;

fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    // The OS source fails only when the system is broken; a zero key would be guessable,
    // so the process stops rather than hand one out.
    #[allow(clippy::expect_used)]
    getrandom::fill(&mut bytes).expect("the operating system's random source failed");
    bytes
}

/// A new API key: `tg_` + 192 random bits.
pub fn new_key() -> String {
    format!("tg_{}", URL_SAFE_NO_PAD.encode(random::<24>()))
}

/// A new webhook signing secret: `whsec_` + 256 random bits (base64).
pub fn webhook_secret() -> String {
    format!("whsec_{}", STANDARD.encode(random::<32>()))
}

/// The lowercase hex SHA-256 of `key` (what the registry and the feed carry).
pub fn sha256_hex(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A key as the admin API lists it (prefix only).
pub fn key_json(key: &KeyRecord) -> Value {
    json!(key)
}

impl<D: RegistryStore> Registry<D> {
    /// Creates a key for tenant `tenant`, expiring at `expires_at` (Unix seconds, in the
    /// future) if given. Returns its record and the plain key (shown once, stored nowhere).
    pub async fn create_key(
        &self,
        tenant: &str,
        expires_at: Option<u64>,
    ) -> Result<(KeyRecord, String), RegistryError> {
        super::input::check_name("id", tenant)?;
        let now = self.now();
        if expires_at.is_some_and(|at| at <= now) {
            return Err(Invalid {
                field: "expires_at".into(),
                message: format!("must be later than now ({now}, Unix seconds)"),
            }
            .into());
        }
        let key = new_key();
        let record = KeyRecord {
            key_id: format!("key_{}", URL_SAFE_NO_PAD.encode(random::<12>())),
            sha256: sha256_hex(&key),
            prefix: key.chars().take(PREFIX_LEN).collect(),
            tenant: tenant.to_owned(),
            created_at: now,
            expires_at,
            revoked_at: None,
        };
        self.store.insert_key(&record, now).await.map_err(|e| {
            super::refused_reference(e, || {
                RegistryError::NotFound(format!("no tenant {tenant:?}"))
            })
        })?;
        Ok((record, key))
    }

    /// Revokes `key_id` (again: nothing changes).
    pub async fn revoke_key(&self, key_id: &str) -> Result<(), RegistryError> {
        if self.store.revoke_key(key_id, self.now()).await? {
            Ok(())
        } else {
            Err(RegistryError::NotFound(format!("no key {key_id:?}")))
        }
    }

    /// A new key for `key_id`'s tenant; `key_id` keeps working `overlap_seconds` more (or
    /// until its own earlier expiry). Returns the new key's record, the plain key and when the
    /// old one stops.
    pub async fn rotate_key(
        &self,
        key_id: &str,
        overlap_seconds: u64,
    ) -> Result<(KeyRecord, String, u64), RegistryError> {
        if overlap_seconds > MAX_OVERLAP_SECONDS {
            return Err(Invalid {
                field: "overlap_seconds".into(),
                message: format!("must be at most {MAX_OVERLAP_SECONDS} (30 days)"),
            }
            .into());
        }
        let old = self
            .store
            .key(key_id)
            .await?
            .filter(|k| k.revoked_at.is_none())
            .ok_or_else(|| RegistryError::NotFound(format!("no live key {key_id:?}")))?;
        let (new, key) = self.create_key(&old.tenant, None).await?;
        let until = (self.now() + overlap_seconds).min(old.expires_at.unwrap_or(u64::MAX));
        self.store.expire_key(key_id, until, self.now()).await?;
        Ok((new, key, until))
    }

    /// `tenant`'s keys (prefixes, never keys), oldest first.
    pub async fn keys(&self, tenant: &str) -> Result<Value, RegistryError> {
        self.existing_tenant(tenant).await?;
        let keys = self.store.keys(tenant).await?;
        Ok(json!({"keys": keys.iter().map(key_json).collect::<Vec<_>>()}))
    }
}

impl<D: RegistryStore> Registry<D> {
    /// The tenant whose live (not revoked, not expired) registry key is `key`, as the usage
    /// API knows tenants.
    pub async fn tenant_of_key(
        &self,
        key: &str,
    ) -> Result<Option<crate::tenants::TenantInfo>, RegistryError> {
        let Some(record) = self.store.key_by_hash(&sha256_hex(key)).await? else {
            return Ok(None);
        };
        let now = self.now();
        if record.revoked_at.is_some() || record.expires_at.is_some_and(|at| at <= now) {
            return Ok(None);
        }
        self.tenant_info(&record.tenant).await
    }

    /// Tenant `id` with its plan's rate, as the usage API knows tenants.
    pub async fn tenant_info(
        &self,
        id: &str,
    ) -> Result<Option<crate::tenants::TenantInfo>, RegistryError> {
        let Some(tenant) = self.store.tenant(id).await? else {
            return Ok(None);
        };
        let plan = self.store.plan(&tenant.plan).await?;
        Ok(Some(crate::tenants::TenantInfo {
            id: tenant.id,
            requests_per_minute: plan.map_or(0, |p| p.requests_per_minute),
            plan: tenant.plan,
        }))
    }
}
