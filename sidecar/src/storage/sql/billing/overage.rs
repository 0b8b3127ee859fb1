//! Overage invoices' storage (`billing_overage_invoices`): one row per (tenant, period), its
//! state and Stripe ids, and what closing periods reads in bulk (the candidate tenants with
//! their plan history, the daily requests of a date range).

use std::collections::HashMap;
use std::future::Future;

use sqlx::Row as _;

use super::sqlite_sql;
use crate::storage::sql::Database;

/// A tenant that had a `fixed` + `overage: bill` plan at some time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverageTenant {
    /// Its id.
    pub id: String,
    /// Its Stripe customer, if set.
    pub customer: Option<String>,
    /// Its billing anchor day.
    pub anchor: u32,
    /// When it was created (Unix seconds).
    pub created_at: i64,
    /// `(plan, since)`, oldest first.
    pub history: Vec<(String, i64)>,
}

/// One overage invoice as stored.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct OverageInvoice {
    /// The tenant.
    pub tenant: String,
    /// The period's start (Unix seconds).
    pub period_start: i64,
    /// The period's end (Unix seconds, excluded).
    pub period_end: i64,
    /// The Stripe customer.
    pub customer: String,
    /// Requests in the period.
    pub requests: i64,
    /// Requests included (the quota, prorated over plan changes).
    pub included: i64,
    /// Requests over.
    pub overage: i64,
    /// Amount in the currency's smallest unit.
    pub amount: i64,
    /// ISO currency.
    pub currency: String,
    /// The invoice item's description.
    pub description: String,
    /// `planned`, `invoice_created`, `item_added`, `finalized`, `no_overage`, `dead`.
    pub state: String,
    /// Stripe's invoice id.
    pub invoice_id: Option<String>,
    /// Stripe's invoice item id.
    pub item_id: Option<String>,
    /// Why it is dead or stuck.
    pub last_error: Option<String>,
    /// When planned (Unix seconds).
    pub created_at: i64,
}

/// Overage invoices' storage.
pub trait OverageStore: Send + Sync + 'static {
    /// Every tenant that ever had a `fixed` plan with `overage: bill`, with its history.
    fn overage_tenants(
        &self,
    ) -> impl Future<Output = Result<Vec<OverageTenant>, sqlx::Error>> + Send;

    /// Requests per tenant and day from `from` to `to` (`YYYY-MM-DD`, `to` excluded).
    fn requests_by_day(
        &self,
        from: &str,
        to: &str,
    ) -> impl Future<Output = Result<HashMap<String, Vec<(String, u64)>>, sqlx::Error>> + Send;

    /// Every stored overage invoice, by (tenant, period start).
    fn overage_invoices(
        &self,
    ) -> impl Future<Output = Result<HashMap<(String, i64), OverageInvoice>, sqlx::Error>> + Send;

    /// Stores each of `invoices` as planned unless its (tenant, period) is there, in one
    /// transaction; returns them as stored.
    fn plan_overages(
        &self,
        invoices: &[OverageInvoice],
    ) -> impl Future<Output = Result<Vec<OverageInvoice>, sqlx::Error>> + Send;

    /// Stores the state, ids (None: unchanged) and error of each of `invoices`, in one
    /// transaction.
    fn save_overages(
        &self,
        invoices: &[OverageInvoice],
        now: i64,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;
}

const COLUMNS: &str = "tenant_id, period_start, period_end, customer_id, requests, included, \
     overage, amount, currency, description, state, invoice_id, item_id, last_error, created_at";

fn invoice_of<R>(row: &R) -> Result<OverageInvoice, sqlx::Error>
where
    R: sqlx::Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> Option<String>: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(OverageInvoice {
        tenant: row.try_get("tenant_id")?,
        period_start: row.try_get("period_start")?,
        period_end: row.try_get("period_end")?,
        customer: row.try_get("customer_id")?,
        requests: row.try_get("requests")?,
        included: row.try_get("included")?,
        overage: row.try_get("overage")?,
        amount: row.try_get("amount")?,
        currency: row.try_get("currency")?,
        description: row.try_get("description")?,
        state: row.try_get("state")?,
        invoice_id: row.try_get("invoice_id")?,
        item_id: row.try_get("item_id")?,
        last_error: row.try_get("last_error")?,
        created_at: row.try_get("created_at")?,
    })
}

