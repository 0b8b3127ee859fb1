//! `tollgate-sidecar alerts run [--now T]`: one evaluation of the quota alerts as of `T`
//! (RFC 3339, default now), then one delivery pass of everything due, then exit. For cron jobs
//! (with no sidecar serving, or besides them: rounds and deliveries are safe to run at once)
//! and for tests of period boundaries.
//!
//! Prints a JSON summary on stdout. Exit status 0 when everything due was delivered or is
//! scheduled for a retry (the next run, or a serving sidecar, retries it when due); 1 when a
//! delivery failed for good in this run (out of retries, or a permanent refusal), or on an
//! error (the database, a bad `--now`, a bad SMTP URL).

use std::sync::Arc;

use serde_json::{Value, json};

use crate::config::{AlertsCommand, Settings};
use crate::jobs::alerts::{clock_ms, parts};
use crate::metrics::Metrics;
use crate::services::alerts::time::{parse_rfc3339, rfc3339};
use crate::storage::sql::Database;

/// Runs `command`; the summary to print and whether it succeeded.
pub async fn run(
    command: AlertsCommand,
    settings: &Settings,
    database: Database,
) -> Result<(Value, bool), String> {
    let AlertsCommand::Run { now } = command;
    let now = match now {
        Some(text) => parse_rfc3339(&text)?,
        None => crate::system_clock() / 1_000_000_000,
    };
    let store = Arc::new(database.clone());
    let (evaluator, deliverer) = parts(
        settings,
        Arc::clone(&store),
        store,
        Arc::new(Metrics::new()),
    )?;
    let evaluation = evaluator
        .evaluate(now, clock_ms())
        .await
        .map_err(|e| format!("alert evaluation failed: {e}"))?;
    let delivered = deliverer
        .deliver_due()
        .await
        .map_err(|e| format!("alert delivery failed: {e}"))?;
    let ok = delivered.failed == 0;
    Ok((
        json!({"now": rfc3339(now), "evaluation": evaluation, "deliveries": delivered}),
        ok,
    ))
}
