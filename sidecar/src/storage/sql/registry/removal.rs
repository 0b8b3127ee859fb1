//! The registry's removals, expanded per database next to [`super::statements`] (whose
//! `change` helper they use): deleting a tenant, and pruning the change log.

/// Expands `delete_tenant` and `prune_changes` for the database `$db`.
macro_rules! registry_removal {
    ($db:ty) => {
        /// Deletes tenant `id` with its API keys and plan history in one transaction (its
        /// usage rows stay); records a change for the tenant and one per key, named
        /// `sha256:<hex>` (the key's row is gone, so the feed reads its hash from the name).
        /// `false`: no such tenant.
        pub(crate) async fn delete_tenant(
            pool: &Pool,
            id: &str,
            now: u64,
        ) -> Result<bool, sqlx::Error> {
            let mut tx = pool.begin().await?;
            let hashes: Vec<String> =
                sqlx::query_scalar("SELECT sha256 FROM api_keys WHERE tenant_id = $1")
                    .bind(id)
                    .fetch_all(&mut *tx)
                    .await?;
            for table in ["api_keys", "tenant_plan_history"] {
                sqlx::query(&format!("DELETE FROM {table} WHERE tenant_id = $1"))
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            let gone = sqlx::query("DELETE FROM tenants WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if gone == 0 {
                tx.rollback().await?;
                return Ok(false);
            }
            for hash in hashes {
                change(&mut tx, "key", &format!("sha256:{hash}"), now).await?;
            }
            change(&mut tx, "tenant", id, now).await?;
            tx.commit().await?;
            Ok(true)
        }

        /// Deletes every change but the newest `keep`; returns how many went.
        pub(crate) async fn prune_changes(pool: &Pool, keep: u64) -> Result<u64, sqlx::Error> {
            let done = sqlx::query(
                "DELETE FROM registry_changes WHERE version <= \
                 (SELECT COALESCE(MAX(version), 0) FROM registry_changes) - $1",
            )
            .bind(signed(keep))
            .execute(pool)
            .await?;
            Ok(done.rows_affected())
        }
    };
}

pub(crate) use registry_removal;
