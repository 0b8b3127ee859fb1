//! `tollgate-sidecar billing …`: Stripe billing from the command line, on the database
//! directly. Each prints what it did as JSON on stdout; problems are one line each on stderr,
//! and the exit status is 1 when anything is dead-lettered or left unsent.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::config::{BillingCommand, Settings};
use crate::metrics::Metrics;
use crate::services::billing::invoices::close_periods;
use crate::services::billing::meter::{MeterMetrics, MeterSender};
use crate::services::billing::overage::parse_rfc3339;
use crate::services::billing::reconcile::{ReconcileMetrics, reconcile};
use crate::services::billing::{Pace, SendSettings};
use crate::storage::sql::Database;
use crate::storage::sql::billing::BillingStore as _;
use crate::stripe::StripeClient;
use crate::system_clock;

/// What a command printed and whether it went well (exit 0).
pub struct Outcome {
    /// The JSON for stdout.
    pub answer: Value,
    /// One line each for stderr; non-empty: exit status 1.
    pub problems: Vec<String>,
}

/// The sender's settings from `settings`.
pub fn send_settings(settings: &Settings) -> SendSettings {
    SendSettings {
        rate_per_second: settings.stripe_rate,
        concurrency: settings.billing_concurrency,
        lease: settings.billing_lease,
        retry_base: settings.billing_retry_base,
        ..SendSettings::default()
    }
}

/// The Stripe client `settings` describe.
pub fn client(settings: &Settings) -> Result<StripeClient, String> {
    StripeClient::new(
        &settings.stripe_api_base,
        settings.stripe_api_key.as_deref(),
        settings.stripe_timeout,
    )
    .map_err(|e| e.to_string())
}

/// Runs `command` on `database`.
pub async fn run(
    command: BillingCommand,
    settings: &Settings,
    database: Database,
) -> Result<Outcome, String> {
    match command {
        BillingCommand::Report => report(settings, database).await,
        BillingCommand::Reconcile { date } => reconcile_day(settings, database, date).await,
        BillingCommand::ClosePeriods { now } => close(settings, database, now.as_deref()).await,
    }
}

async fn report(settings: &Settings, database: Database) -> Result<Outcome, String> {
    let store = Arc::new(database);
    let failed = |e: sqlx::Error| format!("billing database: {e}");
    let mut problems = Vec::new();
    let mut no_key = None;
    let sent = match client(settings) {
        Ok(client) => {
            let metrics = Metrics::new();
            let sender = MeterSender::new(
                Arc::clone(&store),
                client,
                send_settings(settings),
                MeterMetrics::new(&metrics),
                system_clock,
            );
            Some(
                sender
                    .drain(settings.billing_report_timeout)
                    .await
                    .map_err(failed)?,
            )
        }
        Err(reason) => {
            // Without a key nothing is sent; that is a problem once something waits to be.
            no_key = Some(reason);
            None
        }
    };
    let counts = store.outbox_counts().await.map_err(failed)?;
    if let Some(reason) = no_key {
        if counts.pending + counts.no_customer + counts.no_meter > 0 {
            problems.push(reason);
        } else {
            tracing::warn!(%reason, "billing report: nothing to send");
        }
    }
    let unsent = store.unsent_rows(1_000).await.map_err(failed)?;
    for row in &unsent {
        let what = if row.status == "dead" {
            "dead-lettered"
        } else {
            "waits"
        };
        problems.push(format!(
            "meter event {} (tenant {}, {}, value {}) {what}: {}",
            row.identifier,
            row.tenant,
            row.date,
            row.value,
            row.error.as_deref().unwrap_or("-")
        ));
    }
    if counts.pending > 0 {
        problems.push(format!(
            "{} meter events are still pending: Stripe did not accept them within {:?} \
             (retried later; run billing report again)",
            counts.pending, settings.billing_report_timeout
        ));
    }
    if counts.dead > 0 {
        problems.push(format!("{} meter events are dead-lettered", counts.dead));
    }
    Ok(Outcome {
        answer: json!({"sent_now": sent, "outbox": counts, "unsent": unsent}),
        problems,
    })
}

async fn close(
    settings: &Settings,
    database: Database,
    now: Option<&str>,
) -> Result<Outcome, String> {
    let now = match now {
        Some(text) => parse_rfc3339(text).ok_or_else(|| {
            format!("--now {text:?} is not an RFC 3339 time (2026-12-01T00:00:00Z)")
        })?,
        None => i64::try_from(system_clock() / 1_000_000_000).unwrap_or(i64::MAX),
    };
    let client = client(settings)?;
    let crash = std::env::var("TOLLGATE_TEST_CRASH_AFTER").ok();
    let report = close_periods(
        &database,
        &client,
        &Pace::new(settings.stripe_rate),
        settings.billing_concurrency,
        now,
        &crash,
    )
    .await
    .map_err(|e| format!("billing database: {e}"))?;
    let mut problems = report.problems.clone();
    if !report.unfinished.is_empty() {
        problems.push(format!(
            "{} overage invoices are unfinished (Stripe answered with a retryable error): \
             run billing close-periods again",
            report.unfinished.len()
        ));
    }
    Ok(Outcome {
        answer: json!({
            "now": now,
            "periods": report.periods,
            "no_overage": report.no_overage,
            "invoiced": report.invoiced,
            "unfinished": report.unfinished,
        }),
        problems,
    })
}

/// Yesterday (UTC) as `YYYY-MM-DD`.
pub fn yesterday() -> String {
    let days = i64::try_from(system_clock() / 86_400_000_000_000).unwrap_or(0);
    tollgate_filter::usage::format_date(days - 1)
}

async fn reconcile_day(
    settings: &Settings,
    database: Database,
    date: Option<String>,
) -> Result<Outcome, String> {
    let date = date.unwrap_or_else(yesterday);
    let client = client(settings)?;
    let metrics = Metrics::new();
    let now = i64::try_from(system_clock() / 1_000_000_000).unwrap_or(i64::MAX);
    let found = reconcile(
        &database,
        &client,
        &ReconcileMetrics::new(&metrics),
        &date,
        now,
        settings.billing_reconcile_settle,
    )
    .await?;
    let corrections = found
        .results
        .iter()
        .filter(|r| r.outcome == "corrected")
        .count();
    // The corrections go out now, like `billing report`.
    let sent = if corrections > 0 {
        let sender = MeterSender::new(
            Arc::new(database),
            client,
            send_settings(settings),
            MeterMetrics::new(&metrics),
            system_clock,
        );
        Some(
            sender
                .drain(settings.billing_report_timeout)
                .await
                .map_err(|e| format!("billing database: {e}"))?,
        )
    } else {
        None
    };
    Ok(Outcome {
        answer: json!({"date": found.date, "results": found.results, "sent_now": sent}),
        problems: found.problems,
    })
}
