//! The meter event outbox rows the usage flush writes, in ITS transaction
//! ([`crate::storage::sql::sink`]): for a tenant whose plan has `billing: metered`, one row per
//! usage day of the snapshot with that day's requests (all endpoints), a deterministic
//! identifier and a timestamp inside the day. Both databases run the same statements.

use sha2::{Digest, Sha256};
use sqlx::{Postgres, Sqlite, Transaction};
use tollgate_filter::usage::parse_date;

use crate::storage::sql::sink::integer;
use crate::storage::usage::Snapshot;

const DAY: i64 = 86_400;

/// The Stripe identifier (and idempotency key) of one outbox row: `tg1_` and 48 hex digits
/// of SHA-256 over `tollgate:v1:{kind}:{tenant}:{meter}:{source}:{date}` (52 characters, under
/// Stripe's 100). `source` is the flush id (usage) or the reconciliation's id (corrections).
pub fn identifier(kind: &str, tenant: &str, meter: &str, source: &str, date: &str) -> String {
    let digest = Sha256::digest(format!(
        "tollgate:v1:{kind}:{tenant}:{meter}:{source}:{date}"
    ));
    let hex: String = digest.iter().take(24).map(|b| format!("{b:02x}")).collect();
    format!("tg1_{hex}")
}

/// The event's timestamp for usage of `date` written at `now` (Unix seconds): `now` while it
/// is that day, else the day's last second (earlier days) or first (a later day: a clock
/// behind). Fixed when the row is written, so every retry sends the same parameters.
pub fn event_timestamp(date: &str, now: i64) -> Option<i64> {
    let start = parse_date(date)? * DAY;
    Some(now.clamp(start, start + DAY - 1))
}

/// `(date, requests)` of `snapshot`, summed over endpoints; days without requests left out.
pub fn requests_by_day(snapshot: &Snapshot) -> Vec<(String, u64)> {
    let mut days: Vec<(String, u64)> = Vec::new();
    for row in &snapshot.rows {
        match days.last_mut() {
            Some((date, sum)) if *date == row.date => {
                *sum = sum.saturating_add(row.counters.requests)
            }
            _ => days.push((row.date.clone(), row.counters.requests)),
        }
    }
    days.retain(|(_, n)| *n > 0);
    days
}

const METER: &str = "SELECT p.meter_event_name FROM tenants t JOIN plans p ON p.name = t.plan \
                     WHERE t.id = $1 AND p.billing = 'metered'";
const INSERT: &str = "INSERT INTO billing_meter_events (identifier, kind, tenant_id, flush_id, \
     usage_date, event_name, value, event_timestamp, status, created_at) \
     VALUES ($1, 'usage', $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (identifier) DO NOTHING";

/// One outbox row to insert.
struct NewRow {
    identifier: String,
    date: String,
    value: i64,
    timestamp: i64,
}

/// The rows to insert for `snapshot` when the tenant's meter is `meter`.
fn rows(snapshot: &Snapshot, meter: &str, now: i64) -> Result<Vec<NewRow>, sqlx::Error> {
    let mut out = Vec::new();
    for (date, requests) in requests_by_day(snapshot) {
        let timestamp = event_timestamp(&date, now)
            .ok_or_else(|| sqlx::Error::Protocol(format!("usage date {date:?}")))?;
        out.push(NewRow {
            identifier: identifier("usage", &snapshot.tenant, meter, &snapshot.flush_id, &date),
            date,
            value: integer(requests)?,
            timestamp,
        });
    }
    Ok(out)
}

fn status(meter: &str) -> &'static str {
    if meter.is_empty() {
        "no_meter"
    } else {
        "pending"
    }
}

fn now_seconds() -> i64 {
    i64::try_from(crate::system_clock() / 1_000_000_000).unwrap_or(i64::MAX)
}

macro_rules! write_outbox {
    ($tx:expr, $snapshot:expr, $meter_sql:expr, $insert_sql:expr) => {{
        let meter: Option<String> = sqlx::query_scalar($meter_sql)
            .bind(&$snapshot.tenant)
            .fetch_optional(&mut **$tx)
            .await?;
        let Some(meter) = meter else { return Ok(0) };
        let now = now_seconds();
        let mut written = 0;
        for row in rows($snapshot, &meter, now)? {
            written += sqlx::query($insert_sql)
                .bind(row.identifier)
                .bind(&$snapshot.tenant)
                .bind(&$snapshot.flush_id)
                .bind(row.date)
                .bind(&meter)
                .bind(row.value)
                .bind(row.timestamp)
                .bind(status(&meter))
                .bind(now)
                .execute(&mut **$tx)
                .await?
                .rows_affected();
        }
        Ok(written)
    }};
}

/// PostgreSQL: writes `snapshot`'s outbox rows in `tx` (the flush's); how many.
pub(crate) async fn postgres(
    tx: &mut Transaction<'_, Postgres>,
    snapshot: &Snapshot,
) -> Result<u64, sqlx::Error> {
    write_outbox!(tx, snapshot, METER, INSERT)
}

/// SQLite: writes `snapshot`'s outbox rows in `tx` (the flush's); how many.
pub(crate) async fn sqlite(
    tx: &mut Transaction<'_, Sqlite>,
    snapshot: &Snapshot,
) -> Result<u64, sqlx::Error> {
    write_outbox!(
        tx,
        snapshot,
        &super::sqlite_sql(METER),
        &super::sqlite_sql(INSERT)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_deterministic_short_and_distinct() {
        let a = identifier("usage", "acme", "api_requests", "f1", "2026-12-01");
        assert_eq!(
            a,
            identifier("usage", "acme", "api_requests", "f1", "2026-12-01")
        );
        assert_eq!(a.len(), 52);
        assert_ne!(
            a,
            identifier("usage", "acme", "api_requests", "f2", "2026-12-01")
        );
        assert_ne!(
            a,
            identifier("correction", "acme", "api_requests", "f1", "2026-12-01")
        );
    }

    #[test]
    fn timestamps_stay_inside_the_usage_day() {
        let start = 20_000 * DAY; // 2024-10-04
        let date = tollgate_filter::usage::format_date(20_000);
        assert_eq!(event_timestamp(&date, start + 5), Some(start + 5));
        assert_eq!(
            event_timestamp(&date, start + 3 * DAY),
            Some(start + DAY - 1)
        );
        assert_eq!(event_timestamp(&date, start - 10), Some(start));
        assert_eq!(event_timestamp("nope", 0), None);
    }
}
