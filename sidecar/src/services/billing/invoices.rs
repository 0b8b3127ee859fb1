//! Closing periods: one overage invoice per (tenant, period) of `fixed` plans with
//! `overage: bill`, as a state machine stored locally in `billing_overage_invoices`:
//!
//! ```text
//! planned ──POST /v1/invoices──> invoice_created ──POST /v1/invoiceitems──> item_added
//!         ──POST /v1/invoices/{id}/finalize──> finalized
//! ```
//!
//! `planned` is written first with the amount ([`super::overage::price_period`]); the row
//! exists once per (tenant, period) (primary key), so the amount is decided once. Every Stripe
//! call carries the idempotency key `tollgate:overage:{tenant}:{period start}:{step}` and each
//! answer's id is stored with the next state. A crash after Stripe answered but before the
//! state was stored repeats the call with the same key: Stripe replays the first answer (no
//! second invoice or item). Past Stripe's 24-hour idempotency window a `planned` row first
//! looks for its invoice among the customer's invoices by metadata (`tollgate_tenant`,
//! `tollgate_period_start`). Finalizing an invoice that is already open counts as done.
//! A retryable answer (429, 5xx, timeout) leaves the state for the next run; any other refusal
//! makes the row `dead` with Stripe's error.

use std::collections::HashMap;

use futures_util::{StreamExt, stream};
use serde_json::Value;

use super::Pace;
use super::overage::{closed_periods, price_period};
use crate::storage::sql::billing::overage::{OverageInvoice, OverageStore, StateChange};
use crate::storage::sql::registry::RegistryStore;
use crate::stripe::{Answer, StripeClient};

/// Past this age (seconds) a stored idempotency key may be gone at Stripe.
const IDEMPOTENCY_WINDOW: i64 = 23 * 3_600;

/// What closing periods did.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CloseReport {
    /// Periods looked at that ended before now (stored before or planned now).
    pub periods: u64,
    /// Periods with nothing to invoice.
    pub no_overage: u64,
    /// Invoices finalized by this run.
    pub invoiced: Vec<OverageInvoice>,
    /// Invoices still on their way (a retryable error: the next run resumes them).
    pub unfinished: Vec<OverageInvoice>,
    /// One line each: dead invoices, tenants without a customer id.
    pub problems: Vec<String>,
}

/// Where a test stops the process (`TOLLGATE_TEST_CRASH_AFTER`): right after Stripe answered
/// that step, before its state is stored (`planned`: after the plan is stored).
pub type CrashAfter = Option<String>;

/// Closes every period that ended at or before `now` (Unix seconds).
pub async fn close_periods<S: OverageStore + RegistryStore>(
    store: &S,
    client: &StripeClient,
    pace: &Pace,
    concurrency: usize,
    now: i64,
    crash: &CrashAfter,
) -> Result<CloseReport, sqlx::Error> {
    let mut report = CloseReport::default();
    let tenants = store.overage_tenants().await?;
    let plans: HashMap<_, _> = store
        .plans()
        .await?
        .into_iter()
        .map(|p| (p.name.clone(), p))
        .collect();
    let stored = store.overage_invoices().await?;
    let mut todo: Vec<OverageInvoice> = Vec::new();
    let mut missing = Vec::new();
    for tenant in &tenants {
        for (start, end) in closed_periods(tenant.anchor, tenant.created_at, now) {
            report.periods += 1;
            match stored.get(&(tenant.id.clone(), start)) {
                Some(row) if row.state == "no_overage" => report.no_overage += 1,
                Some(row) if matches!(row.state.as_str(), "finalized" | "dead") => {}
                Some(row) => todo.push(row.clone()),
                None => missing.push((tenant, start, end)),
            }
        }
    }
    if let Some(first) = missing.iter().map(|(_, start, _)| *start).min() {
        let last = missing
            .iter()
            .map(|(_, _, end)| *end)
            .max()
            .unwrap_or(first);
        let day = |t: i64| tollgate_filter::usage::format_date(t.div_euclid(86_400));
        let usage = store.requests_by_day(&day(first), &day(last)).await?;
        for (tenant, start, end) in missing {
            let Some(customer) = tenant.customer.as_deref() else {
                report.problems.push(format!(
                    "tenant {:?} has no stripe_customer_id: its period from {} waits",
                    tenant.id,
                    day(start)
                ));
                continue;
            };
            let days = usage.get(&tenant.id).map_or(&[][..], Vec::as_slice);
            let plan = price_period(tenant, customer, &plans, days, start, end, now);
            let stored = store.plan_overage(&plan).await?;
            if stored.state == "no_overage" {
                report.no_overage += 1;
            } else {
                todo.push(stored);
            }
            if crash.as_deref() == Some("planned") {
                std::process::abort();
            }
        }
    }
    let mut runs = stream::iter(todo)
        .map(|invoice| advance(store, client, pace, invoice, now, crash))
        .buffer_unordered(concurrency.max(1));
    while let Some(done) = runs.next().await {
        let invoice = done?;
        match invoice.state.as_str() {
            "finalized" => report.invoiced.push(invoice),
            "dead" => report.problems.push(format!(
                "overage invoice of tenant {:?} for the period from {} is dead: {}",
                invoice.tenant,
                invoice.period_start,
                invoice.last_error.as_deref().unwrap_or("-")
            )),
            _ => report.unfinished.push(invoice),
        }
    }
    Ok(report)
}

fn key(invoice: &OverageInvoice, step: &str) -> String {
    format!(
        "tollgate:overage:{}:{}:{step}",
        invoice.tenant, invoice.period_start
    )
}

