//! The registry quota job (`registry_quota`): [`Registry::refresh_quotas_from`] every
//! `TOLLGATE_QUOTA_INTERVAL` (default 1 s), so that a tenant whose period's requests reach its
//! plan's `monthly_quota` (`overage: block`) is marked exhausted, and admitted again in its
//! next period, in the registry feed the filter follows; each round also prunes the registry
//! change log to its newest [`KEEP_CHANGES`](crate::services::registry::feed::KEEP_CHANGES)
//! entries. The server passes
//! [`LiveUsage`](crate::services::live_usage::LiveUsage), so usage counts as it arrives, not
//! only once flushed.

use std::sync::Arc;
use std::time::Duration;

use super::Jobs;
use crate::services::registry::Registry;
use crate::storage::sql::UsageQueries;
use crate::storage::sql::registry::RegistryStore;

/// Starts the quota job over `registry` on `jobs`, counting usage in `usage`.
pub fn start<D: RegistryStore, Q: UsageQueries>(
    jobs: &mut Jobs,
    registry: Registry<D>,
    usage: Arc<Q>,
    interval: Duration,
) {
    jobs.every("registry_quota", interval, move || {
        let registry = registry.clone();
        let usage = Arc::clone(&usage);
        async move {
            match registry.refresh_quotas_from(&*usage).await {
                Ok(changed) => {
                    if changed > 0 {
                        tracing::info!(tenants = changed, "quota states changed");
                    }
                }
                Err(error) => return Err(format!("quota refresh failed: {error}")),
            }
            match registry.prune_changes().await {
                Ok(pruned) => {
                    if pruned > 0 {
                        tracing::debug!(pruned, "registry change log pruned");
                    }
                    Ok(())
                }
                Err(error) => Err(format!("registry change log pruning failed: {error}")),
            }
        }
    });
}
