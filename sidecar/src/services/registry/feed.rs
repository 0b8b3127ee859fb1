//! What the filter follows: the feed ([`Registry::feed`], `GET /v1/registry?since=N`) and the
//! quota state the quota job keeps ([`Registry::refresh_quotas`]).
//!
//! **Versions.** Every registry write appends a row to the change log; its id is the new
//! version. `since` = 0, above the current version (another database) or older than the
//! oldest change kept gets the whole registry (`full: true`); otherwise the entities changed
//! after `since`, each as it is now: a revoked or expired key is in `removed_keys`, a tenant
//! that no longer exists in `removed_tenants`.
//!
//! **Pruning.** The quota job keeps the newest [`KEEP_CHANGES`] changes
//! ([`Registry::prune_changes`]); a filter further behind gets the whole registry, as above.
//!
//! **Quota state.** For each tenant whose plan has a `monthly_quota` and `overage: block`,
//! the job counts the requests of its current period — flushed and not yet flushed, through
//! [`LiveUsage`](crate::services::live_usage::LiveUsage), every tenant in one bulk read — and
//! records whether they reached the quota; a change (also a new period) appends a change, so
//! the next feed carries the tenant. A quota can be overshot by what the tenant sends before
//! the filter learns it: rate × (the filter's usage batch interval + the job interval + the
//! filter's registry poll interval + the time one job round takes), no longer the flush
//! interval.

use std::collections::BTreeMap;

use tollgate_filter::registry::{Overage, RegistryFeed, RegistryKey, RegistryPlan, RegistryTenant};

use super::period::{period, period_days};
use super::{Registry, RegistryError};
use crate::storage::sql::registry::{KeyRecord, PlanRecord, RegistryStore, TenantRecord};
use crate::storage::sql::{TenantRange, UsageQueries};

/// Tenants read at once by the quota job and the full feed.
const PAGE: u32 = 1_000;

/// Changes kept in the log: a filter at most this many changes behind gets a delta.
pub const KEEP_CHANGES: u64 = 10_000;

fn plan_entry(plan: &PlanRecord) -> RegistryPlan {
    RegistryPlan {
        name: plan.name.clone(),
        requests_per_minute: plan.requests_per_minute,
        burst: plan.burst,
        monthly_quota: plan.monthly_quota,
        overage: plan.overage,
    }
}

fn key_entry(key: &KeyRecord) -> RegistryKey {
    RegistryKey {
        sha256: key.sha256.clone(),
        tenant: key.tenant.clone(),
        expires_at: key.expires_at,
    }
}

impl<D: RegistryStore> Registry<D> {
    fn tenant_entry(&self, tenant: &TenantRecord, now: u64) -> RegistryTenant {
        let (start, end) = period(tenant.billing_anchor_day, now);
        RegistryTenant {
            id: tenant.id.clone(),
            plan: tenant.plan.clone(),
            status: tenant.status,
            period_start: start,
            period_end: end,
            quota_exhausted: tenant.quota_exhausted && tenant.quota_period_start == start,
        }
    }

    /// Every tenant, by id.
    async fn all_tenants(&self) -> Result<Vec<TenantRecord>, RegistryError> {
        let mut all = Vec::new();
        loop {
            let after = all
                .last()
                .map_or(String::new(), |t: &TenantRecord| t.id.clone());
            let page = self.store.tenants("", &after, PAGE).await?;
            let done = page.len() < PAGE as usize;
            all.extend(page);
            if done {
                return Ok(all);
            }
        }
    }

