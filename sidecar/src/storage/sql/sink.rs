//! Step 2 of the flush: one staged [`Snapshot`](crate::storage::usage::Snapshot) added into the usage database in ONE
//! transaction, together with its flush id in `usage_flushes`.
//!
//! The id is inserted first (`ON CONFLICT DO NOTHING`): when it is already there — the snapshot
//! was applied by an earlier, interrupted flush, or by another sidecar's flush right now (in
//! PostgreSQL the second insert waits for the first transaction and then sees its row) — the
//! transaction is rolled back and nothing is added. Otherwise every row is added with an
//! additive upsert (`requests = api_usage_daily.requests + excluded.requests`, the latency
//! histogram element by element) — many rows per statement: PostgreSQL unnests column arrays
//! (`INSERT … SELECT … FROM UNNEST($2::text[], …)`), SQLite takes multi-row `VALUES` (under
//! its parameter limit); the day's distinct users with `GREATEST`/`max` (a running
//! HyperLogLog count, not an increment); and the whole commits at once. The SQL of each
//! database is in its own module (`postgres/sink.rs`, `sqlite/sink.rs`); what they share is
//! here.

use tollgate_filter::usage::LATENCY_BUCKETS;

use crate::storage::usage::UsageRow;

/// What [`UsageSink::apply`](super::UsageSink::apply) did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The snapshot's rows were added and its id recorded.
    Now,
    /// Its id was already recorded: nothing was added again.
    Before,
}

/// The scalar counters of `row` as SQL integers, in column order.
pub(crate) fn scalars(row: &UsageRow) -> Result<[i64; 6], sqlx::Error> {
    let c = &row.counters;
    let mut out = [0; 6];
    for (slot, value) in out.iter_mut().zip([
        c.requests,
        c.bytes_in,
        c.bytes_out,
        c.errors_4xx,
        c.errors_5xx,
        c.latency_ms_sum,
    ]) {
        *slot = integer(value)?;
    }
    Ok(out)
}

pub(crate) fn integer(value: u64) -> Result<i64, sqlx::Error> {
    i64::try_from(value).map_err(|_| sqlx::Error::Protocol(format!("{value} exceeds bigint")))
}

pub(crate) fn buckets(row: &UsageRow) -> Result<Vec<i64>, sqlx::Error> {
    row.counters
        .latency_buckets
        .iter()
        .map(|&n| integer(n))
        .collect()
}

const COUNTER_COLUMNS: [&str; 6] = [
    "requests",
    "bytes_in",
    "bytes_out",
    "errors_4xx",
    "errors_5xx",
    "latency_ms_sum",
];

/// `requests = api_usage_daily.requests + excluded.requests, …`
fn additions() -> String {
    COUNTER_COLUMNS
        .iter()
        .map(|c| format!("{c} = api_usage_daily.{c} + excluded.{c}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `plan = …, requests = api_usage_daily.requests + excluded.requests, …, latency_buckets =
/// <element by element>, updated_at = <now>`: what a conflicting row gets.
pub(crate) fn on_conflict(postgres: bool) -> String {
    let sum_buckets = (0..LATENCY_BUCKETS)
        .map(|i| {
            if postgres {
                let n = i + 1; // PostgreSQL arrays count from 1
                format!(
                    "coalesce(api_usage_daily.latency_buckets[{n}], 0) + \
                     excluded.latency_buckets[{n}]"
                )
            } else {
                format!(
                    "coalesce(json_extract(api_usage_daily.latency_buckets, '$[{i}]'), 0) + \
                     json_extract(excluded.latency_buckets, '$[{i}]')"
                )
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    let (buckets, now) = if postgres {
        (format!("ARRAY[{sum_buckets}]"), "now()")
    } else {
        (
            format!("json_array({sum_buckets})"),
            "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
        )
    };
    format!(
        "ON CONFLICT (tenant_id, date, endpoint) DO UPDATE SET \
         plan = CASE WHEN excluded.plan = '' THEN api_usage_daily.plan ELSE excluded.plan END, \
         {}, latency_buckets = {buckets}, updated_at = {now}",
        additions()
    )
}

pub(crate) const COLUMNS: &str = "INSERT INTO api_usage_daily (tenant_id, date, endpoint, plan, requests, \
                       bytes_in, bytes_out, errors_4xx, errors_5xx, latency_ms_sum, \
                       latency_buckets, updated_at)";
