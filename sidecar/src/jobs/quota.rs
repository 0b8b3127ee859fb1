//! The registry quota job (`registry_quota`): [`Registry::refresh_quotas`] every
//! `TOLLGATE_QUOTA_INTERVAL` (default 1 s), so that a tenant whose period's requests reach its
//! plan's `monthly_quota` (`overage: block`) is marked exhausted, and admitted again in its
//! next period, in the registry feed the filter follows.

use std::time::Duration;

use super::Jobs;
use crate::services::registry::Registry;
use crate::storage::sql::registry::RegistryStore;

/// Starts the quota job over `registry` on `jobs`.
pub fn start<D: RegistryStore>(jobs: &mut Jobs, registry: Registry<D>, interval: Duration) {
    jobs.every("registry_quota", interval, move || {
        let registry = registry.clone();
        async move {
            match registry.refresh_quotas().await {
                Ok(changed) => {
                    if changed > 0 {
                        tracing::info!(tenants = changed, "quota states changed");
                    }
                    Ok(())
                }
                Err(error) => Err(format!("quota refresh failed: {error}")),
            }
        }
    });
}
