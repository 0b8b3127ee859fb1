//! PostgreSQL: `COPY … FROM STDIN` in text format into `api_request_log`, and its daily
//! partitions `api_request_log_YYYYMMDD` (UTC days).

use std::collections::HashSet;
use std::fmt::Write as _;

use sqlx::PgPool;
use tollgate_filter::usage::{RequestLogEntry, format_date, parse_date};

use crate::storage::sql::request_log::{COLUMNS, DAY_MS, DAYS_AHEAD, day_of_ms, entry};

/// The columns `COPY` fills, in [`copy_text`] order.
const COPY: &str = "COPY api_request_log \
     (time, tenant_id, endpoint, status, bytes_in, bytes_out, latency_ms, user_hash) FROM STDIN";

/// The advisory lock partition upkeep holds (any sidecar on the database).
const PARTITION_LOCK: i64 = 0x746f_6c6c_7265_716c; // "tollreql"

/// The partitions' common prefix.
const PREFIX: &str = "api_request_log_";

/// The partition of `day` (UTC days since 1970): `api_request_log_20261126`.
pub fn partition_name(day: i64) -> String {
    format!("{PREFIX}{}", format_date(day).replace('-', ""))
}

/// The day of a partition named by [`partition_name`]; `None` for any other name.
fn partition_day(name: &str) -> Option<i64> {
    let digits = name.strip_prefix(PREFIX)?;
    if digits.len() != 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (year, rest) = digits.split_at(4);
    let (month, day) = rest.split_at(2);
    parse_date(&format!("{year}-{month}-{day}"))
}

/// Creates the partitions of `days` that do not exist yet, under [`PARTITION_LOCK`].
async fn ensure_partitions(pool: &PgPool, days: &[i64]) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(PARTITION_LOCK)
        .execute(&mut *tx)
        .await?;
    for &day in days {
        // Names and bounds are made of digits and dashes only: nothing to quote.
        let statement = format!(
            "CREATE TABLE IF NOT EXISTS {} PARTITION OF api_request_log \
             FOR VALUES FROM ('{} 00:00:00+00') TO ('{} 00:00:00+00')",
            partition_name(day),
            format_date(day),
            format_date(day + 1)
        );
        sqlx::query(&statement).execute(&mut *tx).await?;
    }
    tx.commit().await
}

/// Drops the partitions of days before `cutoff`; returns how many.
async fn drop_before(pool: &PgPool, cutoff: i64) -> Result<u64, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(PARTITION_LOCK)
        .execute(&mut *tx)
        .await?;
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent = 'api_request_log'::regclass",
    )
    .fetch_all(&mut *tx)
    .await?;
    let mut dropped = 0;
    for name in names {
        // Partitions not named by us (an operator's own) are left alone.
        if partition_day(&name).is_some_and(|day| day < cutoff) {
            sqlx::query(&format!("DROP TABLE IF EXISTS {name}"))
                .execute(&mut *tx)
                .await?;
            dropped += 1;
        }
    }
    tx.commit().await?;
    Ok(dropped)
}

/// Writes `entries` with one `COPY`; returns the rows written.
async fn copy(pool: &PgPool, entries: &[RequestLogEntry]) -> Result<u64, sqlx::Error> {
    let mut connection = pool.acquire().await?;
    let mut copy = connection.copy_in_raw(COPY).await?;
    if let Err(error) = copy.send(copy_text(entries).into_bytes()).await {
        // Tell the server, which rolls the COPY back; the send error is the one to report.
        let _ = copy.abort("tollgate: sending the batch failed").await;
        return Err(error);
    }
    copy.finish().await
}

/// Partitions for `today` and the next [`DAYS_AHEAD`] days; drops those of days before
/// `today - retention_days`; returns how many were dropped.
pub(crate) async fn maintain(
    pool: &PgPool,
    today: i64,
    retention_days: u32,
) -> Result<u64, sqlx::Error> {
    let days: Vec<i64> = (today..=today + DAYS_AHEAD).collect();
    ensure_partitions(pool, &days).await?;
    drop_before(pool, today - i64::from(retention_days)).await
}

/// Creates the partitions of the entries' days not in `known` (then adds them to it), and
/// writes `entries` with one `COPY`; returns the rows written.
pub(crate) async fn write(
    pool: &PgPool,
    entries: &[RequestLogEntry],
    known: &mut HashSet<i64>,
) -> Result<u64, sqlx::Error> {
    let mut days: Vec<i64> = entries
        .iter()
        .map(|entry| day_of_ms(entry.time_ms))
        .filter(|day| !known.contains(day))
        .collect();
    days.sort_unstable();
    days.dedup();
    if !days.is_empty() {
        ensure_partitions(pool, &days).await?;
        known.extend(days);
    }
    copy(pool, entries).await
}