impl OverageStore for Database {
    async fn overage_tenants(&self) -> Result<Vec<OverageTenant>, sqlx::Error> {
        on_pool!(self, |pool, sql, postgres| {
            let _ = (&sql, postgres);
            let rows = sqlx::query(
                "SELECT t.id, t.stripe_customer_id, t.billing_anchor_day, t.created_at, h.plan, \
                 h.changed_at FROM tenants t JOIN tenant_plan_history h ON h.tenant_id = t.id \
                 WHERE t.id IN (SELECT h2.tenant_id FROM tenant_plan_history h2 JOIN plans p \
                 ON p.name = h2.plan WHERE p.billing = 'fixed' AND p.overage = 'bill') \
                 ORDER BY t.id, h.changed_at",
            )
            .fetch_all(pool)
            .await?;
            let mut out: Vec<OverageTenant> = Vec::new();
            for row in &rows {
                let id: String = row.try_get("id")?;
                let entry = (
                    row.try_get::<String, _>("plan")?,
                    row.try_get::<i64, _>("changed_at")?,
                );
                match out.last_mut() {
                    Some(last) if last.id == id => last.history.push(entry),
                    _ => out.push(OverageTenant {
                        id,
                        customer: row
                            .try_get::<Option<String>, _>("stripe_customer_id")?
                            .filter(|c| !c.is_empty()),
                        anchor: u32::try_from(row.try_get::<i32, _>("billing_anchor_day")?)
                            .unwrap_or(1),
                        created_at: row.try_get("created_at")?,
                        history: vec![entry],
                    }),
                }
            }
            Ok(out)
        })
    }

    async fn requests_by_day(
        &self,
        from: &str,
        to: &str,
    ) -> Result<HashMap<String, Vec<(String, u64)>>, sqlx::Error> {
        on_pool!(self, |pool, sql, postgres| {
            let _ = postgres;
            let rows = sqlx::query(&sql(
                "SELECT tenant_id, CAST(date AS TEXT) AS day, CAST(sum(requests) AS BIGINT) AS n \
                 FROM api_usage_daily WHERE CAST(date AS TEXT) >= $1 AND CAST(date AS TEXT) < $2 \
                 GROUP BY tenant_id, CAST(date AS TEXT) ORDER BY tenant_id, day",
            ))
            .bind(from)
            .bind(to)
            .fetch_all(pool)
            .await?;
            let mut out: HashMap<String, Vec<(String, u64)>> = HashMap::new();
            for row in &rows {
                let n: i64 = row.try_get("n")?;
                out.entry(row.try_get("tenant_id")?)
                    .or_default()
                    .push((row.try_get("day")?, u64::try_from(n).unwrap_or(0)));
            }
            Ok(out)
        })
    }

    async fn overage_invoices(
        &self,
    ) -> Result<HashMap<(String, i64), OverageInvoice>, sqlx::Error> {
        on_pool!(self, |pool, sql, postgres| {
            let _ = (&sql, postgres);
            let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM billing_overage_invoices"))
                .fetch_all(pool)
                .await?;
            rows.iter()
                .map(|row| invoice_of(row).map(|i| ((i.tenant.clone(), i.period_start), i)))
                .collect()
        })
    }

    async fn plan_overages(
        &self,
        invoices: &[OverageInvoice],
    ) -> Result<Vec<OverageInvoice>, sqlx::Error> {
        on_pool!(self, |pool, sql, postgres| {
            let _ = postgres;
            let insert = sql(&format!(
                "INSERT INTO billing_overage_invoices ({COLUMNS}, updated_at) VALUES ($1, $2, $3, \
                 $4, $5, $6, $7, $8, $9, $10, $11, NULL, NULL, NULL, $12, $12) \
                 ON CONFLICT (tenant_id, period_start) DO NOTHING"
            ));
            let select = sql(&format!(
                "SELECT {COLUMNS} FROM billing_overage_invoices WHERE tenant_id = $1 \
                 AND period_start = $2"
            ));
            let mut tx = pool.begin().await?;
            let mut out = Vec::with_capacity(invoices.len());
            for i in invoices {
                sqlx::query(&insert)
                    .bind(&i.tenant)
                    .bind(i.period_start)
                    .bind(i.period_end)
                    .bind(&i.customer)
                    .bind(i.requests)
                    .bind(i.included)
                    .bind(i.overage)
                    .bind(i.amount)
                    .bind(&i.currency)
                    .bind(&i.description)
                    .bind(&i.state)
                    .bind(i.created_at)
                    .execute(&mut *tx)
                    .await?;
                let row = sqlx::query(&select)
                    .bind(&i.tenant)
                    .bind(i.period_start)
                    .fetch_one(&mut *tx)
                    .await?;
                out.push(invoice_of(&row)?);
            }
            tx.commit().await?;
            Ok(out)
        })
    }

    async fn save_overages(
        &self,
        invoices: &[OverageInvoice],
        now: i64,
    ) -> Result<(), sqlx::Error> {
        if invoices.is_empty() {
            return Ok(());
        }
        on_pool!(self, |pool, sql, postgres| {
            let _ = postgres;
            let update = sql("UPDATE billing_overage_invoices SET state = $1, \
                 invoice_id = COALESCE($2, invoice_id), item_id = COALESCE($3, item_id), \
                 last_error = $4, updated_at = $5 WHERE tenant_id = $6 AND period_start = $7");
            let mut tx = pool.begin().await?;
            for i in invoices {
                sqlx::query(&update)
                    .bind(&i.state)
                    .bind(i.invoice_id.as_deref())
                    .bind(i.item_id.as_deref())
                    .bind(i.last_error.as_deref())
                    .bind(now)
                    .bind(&i.tenant)
                    .bind(i.period_start)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await
        })
    }
}
