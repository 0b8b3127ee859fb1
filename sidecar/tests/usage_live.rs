//! Usage as it is now: the usage API and the quota job read through `LiveUsage` (flushed rows
//! plus the live store's unflushed usage), and `/v1/usage/period` measures a registry tenant
//! against its plan's `monthly_quota` over its billing period.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use support::api::send_json;
use support::temp::TempDir;
use support::tenants::{ACME_KEY, ADMIN, CONFIG, clock};
use tollgate_filter::usage::{UsageBatch, UsageRecord};
use tollgate_sidecar::metrics::Metrics;
use tollgate_sidecar::routes::usage_query::QueryState;
use tollgate_sidecar::services::live_usage::LiveUsage;
use tollgate_sidecar::services::registry::Registry;
use tollgate_sidecar::storage::sql::{Database, UsageSink};
use tollgate_sidecar::storage::usage::{
    Counters, MemoryUsageStore, Snapshot, UsageRow, UsageStore,
};
use tollgate_sidecar::tenants::Tenants;
use tollgate_sidecar::{AppState, storage::MemoryStore};

fn batch(seq: u64, date: &str, requests: u64) -> UsageBatch {
    let mut record = UsageRecord::new("initech", Some("metered"), date, "GET /a");
    record.requests = requests;
    UsageBatch {
        sender: 1,
        seq,
        records: vec![record],
        requests: Vec::new(),
    }
}

fn flushed(date: &str, requests: u64) -> Snapshot {
    Snapshot {
        tenant: "initech".into(),
        flush_id: format!("flushed-{date}"),
        rows: vec![UsageRow {
            date: date.into(),
            endpoint: "GET /a".into(),
            plan: "metered".into(),
            counters: Counters {
                requests,
                ..Counters::default()
            },
        }],
        users: Vec::new(),
    }
}

async fn get(app: &Router, path: &str, token: &str) -> Value {
    let request = Request::get(path)
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let (status, body) = send_json(app, request).await;
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    body
}

#[tokio::test]
async fn the_usage_api_and_the_quota_job_count_unflushed_usage() {
    let dir = TempDir::new("usage-live");
    let url = format!("sqlite://{}?mode=rwc", dir.0.join("usage.db").display());
    let database = Database::connect(Some(&url)).await.unwrap();
    database.migrate().await.unwrap();
    let registry = Registry::new(Arc::new(database.clone()), clock);
    let plan = json!({"requests_per_minute": 100, "monthly_quota": 1_000, "overage": "block"});
    let plan = serde_json::from_value(plan).unwrap();
    registry.put_plan("metered", plan).await.unwrap();
    let tenant = json!({"plan": "metered", "billing_anchor_day": 15});
    let tenant = serde_json::from_value(tenant).unwrap();
    registry.put_tenant("initech", tenant).await.unwrap();
    let (_, key) = registry.create_key("initech", None).await.unwrap();

    // Flushed: 50 in the previous period (2026-10-15 … 11-14), 600 in this one; not yet
    // flushed: 300 today (2026-11-26).
    database.apply(&flushed("2026-11-10", 50)).await.unwrap();
    database.apply(&flushed("2026-11-20", 600)).await.unwrap();
    let store = Arc::new(MemoryUsageStore::new(1_000));
    store
        .ingest(&batch(1, "2026-11-26", 300), clock())
        .await
        .unwrap();
    let live = LiveUsage::new(database.clone(), Arc::clone(&store));
    let queries = QueryState::new(
        database.clone(),
        Some(Tenants::from_json(CONFIG.as_bytes()).unwrap()),
        Some(ADMIN),
        Arc::new(Metrics::new()),
        clock,
    )
    .with_registry(registry.clone())
    .with_live(live.clone());
    let state = AppState {
        clock,
        ..AppState::new(MemoryStore::new(1_000))
    };
    let app = tollgate_sidecar::app(state.with_queries(queries));

    // The billing period from the anchor day, against the plan's monthly quota.
    let body = get(&app, "/v1/usage/period", &key).await;
    assert_eq!(
        body,
        json!({
            "tenant": "initech", "plan": "metered",
            "period": { "start": "2026-11-15", "end": "2026-12-14", "today": "2026-11-26",
                        "days": 30, "days_elapsed": 12 },
            "requests": 900, "requests_per_minute": 100, "quota": 1_000,
            "quota_source": "monthly_quota", "remaining": 100, "percent_used": 90.0,
            "billing_anchor_day": 15, "overage": "block",
        })
    );
    // The other answers include the unflushed usage too.
    let daily = get(&app, "/v1/usage/daily?days=7", &key).await;
    assert_eq!(daily["totals"]["requests"], 900, "{daily}");
    assert_eq!(daily["days"][6]["requests"], 300, "{daily}");
    let endpoints = get(&app, "/v1/usage/endpoints?days=30", &key).await;
    assert_eq!(endpoints["endpoints"][0]["requests"], 950, "{endpoints}");

    // A tenant of the filter configuration only: the calendar month and the old figure.
    let body = get(&app, "/v1/usage/period", ACME_KEY).await;
    assert_eq!(body["quota_source"], "requests_per_minute", "{body}");
    assert_eq!(body["quota"], 100 * 60 * 24 * 30, "{body}");
    assert_eq!(body["period"]["start"], "2026-11-01", "{body}");

    // The quota job: 900 of 1,000, then 100 more arrive and, unflushed, use it up.
    assert_eq!(registry.refresh_quotas_from(&live).await.unwrap(), 0);
    store
        .ingest(&batch(2, "2026-11-26", 100), clock())
        .await
        .unwrap();
    assert_eq!(registry.refresh_quotas_from(&live).await.unwrap(), 1);
    let admin_view = registry.tenant("initech").await.unwrap();
    assert_eq!(admin_view["usage"]["quota_exhausted"], true, "{admin_view}");
    // Counting flushed usage only (650), the quota would not be used up yet.
    assert_eq!(registry.refresh_quotas().await.unwrap(), 1);
    let admin_view = registry.tenant("initech").await.unwrap();
    assert_eq!(
        admin_view["usage"]["quota_exhausted"], false,
        "{admin_view}"
    );
    // After the flush, both agree.
    tollgate_sidecar::services::flush::flush(&*store, &database, clock())
        .await
        .unwrap();
    assert_eq!(registry.refresh_quotas().await.unwrap(), 1);
    assert_eq!(registry.refresh_quotas_from(&live).await.unwrap(), 0);
    let body = get(&app, "/v1/usage/period", &key).await;
    assert_eq!(
        (&body["requests"], &body["remaining"]),
        (&json!(1_000), &json!(0))
    );
    database.close().await;
}