/// `tenant`'s latest `limit` requests, newest first (ties: by endpoint).
pub(crate) async fn latest(
    pool: &PgPool,
    tenant: &str,
    limit: u32,
) -> Result<Vec<RequestLogEntry>, sqlx::Error> {
    let sql = format!(
        "SELECT CAST(extract(epoch FROM time) * 1000 AS bigint), {COLUMNS} \
         FROM api_request_log WHERE tenant_id = $1 \
         ORDER BY time DESC, endpoint LIMIT $2"
    );
    let rows = sqlx::query(&sql)
        .bind(tenant)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?;
    rows.iter().map(entry).collect()
}

/// The `COPY … FROM STDIN` text-format rows of `entries`: columns separated by tabs, one row
/// per line, `\N` for no user, and backslash, tab, newline and carriage return in text
/// escaped (`\` → `\\`, tab → `\t`, newline → `\n`, carriage return → `\r`).
pub fn copy_text(entries: &[RequestLogEntry]) -> String {
    let mut text = String::with_capacity(entries.len() * 96);
    for entry in entries {
        push_timestamp(&mut text, entry.time_ms);
        text.push('\t');
        escape(&mut text, &entry.tenant);
        text.push('\t');
        escape(&mut text, &entry.endpoint);
        let _ = write!(
            text,
            "\t{}\t{}\t{}\t{}\t",
            entry.status, entry.bytes_in, entry.bytes_out, entry.latency_ms
        );
        match entry.user {
            // The same 64 bits as a signed bigint.
            Some(user) => {
                let _ = write!(text, "{}", i64::from_ne_bytes(user.to_ne_bytes()));
            }
            None => text.push_str("\\N"),
        }
        text.push('\n');
    }
    text
}

/// Appends `value` escaped for the text format: `\` → `\\`, tab → `\t`, newline → `\n`,
/// carriage return → `\r` (so `\.` or `\N` in a label stay text, not end-of-data or NULL).
pub fn escape(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

/// Appends Unix milliseconds as a UTC timestamp: `2026-11-26 12:00:00.123+00`.
fn push_timestamp(out: &mut String, time_ms: u64) {
    let day = day_of_ms(time_ms);
    let ms = time_ms % DAY_MS;
    let _ = write!(
        out,
        "{} {:02}:{:02}:{:02}.{:03}+00",
        format_date(day),
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1_000 % 60,
        ms % 1_000
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(endpoint: &str, user: Option<u64>) -> RequestLogEntry {
        RequestLogEntry {
            time_ms: 1_795_694_400_123,
            tenant: "acme".into(),
            endpoint: endpoint.into(),
            status: 404,
            bytes_in: 10,
            bytes_out: 20,
            latency_ms: 7,
            user,
        }
    }

    #[test]
    fn rows_are_tab_separated_with_null_users() {
        assert_eq!(
            copy_text(&[entry("GET /a", None), entry("b", Some(u64::MAX))]),
            "2026-11-26 12:00:00.123+00\tacme\tGET /a\t404\t10\t20\t7\t\\N\n\
             2026-11-26 12:00:00.123+00\tacme\tb\t404\t10\t20\t7\t-1\n"
        );
    }

    #[test]
    fn tabs_newlines_and_backslashes_are_escaped() {
        let text = copy_text(&[entry("a\tb\nc\rd\\e", Some(5))]);
        assert_eq!(
            text,
            "2026-11-26 12:00:00.123+00\tacme\ta\\tb\\nc\\rd\\\\e\t404\t10\t20\t7\t5\n"
        );
        // A label that looks like end-of-data or NULL stays text.
        let mut out = String::new();
        escape(&mut out, "\\.");
        assert_eq!(out, "\\\\.");
        out.clear();
        escape(&mut out, "\\N");
        assert_eq!(out, "\\\\N");
        // One line per row, whatever the labels hold.
        assert_eq!(text.lines().count(), 1);
        assert_eq!(text.split('\t').count(), 8);
    }

    #[test]
    fn timestamps_are_utc_with_milliseconds() {
        let mut out = String::new();
        push_timestamp(&mut out, 0);
        assert_eq!(out, "1970-01-01 00:00:00.000+00");
        out.clear();
        push_timestamp(&mut out, 1_795_737_599_999);
        assert_eq!(out, "2026-11-26 23:59:59.999+00");
    }

    #[test]
    fn partition_names_round_trip() {
        assert_eq!(partition_name(20_783), "api_request_log_20261126");
        assert_eq!(partition_day("api_request_log_20261126"), Some(20_783));
        for other in [
            "api_request_log_2026112",
            "api_request_log_2026-11-2",
            "api_request_log_20261340",
            "api_request_log_old",
            "other_20261126",
        ] {
            assert_eq!(partition_day(other), None, "{other}");
        }
    }
}