fn metadata(invoice: &OverageInvoice) -> Vec<(String, String)> {
    vec![
        ("metadata[tollgate_tenant]".into(), invoice.tenant.clone()),
        (
            "metadata[tollgate_period_start]".into(),
            invoice.period_start.to_string(),
        ),
    ]
}

fn id_of(object: &Value) -> Option<String> {
    object.get("id").and_then(Value::as_str).map(str::to_owned)
}

/// Drives one invoice from its stored state to `finalized` (or as far as Stripe lets it).
async fn advance<S: OverageStore>(
    store: &S,
    client: &StripeClient,
    pace: &Pace,
    mut invoice: OverageInvoice,
    now: i64,
    crash: &CrashAfter,
) -> Result<OverageInvoice, sqlx::Error> {
    let crash_here = |step: &str| {
        if crash.as_deref() == Some(step) {
            std::process::abort();
        }
    };
    loop {
        let (step, answer) = match invoice.state.as_str() {
            "planned" => {
                let found = if now - invoice.created_at > IDEMPOTENCY_WINDOW {
                    pace.acquire().await;
                    find_invoice(client, &invoice).await
                } else {
                    None
                };
                let answer = match found {
                    Some(object) => Answer::Ok(object),
                    None => {
                        let mut form = vec![
                            ("customer".into(), invoice.customer.clone()),
                            ("auto_advance".into(), "false".into()),
                            ("collection_method".into(), "charge_automatically".into()),
                            ("pending_invoice_items_behavior".into(), "exclude".into()),
                            (
                                "description".into(),
                                "API usage over the included quota".into(),
                            ),
                        ];
                        form.extend(metadata(&invoice));
                        pace.acquire().await;
                        client
                            .post("/v1/invoices", &form, &key(&invoice, "invoice"))
                            .await
                    }
                };
                ("invoice", answer)
            }
            "invoice_created" => {
                let mut form = vec![
                    ("customer".into(), invoice.customer.clone()),
                    (
                        "invoice".into(),
                        invoice.invoice_id.clone().unwrap_or_default(),
                    ),
                    ("amount".into(), invoice.amount.to_string()),
                    ("currency".into(), invoice.currency.clone()),
                    ("description".into(), invoice.description.clone()),
                    ("period[start]".into(), invoice.period_start.to_string()),
                    ("period[end]".into(), (invoice.period_end - 1).to_string()),
                ];
                form.extend(metadata(&invoice));
                pace.acquire().await;
                (
                    "item",
                    client
                        .post("/v1/invoiceitems", &form, &key(&invoice, "item"))
                        .await,
                )
            }
            "item_added" => {
                let id = invoice.invoice_id.clone().unwrap_or_default();
                pace.acquire().await;
                let path = format!("/v1/invoices/{id}/finalize");
                let answer = client.post(&path, &[], &key(&invoice, "finalize")).await;
                let answer = match answer {
                    Answer::Refused { error, .. } if error.contains("invoice_not_editable") => {
                        Answer::Ok(Value::Null)
                    }
                    other => other,
                };
                ("finalize", answer)
            }
            _ => return Ok(invoice),
        };
        match answer {
            Answer::Ok(object) => {
                crash_here(step);
                let (next, invoice_id, item_id) = match step {
                    "invoice" => ("invoice_created", id_of(&object), None),
                    "item" => ("item_added", None, id_of(&object)),
                    _ => ("finalized", None, None),
                };
                store
                    .set_overage_state(
                        &invoice.tenant,
                        invoice.period_start,
                        &StateChange {
                            state: next,
                            invoice_id: invoice_id.as_deref(),
                            item_id: item_id.as_deref(),
                            error: None,
                        },
                        now,
                    )
                    .await?;
                next.clone_into(&mut invoice.state);
                if invoice_id.is_some() {
                    invoice.invoice_id = invoice_id;
                }
                if item_id.is_some() {
                    invoice.item_id = item_id;
                }
            }
            Answer::Retry { status, error, .. } => {
                let error = format!("{step}: {status:?}: {error} (retried at the next run)");
                tracing::warn!(tenant = %invoice.tenant, %error, "overage invoice step to be retried");
                store
                    .set_overage_state(
                        &invoice.tenant,
                        invoice.period_start,
                        &StateChange {
                            state: &invoice.state,
                            error: Some(&error),
                            ..StateChange::default()
                        },
                        now,
                    )
                    .await?;
                return Ok(invoice);
            }
            Answer::Refused { status, error } => {
                let error = format!("{step}: {status}: {error}");
                tracing::error!(tenant = %invoice.tenant, %error, "overage invoice refused by Stripe");
                store
                    .set_overage_state(
                        &invoice.tenant,
                        invoice.period_start,
                        &StateChange {
                            state: "dead",
                            error: Some(&error),
                            ..StateChange::default()
                        },
                        now,
                    )
                    .await?;
                invoice.state = "dead".into();
                invoice.last_error = Some(error);
                return Ok(invoice);
            }
        }
    }
}

/// The customer's invoice made for `invoice` earlier (by metadata), if Stripe lists it.
async fn find_invoice(client: &StripeClient, invoice: &OverageInvoice) -> Option<Value> {
    let query = vec![
        ("customer".to_owned(), invoice.customer.clone()),
        ("limit".to_owned(), "100".to_owned()),
    ];
    let Answer::Ok(list) = client.get("/v1/invoices", &query).await else {
        return None;
    };
    let start = invoice.period_start.to_string();
    list.get("data")?
        .as_array()?
        .iter()
        .find(|i| {
            let meta = i.get("metadata");
            let field = |name: &str| meta.and_then(|m| m.get(name)).and_then(Value::as_str);
            field("tollgate_tenant") == Some(invoice.tenant.as_str())
                && field("tollgate_period_start") == Some(start.as_str())
        })
        .cloned()
}
