//! The registry as one worker holds it: plans by name, tenants by id, keys by hash, built
//! from the feeds it applied in version order.

use std::rc::Rc;

use hashbrown::HashMap;
use sha2::{Digest, Sha256};

use super::{RegistryFeed, RegistryPlan, RegistryTenant};

/// An API key's hash.
pub type KeyHash = [u8; 32];

/// A key of the registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key {
    /// The tenant it identifies.
    pub tenant: Rc<str>,
    /// Unix seconds from which it no longer works.
    pub expires_at: Option<u64>,
}

/// The registry at [`Table::version`].
#[derive(Clone, Debug, Default)]
pub struct Table {
    /// The version of the last feed applied (0: none yet).
    pub version: u64,
    pub plans: HashMap<String, RegistryPlan>,
    pub tenants: HashMap<Rc<str>, RegistryTenant>,
    pub keys: HashMap<KeyHash, Key>,
}

impl Table {
    /// Applies `feed`: a full feed replaces the table (unless it is the version held: a full
    /// feed with a lower version is a sidecar that started its versions again), changes apply
    /// only above the version held. Within a feed, removals come after additions, so a key
    /// both added and revoked is revoked. Returns whether anything was applied.
    pub fn apply(&mut self, feed: RegistryFeed) -> bool {
        if feed.full {
            if feed.version == self.version && self.version != 0 {
                return false;
            }
            *self = Table::default();
        } else if feed.version <= self.version {
            return false;
        }
        self.version = feed.version;
        for plan in feed.plans {
            self.plans.insert(plan.name.clone(), plan);
        }
        for tenant in feed.tenants {
            self.tenants.insert(Rc::from(tenant.id.as_str()), tenant);
        }
        for key in feed.keys {
            if let Some(hash) = parse_hash(&key.sha256) {
                let tenant = Rc::from(key.tenant.as_str());
                let expires_at = key.expires_at;
                self.keys.insert(hash, Key { tenant, expires_at });
            }
        }
        for hex in &feed.removed_keys {
            if let Some(hash) = parse_hash(hex) {
                self.keys.remove(&hash);
            }
        }
        for id in &feed.removed_tenants {
            self.tenants.remove(id.as_str());
        }
        true
    }
}

/// The SHA-256 of an API key.
pub fn sha256(key: &str) -> KeyHash {
    Sha256::digest(key.as_bytes()).into()
}

/// 64 hex digits (either case) as a hash; `None` for anything else.
pub fn parse_hash(hex: &str) -> Option<KeyHash> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut hash = [0u8; 32];
    for (out, pair) in hash.iter_mut().zip(bytes.chunks_exact(2)) {
        let high = char::from(*pair.first()?).to_digit(16)?;
        let low = char::from(*pair.get(1)?).to_digit(16)?;
        *out = u8::try_from(high * 16 + low).ok()?;
    }
    Some(hash)
}

#[cfg(test)]
mod tests;
