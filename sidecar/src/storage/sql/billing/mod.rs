//! Billing's tables (`migrations/*/0006_billing.sql`) behind [`BillingStore`]: the meter
//! event outbox that the usage flush fills ([`outbox`], in the flush's transaction) and the
//! sender drains. Both databases run the same statements: written with PostgreSQL's `$1`
//! placeholders, SQLite gets `?1` ([`sqlite_sql`]); the two differ only in how a claim skips
//! rows another sender holds (`FOR UPDATE SKIP LOCKED`; SQLite has one writer anyway).

pub mod outbox;

use std::future::Future;

use sqlx::Row as _;

use super::Database;

/// One outbox row handed to a sender, with the tenant's Stripe customer as of now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeterRow {
    /// Row id.
    pub id: i64,
    /// The Stripe identifier and idempotency key.
    pub identifier: String,
    /// The tenant.
    pub tenant: String,
    /// The usage day (`YYYY-MM-DD`).
    pub date: String,
    /// The meter's event name.
    pub event_name: String,
    /// The value (requests).
    pub value: i64,
    /// The event's timestamp (Unix seconds).
    pub timestamp: i64,
    /// Attempts so far.
    pub attempts: i64,
    /// The tenant's `stripe_customer_id` now (`None`: not set, or the tenant is gone).
    pub customer: Option<String>,
}

/// What a sender decided for one row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settled {
    /// Row id.
    pub id: i64,
    /// The new status (`pending`, `no_customer`, `no_meter`, `sent`, `dead`).
    pub status: &'static str,
    /// Whether this was an attempt at Stripe (counted).
    pub attempted: bool,
    /// When to try again (Unix ms; `pending` rows).
    pub next_attempt_ms: i64,
    /// Why it is not sent (kept with the row).
    pub error: Option<String>,
    /// When Stripe accepted it (Unix seconds; `sent` rows).
    pub sent_at: Option<i64>,
    /// The customer it was sent for.
    pub customer: Option<String>,
}

/// A dead-lettered or waiting row, for the report.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct UnsentRow {
    /// The identifier.
    pub identifier: String,
    /// The tenant.
    pub tenant: String,
    /// The usage day.
    pub date: String,
    /// The value.
    pub value: i64,
    /// Its status.
    pub status: String,
    /// Why.
    pub error: Option<String>,
    /// When written (Unix seconds).
    pub created_at: i64,
}

/// The outbox by status.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct OutboxCounts {
    /// Accepted by Stripe.
    pub sent: u64,
    /// To send (including retries that wait for their time).
    pub pending: u64,
    /// Waiting for the tenant's `stripe_customer_id`.
    pub no_customer: u64,
    /// Waiting for a meter event name.
    pub no_meter: u64,
    /// Refused by Stripe for good.
    pub dead: u64,
}

/// Billing's storage.
pub trait BillingStore: Send + Sync + 'static {
    /// Claims up to `limit` unsent rows due at `now_ms` (and not held by another sender) until
    /// `lease_until_ms`, oldest first, each with its tenant's customer as of now;
    /// `recheck_waiting`: waiting rows (no customer, no meter) also before their next look.
    fn claim_meter_events(
        &self,
        now_ms: i64,
        lease_until_ms: i64,
        limit: u32,
        recheck_waiting: bool,
    ) -> impl Future<Output = Result<Vec<MeterRow>, sqlx::Error>> + Send;

    /// Records what the sender decided for `rows` (one transaction) and releases them.
    fn settle_meter_events(
        &self,
        rows: &[Settled],
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send;

    /// The outbox by status.
    fn outbox_counts(&self) -> impl Future<Output = Result<OutboxCounts, sqlx::Error>> + Send;

    /// The earliest time (Unix ms) a `pending` row may be tried again, if any.
    fn next_attempt_ms(&self) -> impl Future<Output = Result<Option<i64>, sqlx::Error>> + Send;

    /// Up to `limit` rows that are not sent and not pending (dead or waiting), oldest first.
    fn unsent_rows(
        &self,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<UnsentRow>, sqlx::Error>> + Send;

    /// How many unsent rows (pending or waiting) are of usage before `before` (Unix seconds).
    fn unsent_older_than(
        &self,
        before: i64,
    ) -> impl Future<Output = Result<u64, sqlx::Error>> + Send;
}

/// `sql` with PostgreSQL's `$1` placeholders rewritten as SQLite's `?1`.
pub(crate) fn sqlite_sql(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('?');
        } else {
            out.push(c);
        }
    }
    out
}

const UNSENT: &str = "('pending', 'no_customer', 'no_meter')";

fn claim_sql(postgres: bool) -> String {
    let lock = if postgres {
        " FOR UPDATE SKIP LOCKED"
    } else {
        ""
    };
    let sql = format!(
        "UPDATE billing_meter_events SET lease_until_ms = $1 WHERE id IN (SELECT id FROM \
         billing_meter_events WHERE status IN {UNSENT} AND lease_until_ms <= $2 AND \
         (next_attempt_ms <= $2 OR (status <> 'pending' AND $4 = 1)) \
         ORDER BY id LIMIT $3{lock}) RETURNING id"
    );
    if postgres { sql } else { sqlite_sql(&sql) }
}

fn rows_sql(ids: &[i64]) -> String {
    let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
    format!(
        "SELECT m.id, m.identifier, m.tenant_id, m.usage_date, m.event_name, m.value, \
         m.event_timestamp, m.attempts, t.stripe_customer_id FROM billing_meter_events m \
         LEFT JOIN tenants t ON t.id = m.tenant_id WHERE m.id IN ({list}) ORDER BY m.id"
    )
}

