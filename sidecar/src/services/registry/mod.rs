//! The registry's logic: plans, tenants and API keys written through the admin API or the
//! CLI (the same validation, [`input`]), keys generated here ([`keys`]), billing periods
//! ([`period`]), and what the filter follows: the feed and the quota state ([`feed`]).
//!
//! No plain API key is stored or logged: a new key is returned once, to the caller, and only
//! its SHA-256 is kept.

pub mod feed;
pub mod input;
pub mod keys;
pub mod period;

use std::sync::Arc;

use serde_json::{Value, json};

use self::input::{Invalid, PlanInput, TenantInput, check_name};
use crate::Clock;
use crate::storage::sql::registry::{PlanRecord, Put, RegistryStore, TenantRecord};

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A field is refused.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// No such tenant, plan or key.
    #[error("{0}")]
    NotFound(String),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The registry over a store.
pub struct Registry<D> {
    /// The tables.
    pub store: Arc<D>,
    /// The clock (Unix nanoseconds).
    pub clock: Clock,
}

impl<D> Clone for Registry<D> {
    fn clone(&self) -> Self {
        Registry {
            store: Arc::clone(&self.store),
            clock: self.clock,
        }
    }
}

/// A tenant written: whether it was created, and the new webhook secret if one was made.
pub struct TenantPut {
    /// Created or replaced.
    pub put: Put,
    /// The tenant as JSON (with `webhook_secret` when one was made now).
    pub tenant: Value,
}

impl<D: RegistryStore> Registry<D> {
    /// A registry over `store`.
    pub fn new(store: Arc<D>, clock: Clock) -> Self {
        Registry { store, clock }
    }

    /// Now, Unix seconds.
    pub fn now(&self) -> u64 {
        (self.clock)() / 1_000_000_000
    }

    /// Creates or replaces plan `name`.
    pub async fn put_plan(
        &self,
        name: &str,
        input: PlanInput,
    ) -> Result<(Put, PlanRecord), RegistryError> {
        let plan = input.validate(name)?;
        let put = self.store.put_plan(&plan, self.now()).await?;
        Ok((put, plan))
    }

    /// Creates or replaces tenant `id`. A webhook gets a signing secret the first time (kept
    /// while the webhook stays; dropped with it).
    pub async fn put_tenant(
        &self,
        id: &str,
        input: TenantInput,
    ) -> Result<TenantPut, RegistryError> {
        let settings = input.validate(id)?;
        // Only a webhook needs what the tenant had (its secret, kept).
        let kept_secret = match &settings.alerts.webhook_url {
            Some(_) => self.store.tenant(id).await?.and_then(|t| t.webhook_secret),
            None => None,
        };
        let (webhook_secret, new_secret) = match (&settings.alerts.webhook_url, kept_secret) {
            (None, _) => (None, None),
            (Some(_), Some(kept)) => (Some(kept), None),
            (Some(_), None) => {
                let secret = keys::webhook_secret();
                (Some(secret.clone()), Some(secret))
            }
        };
        let now = self.now();
        let record = TenantRecord {
            id: id.to_owned(),
            plan: settings.plan,
            stripe_customer_id: settings.stripe_customer_id,
            billing_anchor_day: settings.billing_anchor_day,
            status: settings.status,
            alerts: settings.alerts,
            webhook_secret,
            quota_period_start: 0,
            quota_exhausted: false,
            created_at: now,
            updated_at: now,
        };
        let unknown_plan = || Invalid {
            field: "plan".into(),
            message: format!("unknown plan {:?} (create it first)", record.plan),
        };
        let (put, created_at) = self
            .store
            .put_tenant(&record, now)
            .await
            .map_err(|e| refused_reference(e, unknown_plan))?;
        let record = TenantRecord {
            created_at,
            ..record
        };
        let mut tenant = tenant_json(&record);
        if let (Some(secret), Some(object)) = (new_secret, tenant.as_object_mut()) {
            object.insert("webhook_secret".into(), Value::String(secret));
        }
        Ok(TenantPut { put, tenant })
    }