    /// The changes after version `since`, or the whole registry.
    pub async fn feed(&self, since: u64) -> Result<RegistryFeed, RegistryError> {
        let now = self.now();
        let changes = self.store.changes(since).await?;
        let full = since == 0
            || since > changes.version
            || (changes.oldest > 0 && since + 1 < changes.oldest);
        let mut feed = RegistryFeed {
            version: changes.version,
            full,
            ..RegistryFeed::default()
        };
        if full {
            feed.plans = self.store.plans().await?.iter().map(plan_entry).collect();
            let tenants = self.all_tenants().await?;
            feed.tenants = tenants.iter().map(|t| self.tenant_entry(t, now)).collect();
            feed.keys = self
                .store
                .live_keys(now)
                .await?
                .iter()
                .map(key_entry)
                .collect();
            return Ok(feed);
        }
        for (kind, entity) in &changes.changed {
            match kind.as_str() {
                "plan" => {
                    if let Some(plan) = self.store.plan(entity).await? {
                        feed.plans.push(plan_entry(&plan));
                    }
                }
                "tenant" => match self.store.tenant(entity).await? {
                    Some(tenant) => feed.tenants.push(self.tenant_entry(&tenant, now)),
                    None => feed.removed_tenants.push(entity.clone()),
                },
                _ => {
                    // A deleted tenant's keys are gone; their changes name their hashes.
                    if let Some(hash) = entity.strip_prefix("sha256:") {
                        feed.removed_keys.push(hash.to_owned());
                    } else if let Some(key) = self.store.key(entity).await? {
                        let dead =
                            key.revoked_at.is_some() || key.expires_at.is_some_and(|at| at <= now);
                        if dead {
                            feed.removed_keys.push(key.sha256);
                        } else {
                            feed.keys.push(key_entry(&key));
                        }
                    }
                }
            }
        }
        Ok(feed)
    }

    /// Deletes all but the newest [`KEEP_CHANGES`] changes; returns how many went.
    pub async fn prune_changes(&self) -> Result<u64, RegistryError> {
        Ok(self.store.prune_changes(KEEP_CHANGES).await?)
    }

    /// Deletes tenant `id` (404 when unknown): its keys stop working and it leaves the feed
    /// (`removed_tenants`, its keys in `removed_keys`); its usage stays in the database.
    pub async fn delete_tenant(&self, id: &str) -> Result<(), RegistryError> {
        super::input::check_name("id", id)?;
        if self.store.delete_tenant(id, self.now()).await? {
            Ok(())
        } else {
            Err(RegistryError::NotFound(format!("no tenant {id:?}")))
        }
    }

    /// Recomputes the quota state of every tenant on a plan with a `monthly_quota` and
    /// `overage: block` from the usage in the registry's own database (flushed only); see
    /// [`refresh_quotas_from`](Self::refresh_quotas_from).
    pub async fn refresh_quotas(&self) -> Result<usize, RegistryError>
    where
        D: UsageQueries,
    {
        self.refresh_quotas_from(&*self.store).await
    }

    /// Recomputes the quota state of every tenant on a plan with a `monthly_quota` and
    /// `overage: block`, counting its period's requests in `usage` (the quota job passes
    /// [`LiveUsage`](crate::services::live_usage::LiveUsage): flushed and unflushed), all
    /// tenants in one [`UsageQueries::period_requests`]; returns how many changed (each
    /// bumped the version). Tenants whose plan has no such quota are left alone (never
    /// exhausted).
    pub async fn refresh_quotas_from(
        &self,
        usage: &impl UsageQueries,
    ) -> Result<usize, RegistryError> {
        let now = self.now();
        let quotas: BTreeMap<String, u64> = self
            .store
            .plans()
            .await?
            .into_iter()
            .filter(|p| p.overage == Overage::Block)
            .filter_map(|p| p.monthly_quota.map(|q| (p.name, q)))
            .collect();
        let tenants = self.all_tenants().await?;
        let ranges: Vec<TenantRange> = tenants
            .iter()
            .filter(|t| quotas.contains_key(&t.plan))
            .map(|t| {
                let (start, end) = period(t.billing_anchor_day, now);
                let (from, to) = period_days(start, end);
                TenantRange {
                    tenant: t.id.clone(),
                    from,
                    to,
                }
            })
            .collect();
        let used = usage.period_requests(&ranges).await?;
        let mut changed = 0;
        for tenant in tenants {
            let (start, _) = period(tenant.billing_anchor_day, now);
            let exhausted = quotas
                .get(&tenant.plan)
                .is_some_and(|&quota| used.get(&tenant.id).copied().unwrap_or(0) >= quota);
            let stale = tenant.quota_exhausted != exhausted
                || (exhausted && tenant.quota_period_start != start);
            if stale
                && self
                    .store
                    .set_quota_state(&tenant.id, start, exhausted, now)
                    .await?
            {
                changed += 1;
            }
        }
        Ok(changed)
    }
}
