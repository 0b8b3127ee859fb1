//! `plans`, `default_plan` and the static `tenants`: names checked, plans resolved to ids.

use hashbrown::HashMap;

use super::{non_empty, ranged};
use crate::policy::check::{ConfigError, MAX_LIMIT, at, unknown_plan, valid_name};
use crate::policy::follow;
use crate::policy::raw::{Object, OrderedMap, RawPlan, RawTenant};
use crate::policy::serde_error::child;
use crate::policy::{Plan, PlanId, Tenant};

fn plan_id(path: String, name: &str, plans: &[Plan]) -> Result<PlanId, ConfigError> {
    plans
        .iter()
        .position(|p| p.name == name)
        .ok_or_else(|| at(path, unknown_plan(name, plans)))
}

pub(super) fn plans(raw: Option<OrderedMap<Object<RawPlan>>>) -> Result<Vec<Plan>, ConfigError> {
    let Some(raw) = raw else {
        return Ok([("free", 100), ("pro", 1_000), ("enterprise", 10_000)]
            .into_iter()
            .map(|(name, rpm)| Plan {
                name: name.into(),
                requests_per_minute: rpm,
                burst: None,
            })
            .collect());
    };
    let mut plans: Vec<Plan> = Vec::with_capacity(raw.0.len());
    for (name, plan) in raw.0 {
        let path = child("plans", &name);
        if !valid_name(&name) {
            return Err(at(
                path,
                format!(
                    "{name:?} is not a valid plan name (use 1-64 characters of A-Z, a-z, 0-9, '_', '.', '-')"
                ),
            ));
        }
        if plans.iter().any(|p| p.name == name) {
            return Err(at(path, "given twice (define each plan once)".into()));
        }
        let rpm_path = child(&path, "requests_per_minute");
        let rpm = ranged(&rpm_path, plan.0.requests_per_minute, 1, MAX_LIMIT, "")?;
        plans.push(Plan {
            name,
            requests_per_minute: rpm,
            burst: None,
        });
    }
    Ok(plans)
}

pub(super) fn default_plan(
    name: Option<&str>,
    plans: &[Plan],
) -> Result<Option<PlanId>, ConfigError> {
    match name {
        Some(name) => plan_id("default_plan".into(), name, plans).map(Some),
        None => Ok(plans.iter().position(|p| p.name == "free")),
    }
}

/// Static tenants by plain key, and by hash for keys given as `sha256:<hex>`.
type StaticTenants = (HashMap<String, Tenant>, HashMap<[u8; 32], Tenant>);

pub(super) fn tenants(
    raw: Vec<(String, Object<RawTenant>)>,
    plans: &[Plan],
) -> Result<StaticTenants, ConfigError> {
    let mut tenants = HashMap::with_capacity(raw.len());
    let mut hashed = HashMap::new();
    for (key, raw_tenant) in raw {
        let path = child("tenants", &key);
        if let Some(hex) = key.strip_prefix(follow::SHA256_PREFIX) {
            let hash = follow::key_hash(&path, hex)?;
            if hashed.contains_key(&hash) {
                return Err(at(path, "given twice (list each API key once)".into()));
            }
            hashed.insert(hash, tenant(&path, raw_tenant.0, plans)?);
            continue;
        }
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(at(
                path,
                "not a usable API key (it is matched against a header value: use visible ASCII, no spaces)"
                    .into(),
            ));
        }
        if tenants.contains_key(&key) {
            return Err(at(path, "given twice (list each API key once)".into()));
        }
        let compiled = tenant(&path, raw_tenant.0, plans)?;
        tenants.insert(key, compiled);
    }
    Ok((tenants, hashed))
}

fn tenant(path: &str, raw: RawTenant, plans: &[Plan]) -> Result<Tenant, ConfigError> {
    let id = non_empty(
        child(path, "id"),
        raw.id,
        "give the tenant's id, e.g. \"t-acme\"",
    )?;
    let plan = plan_id(child(path, "plan"), &raw.plan, plans)?;
    let stripe_customer_id = match raw.stripe_customer_id {
        Some(customer) if !customer.starts_with("cus_") || customer.len() < 5 => {
            return Err(at(
                child(path, "stripe_customer_id"),
                format!("{customer:?} is not a Stripe customer id (they look like \"cus_...\")"),
            ));
        }
        other => other,
    };
    Ok(Tenant {
        id,
        plan,
        stripe_customer_id,
    })
}
