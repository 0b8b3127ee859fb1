//! The registry's statements. PostgreSQL and SQLite both take `$N` parameters, `ON CONFLICT
//! … DO UPDATE`, `RETURNING` and the same column types as these statements use them, so one
//! text serves both: [`registry_statements!`] expands it once per dialect (in `postgres/` and
//! `sqlite/`), given the one statement that differs (dates: `date` in PostgreSQL, text in
//! SQLite).

/// Expands the registry's functions for the database `$db`; `$requests_between` counts a
/// tenant's flushed requests between two dates (`$1` tenant, `$2` from, `$3` to, excluded).
macro_rules! registry_statements {
    ($db:ty, $requests_between:expr) => {
        type Pool = sqlx::Pool<$db>;
        type DbRow = <$db as sqlx::Database>::Row;
        use sqlx::Row as _;

        use crate::storage::sql::registry::{
            Alerts, Changes, KeyRecord, OveragePrice, PlanRecord, Put, TenantRecord,
            billing_text, overage_text, parse_enum, parse_thresholds, signed, status_text,
            unsigned,
        };

        const PLAN_COLUMNS: &str = "name, requests_per_minute, burst, monthly_quota, overage, \
            overage_per, overage_amount, overage_currency, billing, meter_event_name";
        const TENANT_COLUMNS: &str = "id, plan, stripe_customer_id, billing_anchor_day, \
            status, webhook_url, webhook_secret, alert_email, alert_thresholds, \
            quota_period_start, quota_exhausted, created_at, updated_at";
        const KEY_COLUMNS: &str =
            "key_id, sha256, prefix, tenant_id, created_at, expires_at, revoked_at";

        async fn change<'c>(
            tx: &mut sqlx::Transaction<'c, $db>,
            kind: &str,
            entity: &str,
            now: u64,
        ) -> Result<(), sqlx::Error> {
            sqlx::query(
                "INSERT INTO registry_changes (kind, entity, changed_at) VALUES ($1, $2, $3)",
            )
            .bind(kind)
            .bind(entity)
            .bind(signed(now))
            .execute(&mut **tx)
            .await?;
            Ok(())
        }

        fn plan_row(row: &DbRow) -> Result<PlanRecord, sqlx::Error> {
            let per: Option<i64> = row.try_get("overage_per")?;
            let amount: Option<i64> = row.try_get("overage_amount")?;
            let currency: Option<String> = row.try_get("overage_currency")?;
            let overage_price = match (per, amount, currency) {
                (Some(per), Some(amount), Some(currency)) => Some(OveragePrice {
                    per: unsigned(per),
                    amount: unsigned(amount),
                    currency,
                }),
                _ => None,
            };
            Ok(PlanRecord {
                name: row.try_get("name")?,
                requests_per_minute: unsigned(row.try_get("requests_per_minute")?),
                burst: row.try_get::<Option<i64>, _>("burst")?.map(unsigned),
                monthly_quota: row.try_get::<Option<i64>, _>("monthly_quota")?.map(unsigned),
                overage: parse_enum(&row.try_get::<String, _>("overage")?)?,
                overage_price,
                billing: parse_enum(&row.try_get::<String, _>("billing")?)?,
                meter_event_name: row.try_get("meter_event_name")?,
            })
        }

        fn tenant_row(row: &DbRow) -> Result<TenantRecord, sqlx::Error> {
            Ok(TenantRecord {
                id: row.try_get("id")?,
                plan: row.try_get("plan")?,
                stripe_customer_id: row.try_get("stripe_customer_id")?,
                billing_anchor_day: u32::try_from(row.try_get::<i32, _>("billing_anchor_day")?)
                    .unwrap_or(1),
                status: parse_enum(&row.try_get::<String, _>("status")?)?,
                alerts: Alerts {
                    webhook_url: row.try_get("webhook_url")?,
                    email: row.try_get("alert_email")?,
                    thresholds: parse_thresholds(&row.try_get::<String, _>("alert_thresholds")?)?,
                },
                webhook_secret: row.try_get("webhook_secret")?,
                quota_period_start: unsigned(row.try_get("quota_period_start")?),
                quota_exhausted: row.try_get("quota_exhausted")?,
                created_at: unsigned(row.try_get("created_at")?),
                updated_at: unsigned(row.try_get("updated_at")?),
            })
        }

        fn key_row(row: &DbRow) -> Result<KeyRecord, sqlx::Error> {
            Ok(KeyRecord {
                key_id: row.try_get("key_id")?,
                sha256: row.try_get("sha256")?,
                prefix: row.try_get("prefix")?,
                tenant: row.try_get("tenant_id")?,
                created_at: unsigned(row.try_get("created_at")?),
                expires_at: row.try_get::<Option<i64>, _>("expires_at")?.map(unsigned),
                revoked_at: row.try_get::<Option<i64>, _>("revoked_at")?.map(unsigned),
            })
        }

        pub(crate) async fn put_plan(
            pool: &Pool,
            plan: &PlanRecord,
            now: u64,
        ) -> Result<Put, sqlx::Error> {
            let mut tx = pool.begin().await?;
            let existed = sqlx::query("SELECT 1 FROM plans WHERE name = $1")
                .bind(&plan.name)
                .fetch_optional(&mut *tx)
                .await?
                .is_some();
            let price = plan.overage_price.as_ref();
            sqlx::query(
                "INSERT INTO plans (name, requests_per_minute, burst, monthly_quota, overage, \
                 overage_per, overage_amount, overage_currency, billing, meter_event_name, \
                 created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11) \
                 ON CONFLICT (name) DO UPDATE SET \
                 requests_per_minute = excluded.requests_per_minute, burst = excluded.burst, \
                 monthly_quota = excluded.monthly_quota, overage = excluded.overage, \
                 overage_per = excluded.overage_per, overage_amount = excluded.overage_amount, \
                 overage_currency = excluded.overage_currency, billing = excluded.billing, \
                 meter_event_name = excluded.meter_event_name, updated_at = excluded.updated_at",
            )
            .bind(&plan.name)
            .bind(signed(plan.requests_per_minute))
            .bind(plan.burst.map(signed))
            .bind(plan.monthly_quota.map(signed))
            .bind(overage_text(plan.overage))
            .bind(price.map(|p| signed(p.per)))
            .bind(price.map(|p| signed(p.amount)))
            .bind(price.map(|p| p.currency.clone()))
            .bind(billing_text(plan.billing))
            .bind(&plan.meter_event_name)
            .bind(signed(now))
            .execute(&mut *tx)
            .await?;
            change(&mut tx, "plan", &plan.name, now).await?;
            tx.commit().await?;
            Ok(if existed { Put::Replaced } else { Put::Created })
        }

        pub(crate) async fn plan(pool: &Pool, name: &str) -> Result<Option<PlanRecord>, sqlx::Error> {
            let sql = format!("SELECT {PLAN_COLUMNS} FROM plans WHERE name = $1");
            let row = sqlx::query(&sql).bind(name).fetch_optional(pool).await?;
            row.as_ref().map(plan_row).transpose()
        }

        pub(crate) async fn plans(pool: &Pool) -> Result<Vec<PlanRecord>, sqlx::Error> {
            let sql = format!("SELECT {PLAN_COLUMNS} FROM plans ORDER BY name");
            let rows = sqlx::query(&sql).fetch_all(pool).await?;
            rows.iter().map(plan_row).collect()
        }

        pub(crate) async fn put_tenant(
            pool: &Pool,
            tenant: &TenantRecord,
            now: u64,
        ) -> Result<(Put, u64), sqlx::Error> {
            let mut tx = pool.begin().await?;
            let before: Option<String> = sqlx::query("SELECT plan FROM tenants WHERE id = $1")
                .bind(&tenant.id)
                .fetch_optional(&mut *tx)
                .await?
                .map(|row| row.try_get("plan"))
                .transpose()?;
            let thresholds = serde_json::to_string(&tenant.alerts.thresholds)
                .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
            let created = sqlx::query(
                "INSERT INTO tenants (id, plan, stripe_customer_id, billing_anchor_day, status, \
                 webhook_url, webhook_secret, alert_email, alert_thresholds, created_at, \
                 updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10) \
                 ON CONFLICT (id) DO UPDATE SET plan = excluded.plan, \
                 stripe_customer_id = excluded.stripe_customer_id, \
                 billing_anchor_day = excluded.billing_anchor_day, status = excluded.status, \
                 webhook_url = excluded.webhook_url, webhook_secret = excluded.webhook_secret, \
                 alert_email = excluded.alert_email, \
                 alert_thresholds = excluded.alert_thresholds, updated_at = excluded.updated_at \
                 RETURNING created_at",
            )
            .bind(&tenant.id)
            .bind(&tenant.plan)
            .bind(&tenant.stripe_customer_id)
            .bind(i32::try_from(tenant.billing_anchor_day).unwrap_or(1))
            .bind(status_text(tenant.status))
            .bind(&tenant.alerts.webhook_url)
            .bind(&tenant.webhook_secret)
            .bind(&tenant.alerts.email)
            .bind(thresholds)
            .bind(signed(now))
            .fetch_one(&mut *tx)
            .await?;
            let created_at = unsigned(created.try_get(0)?);
            if before.as_deref() != Some(tenant.plan.as_str()) {
                sqlx::query(
                    "INSERT INTO tenant_plan_history (tenant_id, plan, changed_at) \
                     VALUES ($1, $2, $3)",
                )
                .bind(&tenant.id)
                .bind(&tenant.plan)
                .bind(signed(now))
                .execute(&mut *tx)
                .await?;
            }
            change(&mut tx, "tenant", &tenant.id, now).await?;
            tx.commit().await?;
            let put = if before.is_some() { Put::Replaced } else { Put::Created };
            Ok((put, created_at))
        }

        pub(crate) async fn tenant(pool: &Pool, id: &str) -> Result<Option<TenantRecord>, sqlx::Error> {
            let sql = format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1");
            let row = sqlx::query(&sql).bind(id).fetch_optional(pool).await?;
            row.as_ref().map(tenant_row).transpose()
        }

        pub(crate) async fn tenants(
            pool: &Pool,
            prefix: &str,
            after: &str,
            limit: u32,
        ) -> Result<Vec<TenantRecord>, sqlx::Error> {
            // A prefix match without LIKE (no escaping): ids from `prefix` up to the next
            // string that does not start with it.
            let sql = format!(
                "SELECT {TENANT_COLUMNS} FROM tenants WHERE id > $1 AND id >= $2 \
                 AND substr(id, 1, $3) = $2 ORDER BY id LIMIT $4"
            );
            let rows = sqlx::query(&sql)
                .bind(after)
                .bind(prefix)
                .bind(i32::try_from(prefix.chars().count()).unwrap_or(i32::MAX))
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?;
            rows.iter().map(tenant_row).collect()
        }

        pub(crate) async fn plan_history(
            pool: &Pool,
            tenant: &str,
        ) -> Result<Vec<(String, u64)>, sqlx::Error> {
            let rows = sqlx::query(
                "SELECT plan, changed_at FROM tenant_plan_history WHERE tenant_id = $1 \
                 ORDER BY changed_at",
            )
            .bind(tenant)
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|row| Ok((row.try_get("plan")?, unsigned(row.try_get("changed_at")?))))
                .collect()
        }

        pub(crate) async fn set_quota_state(
            pool: &Pool,
            tenant: &str,
            period_start: u64,
            exhausted: bool,
            now: u64,
        ) -> Result<bool, sqlx::Error> {
            let mut tx = pool.begin().await?;
            let updated = sqlx::query(
                "UPDATE tenants SET quota_period_start = $2, quota_exhausted = $3 \
                 WHERE id = $1 AND (quota_period_start <> $2 OR quota_exhausted <> $3)",
            )
            .bind(tenant)
            .bind(signed(period_start))
            .bind(exhausted)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if updated > 0 {
                change(&mut tx, "tenant", tenant, now).await?;
            }
            tx.commit().await?;
            Ok(updated > 0)
        }

        pub(crate) async fn insert_key(pool: &Pool, key: &KeyRecord, now: u64) -> Result<(), sqlx::Error> {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO api_keys (key_id, sha256, prefix, tenant_id, created_at, \
                 expires_at, revoked_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&key.key_id)
            .bind(&key.sha256)
            .bind(&key.prefix)
            .bind(&key.tenant)
            .bind(signed(key.created_at))
            .bind(key.expires_at.map(signed))
            .bind(key.revoked_at.map(signed))
            .execute(&mut *tx)
            .await?;
            change(&mut tx, "key", &key.key_id, now).await?;
            tx.commit().await
        }

        async fn keys_where(
            pool: &Pool,
            filter: &str,
            value: &str,
        ) -> Result<Vec<KeyRecord>, sqlx::Error> {
            let sql = format!(
                "SELECT {KEY_COLUMNS} FROM api_keys WHERE {filter} = $1 \
                 ORDER BY created_at, key_id"
            );
            let rows = sqlx::query(&sql).bind(value).fetch_all(pool).await?;
            rows.iter().map(key_row).collect()
        }

        pub(crate) async fn key(pool: &Pool, key_id: &str) -> Result<Option<KeyRecord>, sqlx::Error> {
            Ok(keys_where(pool, "key_id", key_id).await?.into_iter().next())
        }

        pub(crate) async fn key_by_hash(
            pool: &Pool,
            sha256: &str,
        ) -> Result<Option<KeyRecord>, sqlx::Error> {
            Ok(keys_where(pool, "sha256", sha256).await?.into_iter().next())
        }

        pub(crate) async fn keys(pool: &Pool, tenant: &str) -> Result<Vec<KeyRecord>, sqlx::Error> {
            keys_where(pool, "tenant_id", tenant).await
        }

        pub(crate) async fn live_keys(pool: &Pool, now: u64) -> Result<Vec<KeyRecord>, sqlx::Error> {
            let sql = format!(
                "SELECT {KEY_COLUMNS} FROM api_keys WHERE revoked_at IS NULL \
                 AND (expires_at IS NULL OR expires_at > $1) ORDER BY created_at, key_id"
            );
            let rows = sqlx::query(&sql).bind(signed(now)).fetch_all(pool).await?;
            rows.iter().map(key_row).collect()
        }

        async fn update_key(
            pool: &Pool,
            key_id: &str,
            set: &str,
            and: &str,
            value: u64,
            now: u64,
        ) -> Result<bool, sqlx::Error> {
            let mut tx = pool.begin().await?;
            let sql = format!("UPDATE api_keys SET {set} WHERE key_id = $1 {and}");
            let updated = sqlx::query(&sql)
                .bind(key_id)
                .bind(signed(value))
                .execute(&mut *tx)
                .await?
                .rows_affected();
            let exists = updated > 0
                || sqlx::query("SELECT 1 FROM api_keys WHERE key_id = $1")
                    .bind(key_id)
                    .fetch_optional(&mut *tx)
                    .await?
                    .is_some();
            if updated > 0 {
                change(&mut tx, "key", key_id, now).await?;
            }
            tx.commit().await?;
            Ok(exists)
        }

        pub(crate) async fn revoke_key(pool: &Pool, key_id: &str, now: u64) -> Result<bool, sqlx::Error> {
            update_key(pool, key_id, "revoked_at = $2", "AND revoked_at IS NULL", now, now)
                .await
        }

        pub(crate) async fn expire_key(
            pool: &Pool,
            key_id: &str,
            expires_at: u64,
            now: u64,
        ) -> Result<bool, sqlx::Error> {
            update_key(pool, key_id, "expires_at = $2", "", expires_at, now).await
        }

        pub(crate) async fn changes(pool: &Pool, since: u64) -> Result<Changes, sqlx::Error> {
            let bounds = sqlx::query(
                "SELECT CAST(COALESCE(MAX(version), 0) AS BIGINT) AS newest, \
                 CAST(COALESCE(MIN(version), 0) AS BIGINT) AS oldest FROM registry_changes",
            )
            .fetch_one(pool)
            .await?;
            let rows = sqlx::query(
                "SELECT kind, entity, MIN(version) AS first_version FROM registry_changes \
                 WHERE version > $1 GROUP BY kind, entity ORDER BY first_version",
            )
            .bind(signed(since))
            .fetch_all(pool)
            .await?;
            Ok(Changes {
                version: unsigned(bounds.try_get("newest")?),
                oldest: unsigned(bounds.try_get("oldest")?),
                changed: rows
                    .iter()
                    .map(|row| Ok((row.try_get("kind")?, row.try_get("entity")?)))
                    .collect::<Result<_, sqlx::Error>>()?,
            })
        }

        pub(crate) async fn requests_between(
            pool: &Pool,
            tenant: &str,
            from: &str,
            to: &str,
        ) -> Result<u64, sqlx::Error> {
            let row = sqlx::query($requests_between)
                .bind(tenant)
                .bind(from)
                .bind(to)
                .fetch_one(pool)
                .await?;
            Ok(unsigned(row.try_get(0)?))
        }
    };
}

pub(crate) use registry_statements;
