//! Daily reconciliation: for each metered customer and a UTC day, Stripe's event summary
//! (`GET /v1/billing/meters/{id}/event_summaries`, day window) against `api_usage_daily`'s
//! requests. Every result is recorded (`billing_reconciliations`):
//!
//! - `matched`: equal.
//! - `pending`: Stripe has less, but some of the day's meter events are not sent yet, or the
//!   latest was accepted less than `TOLLGATE_BILLING_RECONCILE_SETTLE` ago (Stripe's summaries
//!   are eventually consistent): not judged now.
//! - `corrected`: Stripe has less and everything was sent: the missing amount is written as a
//!   new outbox event (kind `correction`) in the same transaction as the result, with an
//!   identifier derived from the day and both values, so the same discrepancy is corrected
//!   once however often reconciliation runs; the sender delivers it like any other.
//! - `excess`: Stripe has more: reported (log, metric, `billing reconcile` exits 1), never
//!   "fixed" with negative events.

use std::collections::HashMap;

use metrics::Counter;

use crate::metrics::Metrics;
use crate::storage::sql::billing::overage::OverageStore;
use crate::storage::sql::billing::reconcile::{ReconcileStore, Reconciled};
use crate::stripe::{Answer, StripeClient};

const DAY: i64 = 86_400;
const RECONCILED: &str = "tollgate_billing_reconciliations_total";
const HELP: &str = "Reconciled (customer, meter, day) results: matched, corrected (a shortfall \
     sent as a correction event), excess (Stripe has more: unexplained), pending (unsent events).";

/// Reconciliation's metrics.
#[derive(Clone)]
pub struct ReconcileMetrics {
    matched: Counter,
    corrected: Counter,
    excess: Counter,
    pending: Counter,
}

impl ReconcileMetrics {
    /// Registered in `metrics`.
    pub fn new(metrics: &Metrics) -> Self {
        let outcome = |v| metrics.own_labeled_counter(RECONCILED, HELP, "outcome", v);
        ReconcileMetrics {
            matched: outcome("matched"),
            corrected: outcome("corrected"),
            excess: outcome("excess"),
            pending: outcome("pending"),
        }
    }
}

/// What one reconciliation found.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ReconcileReport {
    /// The day.
    pub date: String,
    /// Every result.
    pub results: Vec<Reconciled>,
    /// One line each: excesses, meters Stripe does not know, failed calls.
    pub problems: Vec<String>,
}

fn shown(answer: &Answer) -> String {
    match answer {
        Answer::Ok(_) => "unexpected answer".into(),
        Answer::Refused { status, error } => format!("{status}: {error}"),
        Answer::Retry { status, error, .. } => format!("{status:?}: {error}"),
    }
}

/// Reconciles `date` (`YYYY-MM-DD`) at `now` (Unix seconds); events accepted less than
/// `settle` ago make a shortfall `pending`.
pub async fn reconcile<S: ReconcileStore + OverageStore>(
    store: &S,
    client: &StripeClient,
    metrics: &ReconcileMetrics,
    date: &str,
    now: i64,
    settle: std::time::Duration,
) -> Result<ReconcileReport, String> {
    let db = |e: sqlx::Error| format!("billing database: {e}");
    let start = tollgate_filter::usage::parse_date(date)
        .ok_or_else(|| format!("{date:?} is not a date (YYYY-MM-DD)"))?
        * DAY;
    let next = tollgate_filter::usage::format_date(start / DAY + 1);
    let mut report = ReconcileReport {
        date: date.to_owned(),
        ..ReconcileReport::default()
    };
    let meters: HashMap<String, String> = client
        .meters()
        .await
        .map_err(|a| format!("Stripe meters: {}", shown(&a)))?
        .into_iter()
        .collect();
    let usage = store.requests_by_day(date, &next).await.map_err(db)?;
    for metered in store.metered_on(date).await.map_err(db)? {
        let local: u64 = usage
            .get(&metered.tenant)
            .map_or(0, |days| days.iter().map(|(_, n)| n).sum());
        let local = i64::try_from(local).unwrap_or(i64::MAX);
        let Some(meter) = meters.get(&metered.event_name) else {
            report.problems.push(format!(
                "no Stripe meter has event_name {:?} (tenant {:?})",
                metered.event_name, metered.tenant
            ));
            continue;
        };
        let summaries = match client
            .event_summaries(meter, &metered.customer, start, start + DAY)
            .await
        {
            Ok(s) => s,
            Err(answer) => {
                report.problems.push(format!(
                    "event summaries of {} for {:?}: {}",
                    metered.customer,
                    metered.tenant,
                    shown(&answer)
                ));
                continue;
            }
        };
        let stripe = summaries.iter().map(|(_, v)| v).sum::<f64>().round() as i64;
        if local == 0 && stripe == 0 {
            continue;
        }
        let outcome = if stripe == local {
            metrics.matched.increment(1);
            "matched"
        } else if stripe > local {
            metrics.excess.increment(1);
            report.problems.push(format!(
                "Stripe counts {stripe} for tenant {:?} ({}) on {date}, api_usage_daily {local}: \
                 an excess of {} left as it is (never corrected with negative events)",
                metered.tenant,
                metered.customer,
                stripe - local
            ));
            "excess"
        } else if let (unsent, latest) = store.unsent_on(&metered.tenant, date).await.map_err(db)?
            && (unsent > 0 || latest > now - i64::try_from(settle.as_secs()).unwrap_or(0))
        {
            // Unsent events, or events Stripe may not have summed yet (its summaries are
            // eventually consistent): a shortfall now would be corrected twice.
            metrics.pending.increment(1);
            "pending"
        } else {
            metrics.corrected.increment(1);
            "corrected"
        };
        let mut result = Reconciled {
            tenant: metered.tenant,
            customer: metered.customer,
            event_name: metered.event_name,
            date: date.to_owned(),
            local,
            stripe,
            outcome: outcome.into(),
            correction: None,
        };
        result.correction = store.record(&result, now).await.map_err(db)?;
        if outcome != "matched" {
            tracing::warn!(
                tenant = %result.tenant, date, local, stripe, outcome,
                "billing reconciliation found a difference"
            );
        }
        report.results.push(result);
    }
    Ok(report)
}