    /// Tenant `id`, its plan, plan history, current period and the period's usage so far
    /// (flushed requests).
    pub async fn tenant(&self, id: &str) -> Result<Value, RegistryError> {
        let tenant = self.existing_tenant(id).await?;
        let plan = self.store.plan(&tenant.plan).await?;
        let (start, end) = period::period(tenant.billing_anchor_day, self.now());
        let (from, to) = period::dates(start, end);
        let requests = self.store.requests_between(id, &from, &to).await?;
        let history = self.store.plan_history(id).await?;
        let mut out = tenant_json(&tenant);
        if let Some(object) = out.as_object_mut() {
            object.insert("plan_details".into(), json!(plan));
            object.insert(
                "plan_history".into(),
                history
                    .iter()
                    .map(|(plan, since)| json!({"plan": plan, "since": since}))
                    .collect(),
            );
            object.insert(
                "period".into(),
                json!({"start": start, "end": end, "first_day": from, "end_day": to}),
            );
            let quota = plan.as_ref().and_then(|p| p.monthly_quota);
            object.insert(
                "usage".into(),
                json!({
                    "requests": requests,
                    "monthly_quota": quota,
                    "quota_exhausted": tenant.quota_exhausted && tenant.quota_period_start == start,
                }),
            );
        }
        Ok(out)
    }

    /// Tenant `id`'s billing anchor day and its plan's monthly quota; `None` when the
    /// registry does not know the tenant.
    pub async fn billing_terms(
        &self,
        id: &str,
    ) -> Result<Option<period::BillingTerms>, RegistryError> {
        let Some(tenant) = self.store.tenant(id).await? else {
            return Ok(None);
        };
        let plan = self.store.plan(&tenant.plan).await?;
        Ok(Some(period::BillingTerms {
            anchor_day: tenant.billing_anchor_day,
            monthly_quota: plan.as_ref().and_then(|p| p.monthly_quota),
            overage: plan.map_or(tollgate_filter::registry::Overage::Block, |p| p.overage),
        }))
    }

    /// Up to `limit` tenants whose id starts with `prefix`, after `after`, by id.
    pub async fn tenants(
        &self,
        prefix: &str,
        after: &str,
        limit: u32,
    ) -> Result<Value, RegistryError> {
        let list = self.store.tenants(prefix, after, limit).await?;
        let next = (list.len() == limit as usize)
            .then(|| list.last().map(|t| t.id.clone()))
            .flatten();
        Ok(json!({
            "tenants": list.iter().map(tenant_json).collect::<Vec<_>>(),
            "next_after": next,
        }))
    }

    /// The tenant `id`, or not found.
    pub async fn existing_tenant(&self, id: &str) -> Result<TenantRecord, RegistryError> {
        check_name("id", id)?;
        self.store
            .tenant(id)
            .await?
            .ok_or_else(|| RegistryError::NotFound(format!("no tenant {id:?}")))
    }
}

/// `error`, or `refused()` when it is a foreign key violation (an unknown plan or tenant).
pub(crate) fn refused_reference<E: Into<RegistryError>>(
    error: sqlx::Error,
    refused: impl FnOnce() -> E,
) -> RegistryError {
    match &error {
        sqlx::Error::Database(cause) if cause.is_foreign_key_violation() => refused().into(),
        _ => RegistryError::Database(error),
    }
}

/// A tenant as the admin API shows it (never its webhook secret).
pub fn tenant_json(tenant: &TenantRecord) -> Value {
    json!({
        "id": tenant.id,
        "plan": tenant.plan,
        "stripe_customer_id": tenant.stripe_customer_id,
        "billing_anchor_day": tenant.billing_anchor_day,
        "status": tenant.status,
        "alerts": tenant.alerts,
        "has_webhook_secret": tenant.webhook_secret.is_some(),
        "created_at": tenant.created_at,
        "updated_at": tenant.updated_at,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
