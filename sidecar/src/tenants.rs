//! The tenant registry of the usage query API: which API key is which tenant, on which plan.
//!
//! Read from the same filter configuration JSON the proxy uses (`TOLLGATE_FILTER_CONFIG`),
//! parsed by [`Policy::from_json`] so a bad file is refused with the filter's own
//! field-and-reason message. Only the SHA-256 hashes of the API keys are kept; a presented key
//! is hashed and compared with every stored hash in constant time ([`subtle`]), so neither the
//! keys nor the time a comparison takes tell anything about them. Plain keys are never stored
//! or logged.
//!
//! ```
//! use tollgate_sidecar::tenants::Tenants;
//!
//! let config = br#"{"rules": [], "tenants": {"sk_live_1": {"id": "acme", "plan": "pro"}}}"#;
//! let tenants = Tenants::from_json(config).unwrap();
//! let acme = tenants.by_key("sk_live_1").unwrap();
//! assert_eq!((acme.id.as_str(), acme.plan.as_str(), acme.requests_per_minute), ("acme", "pro", 1000));
//! assert!(tenants.by_key("sk_live_2").is_none());
//! ```

use std::collections::HashMap;
use std::path::Path;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tollgate_filter::policy::{ConfigError, Policy};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// The SHA-256 digest of `secret`.
pub fn hash(secret: &str) -> Hash {
    Sha256::digest(secret.as_bytes()).into()
}

/// Whether `a` and `b` are equal, in constant time.
pub fn same_hash(a: &Hash, b: &Hash) -> bool {
    bool::from(a.ct_eq(b))
}

/// What the registry knows about a tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantInfo {
    /// The tenant's id (`tenant_id` in the usage tables).
    pub id: String,
    /// Its plan's name.
    pub plan: String,
    /// Its plan's `requests_per_minute`.
    pub requests_per_minute: u64,
}

/// API key hashes → tenants.
#[derive(Clone, Debug, Default)]
pub struct Tenants {
    keys: Vec<(Hash, TenantInfo)>,
    by_id: HashMap<String, TenantInfo>,
}

/// Why the filter configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TenantsError {
    /// The file cannot be read.
    #[error("cannot read the filter configuration {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The file is not a valid filter configuration.
    #[error("the filter configuration {path} is invalid: {error}")]
    Invalid {
        /// The file.
        path: String,
        /// The field and the reason, as the filter reports them.
        error: ConfigError,
    },
}

impl Tenants {
    /// The tenants of a filter configuration (JSON bytes). An error about a `tenants` entry
    /// names it `tenants.<API key>` instead of by its key ([`without_key`]).
    pub fn from_json(bytes: &[u8]) -> Result<Tenants, ConfigError> {
        Policy::from_json(bytes)
            .map(|policy| Self::from_policy(&policy))
            .map_err(without_key)
    }

    /// Reads the filter configuration at `path`.
    pub fn load(path: &Path) -> Result<Tenants, TenantsError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| TenantsError::Read {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        Self::from_json(&bytes).map_err(|error| TenantsError::Invalid { path: shown, error })
    }

    /// The tenants of `policy`: its static key map, keys hashed. A tenant whose plan index is
    /// out of range (impossible for a compiled policy) is left out.
    pub fn from_policy(policy: &Policy) -> Tenants {
        let mut tenants = Tenants::default();
        for (key, tenant) in &policy.tenants {
            let Some(plan) = policy.plans.get(tenant.plan) else {
                continue;
            };
            let info = TenantInfo {
                id: tenant.id.clone(),
                plan: plan.name.clone(),
                requests_per_minute: plan.requests_per_minute,
            };
            tenants.by_id.insert(info.id.clone(), info.clone());
            tenants.keys.push((hash(key), info));
        }
        tenants
    }