const SETTLE: &str = "UPDATE billing_meter_events SET status = $1, attempts = attempts + $2, \
     next_attempt_ms = $3, last_error = $4, sent_at = $5, \
     customer_id = COALESCE($6, customer_id), lease_until_ms = 0 WHERE id = $7";

/// Runs `$body` with `$pool` bound to the database's pool and `$sql` to a function that
/// turns PostgreSQL SQL into the dialect's.
macro_rules! on_pool {
    ($database:expr, |$pool:ident, $sql:ident, $postgres:ident| $body:block) => {
        match $database {
            Database::Postgres($pool) => {
                let $postgres = true;
                let $sql = |s: &str| s.to_owned();
                $body
            }
            Database::Sqlite($pool) => {
                let $postgres = false;
                let $sql = sqlite_sql;
                $body
            }
        }
    };
}

pub mod overage;
pub mod reconcile;

impl BillingStore for Database {
    async fn claim_meter_events(
        &self,
        now_ms: i64,
        lease_until_ms: i64,
        limit: u32,
        recheck_waiting: bool,
    ) -> Result<Vec<MeterRow>, sqlx::Error> {
        on_pool!(self, |pool, sql, postgres| {
            let _ = &sql;
            let ids: Vec<i64> = sqlx::query_scalar(&claim_sql(postgres))
                .bind(lease_until_ms)
                .bind(now_ms)
                .bind(i64::from(limit))
                .bind(i64::from(recheck_waiting))
                .fetch_all(pool)
                .await?;
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            let rows = sqlx::query(&rows_sql(&ids)).fetch_all(pool).await?;
            rows.iter()
                .map(|row| {
                    Ok(MeterRow {
                        id: row.try_get("id")?,
                        identifier: row.try_get("identifier")?,
                        tenant: row.try_get("tenant_id")?,
                        date: row.try_get("usage_date")?,
                        event_name: row.try_get("event_name")?,
                        value: row.try_get("value")?,
                        timestamp: row.try_get("event_timestamp")?,
                        attempts: i64::from(row.try_get::<i32, _>("attempts")?),
                        customer: row
                            .try_get::<Option<String>, _>("stripe_customer_id")?
                            .filter(|c| !c.is_empty()),
                    })
                })
                .collect()
        })
    }

    async fn settle_meter_events(&self, rows: &[Settled]) -> Result<(), sqlx::Error> {
        if rows.is_empty() {
            return Ok(());
        }
        on_pool!(self, |pool, sql, postgres| {
            let _ = postgres;
            let statement = sql(SETTLE);
            let mut tx = pool.begin().await?;
            for row in rows {
                sqlx::query(&statement)
                    .bind(row.status)
                    .bind(i32::from(row.attempted))
                    .bind(row.next_attempt_ms)
                    .bind(row.error.as_deref())
                    .bind(row.sent_at)
                    .bind(row.customer.as_deref())
                    .bind(row.id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await
        })
    }

    async fn outbox_counts(&self) -> Result<OutboxCounts, sqlx::Error> {
        on_pool!(self, |pool, sql, postgres| {
            let _ = (&sql, postgres);
            let rows = sqlx::query(
                "SELECT status, count(*) AS n FROM billing_meter_events GROUP BY status",
            )
            .fetch_all(pool)
            .await?;
            let mut counts = OutboxCounts::default();
            for row in &rows {
                let status: String = row.try_get("status")?;
                let n = u64::try_from(row.try_get::<i64, _>("n")?).unwrap_or(0);
                match status.as_str() {
                    "sent" => counts.sent = n,
                    "pending" => counts.pending = n,
                    "no_customer" => counts.no_customer = n,
                    "no_meter" => counts.no_meter = n,
                    _ => counts.dead = n,
                }
            }
            Ok(counts)
        })
    }

    async fn next_attempt_ms(&self) -> Result<Option<i64>, sqlx::Error> {
        on_pool!(self, |pool, sql, postgres| {
            let _ = (&sql, postgres);
            sqlx::query_scalar(
                "SELECT min(next_attempt_ms) FROM billing_meter_events WHERE status = 'pending'",
            )
            .fetch_one(pool)
            .await
        })
    }

    async fn unsent_rows(&self, limit: u32) -> Result<Vec<UnsentRow>, sqlx::Error> {
        on_pool!(self, |pool, sql, postgres| {
            let _ = postgres;
            let rows = sqlx::query(&sql(
                "SELECT identifier, tenant_id, usage_date, value, status, last_error, created_at \
                 FROM billing_meter_events WHERE status IN ('dead', 'no_customer', 'no_meter') \
                 ORDER BY id LIMIT $1",
            ))
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?;
            rows.iter()
                .map(|row| {
                    Ok(UnsentRow {
                        identifier: row.try_get("identifier")?,
                        tenant: row.try_get("tenant_id")?,
                        date: row.try_get("usage_date")?,
                        value: row.try_get("value")?,
                        status: row.try_get("status")?,
                        error: row.try_get("last_error")?,
                        created_at: row.try_get("created_at")?,
                    })
                })
                .collect()
        })
    }

    async fn unsent_older_than(&self, before: i64) -> Result<u64, sqlx::Error> {
        on_pool!(self, |pool, sql, postgres| {
            let _ = postgres;
            let n: i64 = sqlx::query_scalar(&sql(&format!(
                "SELECT count(*) FROM billing_meter_events WHERE status IN {UNSENT} \
                 AND event_timestamp < $1"
            )))
            .bind(before)
            .fetch_one(pool)
            .await?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }
}
