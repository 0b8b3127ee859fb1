//! Reconciliation's storage: who was metered on a day, what of it is still unsent, the
//! correction events (outbox rows of kind `correction`) and the recorded results
//! (`billing_reconciliations`).

use std::future::Future;

use sqlx::Row as _;

use super::outbox::{event_timestamp, identifier};
use super::sqlite_sql;
use crate::storage::sql::Database;

/// One metered (tenant, meter, customer) of a day.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Metered {
    /// The tenant.
    pub tenant: String,
    /// The meter's event name.
    pub event_name: String,
    /// The Stripe customer.
    pub customer: String,
}

/// One reconciliation result.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Reconciled {
    /// The tenant.
    pub tenant: String,
    /// The Stripe customer.
    pub customer: String,
    /// The meter's event name.
    pub event_name: String,
    /// The day.
    pub date: String,
    /// `api_usage_daily`'s requests.
    pub local: i64,
    /// Stripe's event summary.
    pub stripe: i64,
    /// `matched`, `corrected`, `excess` or `pending` (unsent events of the day: not judged).
    pub outcome: String,
    /// The correction event's identifier.
    pub correction: Option<String>,
}

/// Reconciliation's storage.
pub trait ReconcileStore: Send + Sync + 'static {
    /// Tenants with meter events on `date`, and tenants on a metered plan now, each with a
    /// customer id.
    fn metered_on(
        &self,
        date: &str,
    ) -> impl Future<Output = Result<Vec<Metered>, sqlx::Error>> + Send;

    /// Outbox rows of (tenant, date) not sent yet (pending or waiting), and when the latest
    /// of its sent rows was accepted (Unix seconds; 0: none).
    fn unsent_on(
        &self,
        tenant: &str,
        date: &str,
    ) -> impl Future<Output = Result<(u64, i64), sqlx::Error>> + Send;

    /// Records `result`; for `corrected`, writes the correction event of `result.local -
    /// result.stripe` in the same transaction (its identifier is derived from the day and
    /// both values: the same discrepancy is corrected once). Returns the identifier.
    fn record(
        &self,
        result: &Reconciled,
        now: i64,
    ) -> impl Future<Output = Result<Option<String>, sqlx::Error>> + Send;
}

impl ReconcileStore for Database {
    async fn metered_on(&self, date: &str) -> Result<Vec<Metered>, sqlx::Error> {
        on_pool!(self, |pool, sql, postgres| {
            let _ = postgres;
            let rows = sqlx::query(&sql(
                "SELECT m.tenant_id, m.event_name, t.stripe_customer_id FROM billing_meter_events m \
                 JOIN tenants t ON t.id = m.tenant_id WHERE m.usage_date = $1 \
                 UNION SELECT t.id, p.meter_event_name, t.stripe_customer_id FROM tenants t \
                 JOIN plans p ON p.name = t.plan WHERE p.billing = 'metered'",
            ))
            .bind(date)
            .fetch_all(pool)
            .await?;
            let mut out = Vec::new();
            for row in &rows {
                let customer: Option<String> = row.try_get(2)?;
                if let Some(customer) = customer.filter(|c| !c.is_empty()) {
                    out.push(Metered {
                        tenant: row.try_get(0)?,
                        event_name: row.try_get(1)?,
                        customer,
                    });
                }
            }
            out.sort();
            out.dedup();
            Ok(out)
        })
    }

    async fn unsent_on(&self, tenant: &str, date: &str) -> Result<(u64, i64), sqlx::Error> {
        on_pool!(self, |pool, sql, postgres| {
            let _ = postgres;
            let row = sqlx::query(&sql(
                "SELECT CAST(sum(CASE WHEN status IN ('pending', 'no_customer', 'no_meter') \
                 THEN 1 ELSE 0 END) AS BIGINT) AS unsent, max(sent_at) AS latest \
                 FROM billing_meter_events WHERE tenant_id = $1 AND usage_date = $2",
            ))
            .bind(tenant)
            .bind(date)
            .fetch_one(pool)
            .await?;
            let unsent: Option<i64> = row.try_get("unsent")?;
            let latest: Option<i64> = row.try_get("latest")?;
            Ok((
                u64::try_from(unsent.unwrap_or(0)).unwrap_or(0),
                latest.unwrap_or(0),
            ))
        })
    }

    async fn record(&self, result: &Reconciled, now: i64) -> Result<Option<String>, sqlx::Error> {
        on_pool!(self, |pool, sql, postgres| {
            let _ = postgres;
            let mut tx = pool.begin().await?;
            let mut correction = None;
            if result.outcome == "corrected" {
                let source = format!("reconcile:{}:{}", result.local, result.stripe);
                let id = identifier(
                    "correction",
                    &result.tenant,
                    &result.event_name,
                    &source,
                    &result.date,
                );
                let timestamp = event_timestamp(&result.date, now)
                    .ok_or_else(|| sqlx::Error::Protocol(format!("date {:?}", result.date)))?;
                sqlx::query(&sql(
                    "INSERT INTO billing_meter_events (identifier, kind, tenant_id, flush_id, \
                     usage_date, event_name, value, event_timestamp, status, created_at) \
                     VALUES ($1, 'correction', $2, $3, $4, $5, $6, $7, 'pending', $8) \
                     ON CONFLICT (identifier) DO NOTHING",
                ))
                .bind(&id)
                .bind(&result.tenant)
                .bind(&source)
                .bind(&result.date)
                .bind(&result.event_name)
                .bind(result.local - result.stripe)
                .bind(timestamp)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                correction = Some(id);
            }
            sqlx::query(&sql(
                "INSERT INTO billing_reconciliations (tenant_id, event_name, usage_date, \
                 local_value, stripe_value, outcome, correction, checked_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            ))
            .bind(&result.tenant)
            .bind(&result.event_name)
            .bind(&result.date)
            .bind(result.local)
            .bind(result.stripe)
            .bind(&result.outcome)
            .bind(correction.as_deref())
            .bind(now)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(correction)
        })
    }
}