    /// The tenant whose API key is `key`. Every stored hash is compared (in constant time),
    /// whichever matches.
    pub fn by_key(&self, key: &str) -> Option<&TenantInfo> {
        let presented = hash(key);
        let mut found = None;
        for (stored, info) in &self.keys {
            if same_hash(stored, &presented) {
                found = Some(info);
            }
        }
        found
    }

    /// The tenant with id `id` (any of its keys).
    pub fn by_id(&self, id: &str) -> Option<&TenantInfo> {
        self.by_id.get(id)
    }

    /// How many API keys are known.
    pub fn keys(&self) -> usize {
        self.keys.len()
    }

    /// How many distinct tenants are known.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether no tenant is known.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

/// `error` with the API key in its path (`tenants.sk_live_1.plan`, `tenants."a b".id`)
/// replaced by `<API key>`: the filter names a tenant entry by its key, which must not reach a
/// log.
pub fn without_key(mut error: ConfigError) -> ConfigError {
    let Some(rest) = error.path.strip_prefix("tenants.") else {
        return error;
    };
    // A plain key runs to the next `.`; another is written as a quoted Rust string.
    let after = if let Some(quoted) = rest.strip_prefix('"') {
        let mut escaped = false;
        let end = quoted.char_indices().find_map(|(at, c)| {
            let closing = c == '"' && !escaped;
            escaped = c == '\\' && !escaped;
            closing.then_some(at + 1)
        });
        end.and_then(|end| quoted.get(end..)).unwrap_or("")
    } else {
        rest.find('.').and_then(|at| rest.get(at..)).unwrap_or("")
    };
    error.path = format!("tenants.<API key>{after}");
    error
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_hashed_and_plans_resolved() {
        let config = br#"{"rules": [], "tenants": {
            "k-a1": {"id": "a", "plan": "free"}, "k-a2": {"id": "a", "plan": "free"},
            "k-b": {"id": "b", "plan": "enterprise"}}}"#;
        let tenants = Tenants::from_json(config).unwrap();
        assert_eq!((tenants.keys(), tenants.len()), (3, 2));
        assert_eq!(tenants.by_key("k-a2").unwrap().id, "a");
        assert_eq!(tenants.by_key("k-b").unwrap().requests_per_minute, 10_000);
        assert_eq!(tenants.by_id("a").unwrap().plan, "free");
        assert!(tenants.by_key("k-c").is_none());
        assert!(tenants.by_key("").is_none());
        // No plain key is kept anywhere.
        assert!(!format!("{tenants:?}").contains("k-a1"));
    }

    #[test]
    fn a_bad_configuration_names_the_field() {
        let error = Tenants::from_json(
            br#"{"rules": [], "tenants": {"sk_live_9": {"id": "a", "plan": "gold"}}}"#,
        )
        .unwrap_err();
        assert_eq!(error.path, "tenants.<API key>.plan", "{error}");
        assert!(!error.to_string().contains("sk_live_9"), "{error}");
        let error = Tenants::from_json(
            br#"{"rules": [], "tenants": {"sk.\"x": {"id": "", "plan": "free"}}}"#,
        )
        .unwrap_err();
        assert_eq!(error.path, "tenants.<API key>.id", "{error}");
        let error = Tenants::from_json(br#"{"rules": [], "tenants": {"sk 1": {}}}"#).unwrap_err();
        assert!(error.path.starts_with("tenants.<API key>"), "{error}");
        assert!(!error.to_string().contains("sk 1"), "{error}");
        let path = std::env::temp_dir().join(format!("tollgate-bad-{}.json", std::process::id()));
        std::fs::write(&path, br#"{"rules": 5}"#).unwrap();
        let error = Tenants::load(&path).unwrap_err().to_string();
        std::fs::remove_file(&path).unwrap();
        assert!(error.contains("is invalid: rules"), "{error}");
        let error = Tenants::load(Path::new("/nonexistent/tollgate.json")).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("cannot read the filter configuration")
        );
    }
}
