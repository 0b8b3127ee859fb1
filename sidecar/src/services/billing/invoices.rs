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
//! second invoice or item). Past Stripe's 24-hour idempotency window (the plan is older than
//! 23 h) a `planned` row first looks for its invoice among the customer's invoices by metadata
//! (`tollgate_tenant`, `tollgate_period_start`), and an `invoice_created` row for its item
//! among the invoice's lines (same metadata). Finalizing an invoice that is already open counts as done.
//! A retryable answer (429, 5xx, timeout) leaves the state for the next run; any other refusal
//! makes the row `dead` with Stripe's error.

use std::collections::HashMap;

use futures_util::{StreamExt, stream};
use serde_json::Value;

use super::Pace;
use super::overage::{closed_periods, price_period};
use crate::storage::sql::billing::overage::{OverageInvoice, OverageStore};
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
        let mut plans_now = Vec::new();
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
            plans_now.push(price_period(
                tenant, customer, &plans, days, start, end, now,
            ));
        }
        for stored in store.plan_overages(&plans_now).await? {
            if stored.state == "no_overage" {
                report.no_overage += 1;
            } else {
                todo.push(stored);
            }
        }
        if crash.as_deref() == Some("planned") {
            std::process::abort();
        }
    }
    // In chunks, step by step: every invoice of the chunk one Stripe call further (a few at
    // a time, paced), then all their new states stored in one transaction. An invoice whose
    // call got a retryable answer (`last_error`) stops there for this run.
    for invoice in &mut todo {
        invoice.last_error = None;
    }
    let mut rest = todo;
    let mut todo = Vec::with_capacity(rest.len());
    while !rest.is_empty() {
        let mut batch: Vec<OverageInvoice> = rest.drain(..rest.len().min(CHUNK)).collect();
        for _ in 0..STEPS.len() {
            let (active, mut idle): (Vec<_>, Vec<_>) = batch
                .into_iter()
                .partition(|i| STEPS.contains(&i.state.as_str()) && i.last_error.is_none());
            let stepped: Vec<(String, OverageInvoice)> = stream::iter(active)
                .map(|mut invoice| async move {
                    let before = invoice.state.clone();
                    step(client, pace, &mut invoice, now).await;
                    (before, invoice)
                })
                .buffer_unordered(concurrency.max(1))
                .collect()
                .await;
            if let Some(crash) = crash.as_deref()
                && stepped
                    .iter()
                    .any(|(before, i)| i.state != *before && step_name(before) == crash)
            {
                std::process::abort();
            }
            let moved: Vec<OverageInvoice> = stepped.into_iter().map(|(_, i)| i).collect();
            store.save_overages(&moved, now).await?;
            idle.extend(moved);
            batch = idle;
        }
        todo.extend(batch);
    }
    for invoice in todo {
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

/// Invoices per chunk (one transaction per step of a chunk).
const CHUNK: usize = 500;

/// The states a Stripe call moves on.
const STEPS: [&str; 3] = ["planned", "invoice_created", "item_added"];

/// The step (`TOLLGATE_TEST_CRASH_AFTER` names) taken from `state`.
fn step_name(state: &str) -> &'static str {
    match state {
        "planned" => "invoice",
        "invoice_created" => "item",
        _ => "finalize",
    }
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

/// One Stripe call for `invoice`'s state; on success it moves to the next state with the
/// id Stripe gave, on a retryable answer it keeps its state with `last_error`, on a refusal it
/// is `dead`.
async fn step(client: &StripeClient, pace: &Pace, invoice: &mut OverageInvoice, now: i64) {
    let step = step_name(&invoice.state);
    let answer = match invoice.state.as_str() {
        "planned" => {
            let found = if now - invoice.created_at > IDEMPOTENCY_WINDOW {
                pace.acquire().await;
                find_invoice(client, invoice).await
            } else {
                None
            };
            match found {
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
                    form.extend(metadata(invoice));
                    pace.acquire().await;
                    client
                        .post("/v1/invoices", &form, &key(invoice, step))
                        .await
                }
            }
        }
        "invoice_created" => {
            let found = if now - invoice.created_at > IDEMPOTENCY_WINDOW {
                pace.acquire().await;
                find_item(client, invoice).await
            } else {
                None
            };
            if let Some(item) = found {
                invoice.item_id = Some(item);
                invoice.state = "item_added".into();
                invoice.last_error = None;
                return;
            }
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
            form.extend(metadata(invoice));
            pace.acquire().await;
            client
                .post("/v1/invoiceitems", &form, &key(invoice, step))
                .await
        }
        _ => {
            let id = invoice.invoice_id.clone().unwrap_or_default();
            pace.acquire().await;
            let path = format!("/v1/invoices/{id}/finalize");
            match client.post(&path, &[], &key(invoice, step)).await {
                Answer::Refused { error, .. } if error.contains("invoice_not_editable") => {
                    Answer::Ok(Value::Null)
                }
                other => other,
            }
        }
    };
    match answer {
        Answer::Ok(object) => {
            invoice.last_error = None;
            match step {
                "invoice" => {
                    invoice.invoice_id = id_of(&object);
                    invoice.state = "invoice_created".into();
                }
                "item" => {
                    invoice.item_id = id_of(&object);
                    invoice.state = "item_added".into();
                }
                _ => invoice.state = "finalized".into(),
            }
        }
        Answer::Retry { status, error, .. } => {
            let error = format!("{step}: {status:?}: {error} (retried at the next run)");
            tracing::warn!(tenant = %invoice.tenant, %error, "overage invoice step to be retried");
            invoice.last_error = Some(error);
        }
        Answer::Refused { status, error } => {
            let error = format!("{step}: {status}: {error}");
            tracing::error!(tenant = %invoice.tenant, %error, "overage invoice refused by Stripe");
            invoice.state = "dead".into();
            invoice.last_error = Some(error);
        }
    }
}

/// The id of the item added to `invoice`'s Stripe invoice earlier (a line with our metadata),
/// if there is one.
async fn find_item(client: &StripeClient, invoice: &OverageInvoice) -> Option<String> {
    let id = invoice.invoice_id.as_deref()?;
    let Answer::Ok(object) = client.get(&format!("/v1/invoices/{id}"), &[]).await else {
        return None;
    };
    let start = invoice.period_start.to_string();
    let lines = object.get("lines")?.get("data")?.as_array()?;
    lines.iter().find_map(|line| {
        let meta = line.get("metadata");
        let field = |name: &str| meta.and_then(|m| m.get(name)).and_then(Value::as_str);
        let ours = field("tollgate_tenant") == Some(invoice.tenant.as_str())
            && field("tollgate_period_start") == Some(start.as_str());
        let item = line
            .get("invoice_item")
            .or_else(|| line.pointer("/parent/invoice_item_details/invoice_item"))
            .and_then(Value::as_str);
        ours.then_some(item).flatten().map(str::to_owned)
    })
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
