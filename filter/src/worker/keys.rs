//! Who a presented API key is: the registry's keys (by the key's SHA-256) first, then the
//! static map (plain, or `sha256:` keys by hash), and the registry's tenant state (plan,
//! suspension, used-up quota) over the static tenant's. What a key resolves to is cached per
//! worker (bounded, emptied at every new registry version), so a request with a known key
//! costs one map lookup rather than a hash; expiry and quota periods are checked against the
//! clock on every request.

use std::rc::Rc;

use hashbrown::HashMap;

use crate::policy::{PlanId, Policy, Tenant, UnknownKey};
use crate::registry::Overage;
use crate::registry::table::{KeyHash, Table, sha256};

/// Presented keys whose resolution a worker keeps, at most (then it starts again).
const CACHE: usize = 4_096;

/// A key's tenant, as far as the clock does not matter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Known {
    pub id: Rc<str>,
    pub plan: Option<PlanId>,
    /// Unix seconds from which the key no longer works.
    pub expires_at: Option<u64>,
    pub suspended: bool,
    /// The tenant's quota is used up and its plan blocks.
    pub exhausted: Option<Exhausted>,
}

/// A used-up monthly quota.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exhausted {
    /// The plan's `monthly_quota`, if the filter knows the plan.
    pub quota: Option<u64>,
    /// The period, Unix seconds: start (inclusive) and end (exclusive).
    pub period_start: u64,
    pub period_end: u64,
}

/// Why a request is refused before any rate limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gate {
    /// Unknown, revoked or expired key, and `registry.unknown_key` is `reject`: `401`.
    InvalidKey,
    /// The tenant is suspended: `403`.
    Suspended(Rc<str>),
    /// The tenant used its monthly quota: `429` until the period ends.
    Quota(Rc<str>, Exhausted),
}

/// Who a request is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Who {
    /// No tenant (no key, or an unknown one served anonymously).
    Anonymous,
    /// A tenant and its plan.
    Tenant(Rc<str>, Option<PlanId>),
}

/// A worker's cache of presented keys.
#[derive(Debug, Default)]
pub struct Keys {
    cache: HashMap<Box<str>, Option<Known>>,
}

impl Keys {
    /// Forgets every resolution (the registry or the plans changed).
    pub fn clear(&mut self) {
        self.cache.clear();
    }

    /// Who presents `key` at `now_secs` (Unix seconds).
    pub fn who(
        &mut self,
        policy: &Policy,
        table: Option<&Table>,
        key: &str,
        now_secs: u64,
    ) -> Result<Who, Gate> {
        let known = match self.cache.get(key) {
            Some(known) => known.clone(),
            None => {
                let known = find(policy, table, key);
                if self.cache.len() >= CACHE {
                    self.cache.clear();
                }
                self.cache.insert(key.into(), known.clone());
                known
            }
        };
        let unknown = match policy.unknown_key {
            UnknownKey::Anonymous => Ok(Who::Anonymous),
            UnknownKey::Reject => Err(Gate::InvalidKey),
        };
        let Some(known) = known else {
            return unknown;
        };
        if known.expires_at.is_some_and(|at| at <= now_secs) {
            return unknown;
        }
        if known.suspended {
            return Err(Gate::Suspended(known.id));
        }
        if let Some(exhausted) = known.exhausted.filter(|e| now_secs < e.period_end) {
            return Err(Gate::Quota(known.id, exhausted));
        }
        Ok(Who::Tenant(known.id, known.plan))
    }
}

/// What `key` resolves to, the clock aside.
fn find(policy: &Policy, table: Option<&Table>, key: &str) -> Option<Known> {
    let table = table.filter(|t| !t.keys.is_empty() || !t.tenants.is_empty());
    let needs_hash = table.is_some_and(|t| !t.keys.is_empty()) || !policy.hashed_tenants.is_empty();
    let hash: Option<KeyHash> = needs_hash.then(|| sha256(key));
    if let (Some(table), Some(hash)) = (table, hash.as_ref())
        && let Some(entry) = table.keys.get(hash)
    {
        // A key whose tenant the registry does not hold (deleted) works no more.
        let mut known = from_registry(policy, table, &entry.tenant)?;
        known.expires_at = entry.expires_at;
        return Some(known);
    }
    let tenant: &Tenant = policy
        .tenants
        .get(key)
        .or_else(|| hash.as_ref().and_then(|h| policy.hashed_tenants.get(h)))?;
    // The registry's state of the same tenant wins over the static one.
    if let Some(known) = table.and_then(|t| from_registry(policy, t, &tenant.id)) {
        return Some(known);
    }
    Some(Known {
        id: Rc::from(tenant.id.as_str()),
        plan: Some(tenant.plan),
        expires_at: None,
        suspended: false,
        exhausted: None,
    })
}

/// The registry's tenant `id`, its plan found among the worker's plans by name.
fn from_registry(policy: &Policy, table: &Table, id: &str) -> Option<Known> {
    let (id, tenant) = table.tenants.get_key_value(id)?;
    let plan = table.plans.get(&tenant.plan);
    let blocks = plan.is_none_or(|p| p.overage == Overage::Block);
    Some(Known {
        id: Rc::clone(id),
        plan: policy.plans.iter().position(|p| p.name == tenant.plan),
        expires_at: None,
        suspended: tenant.status == crate::registry::TenantStatus::Suspended,
        exhausted: (tenant.quota_exhausted && blocks).then(|| Exhausted {
            quota: plan.and_then(|p| p.monthly_quota),
            period_start: tenant.period_start,
            period_end: tenant.period_end,
        }),
    })
}
