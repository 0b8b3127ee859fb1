//! `DELETE /v1/admin/tenants/{id}` and the pruned change log, through the admin API and the
//! registry feed: the tenant and its keys leave the feed (as removals in a delta, absent from
//! a full snapshot), its usage stays, and a feed asked `since` a pruned version gets the
//! whole registry.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use serde_json::{Value, json};
use support::api::call;
use support::temp::TempDir;
use tollgate_sidecar::metrics::Metrics;
use tollgate_sidecar::routes::admin::AdminState;
use tollgate_sidecar::routes::registry::FeedState;
use tollgate_sidecar::routes::tokens::TokenSet;
use tollgate_sidecar::services::registry::Registry;
use tollgate_sidecar::services::registry::keys::sha256_hex;
use tollgate_sidecar::storage::sql::registry::RegistryStore;
use tollgate_sidecar::storage::sql::{Database, UsageQueries, UsageSink};
use tollgate_sidecar::storage::usage::{Counters, Snapshot, UsageRow};

const ADMIN: &str = "admin-secret";

fn clock() -> u64 {
    1_796_558_400 * 1_000_000_000
}

fn api(database: &Database) -> Router {
    let registry = Registry::new(Arc::new(database.clone()), clock);
    let metrics = Arc::new(Metrics::new());
    let admin = AdminState {
        registry: registry.clone(),
        admin: TokenSet::parse(Some(ADMIN)),
        metrics: Arc::clone(&metrics),
    };
    let feed = FeedState { registry, metrics };
    tollgate_sidecar::routes::admin::router(admin)
        .merge(tollgate_sidecar::routes::registry::router(feed))
}

async fn admin(app: &Router, method: &str, path: &str, body: Value) -> (StatusCode, Value) {
    call(app, method, path, Some(ADMIN), body).await
}

#[tokio::test]
async fn a_deleted_tenant_leaves_the_feed_and_keeps_its_usage() {
    let dir = TempDir::new("registry-delete");
    let url = format!("sqlite://{}?mode=rwc", dir.0.join("registry.db").display());
    let database = Database::connect(Some(&url)).await.unwrap();
    database.migrate().await.unwrap();
    let app = api(&database);
    let plan = json!({"requests_per_minute": 60, "monthly_quota": 1_000});
    assert_eq!(
        admin(&app, "PUT", "/v1/admin/plans/free", plan).await.0,
        StatusCode::CREATED
    );
    for id in ["acme", "globex"] {
        let tenant = json!({"plan": "free"});
        let path = format!("/v1/admin/tenants/{id}");
        assert_eq!(
            admin(&app, "PUT", &path, tenant).await.0,
            StatusCode::CREATED
        );
    }
    let (status, created) = admin(&app, "POST", "/v1/admin/tenants/acme/keys", Value::Null).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let acme_key = created["key"].as_str().unwrap().to_owned();
    let (_, created) = admin(&app, "POST", "/v1/admin/tenants/globex/keys", Value::Null).await;
    let globex_key = created["key"].as_str().unwrap().to_owned();
    let usage = Snapshot {
        tenant: "acme".into(),
        flush_id: "f1".into(),
        rows: vec![UsageRow {
            date: "2026-12-01".into(),
            endpoint: "GET /a".into(),
            plan: "free".into(),
            counters: Counters {
                requests: 42,
                ..Counters::default()
            },
        }],
        users: Vec::new(),
    };
    database.apply(&usage).await.unwrap();
    let (_, feed) = call(&app, "GET", "/v1/registry?since=0", None, Value::Null).await;
    let version = feed["version"].as_u64().unwrap();

    // Only with the admin token; then 204, then 404.
    let (status, _) = call(&app, "DELETE", "/v1/admin/tenants/acme", None, Value::Null).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        admin(&app, "DELETE", "/v1/admin/tenants/acme", Value::Null).await,
        (StatusCode::NO_CONTENT, Value::Null)
    );
    let (status, body) = admin(&app, "DELETE", "/v1/admin/tenants/acme", Value::Null).await;
    assert_eq!(
        (status, &body["error"]),
        (StatusCode::NOT_FOUND, &json!("not_found")),
        "{body}"
    );
    let (status, _) = admin(&app, "GET", "/v1/admin/tenants/acme", Value::Null).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // The delta names the tenant and its key as removed; a full snapshot has neither.
    let (_, delta) = call(
        &app,
        "GET",
        &format!("/v1/registry?since={version}"),
        None,
        Value::Null,
    )
    .await;
    assert_eq!(delta["full"], false, "{delta}");
    assert_eq!(delta["removed_tenants"], json!(["acme"]), "{delta}");
    assert_eq!(
        delta["removed_keys"],
        json!([sha256_hex(&acme_key)]),
        "{delta}"
    );
    let (_, full) = call(&app, "GET", "/v1/registry?since=0", None, Value::Null).await;
    let tenants: Vec<&Value> = full["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| &t["id"])
        .collect();
    assert_eq!(tenants, [&json!("globex")], "{full}");
    let keys: Vec<&Value> = full["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| &k["sha256"])
        .collect();
    assert_eq!(keys, [&json!(sha256_hex(&globex_key))], "{full}");

    // Its usage stays.
    let rows = database
        .daily_rows("acme", "2026-12-01", "2026-12-31")
        .await
        .unwrap();
    assert_eq!(rows.iter().map(|r| r.counts.requests).sum::<u64>(), 42);

    // A feed asked since a version older than the oldest change kept: the whole registry.
    let newest = delta["version"].as_u64().unwrap();
    assert!(database.prune_changes(1).await.unwrap() > 0);
    let (_, behind) = call(
        &app,
        "GET",
        &format!("/v1/registry?since={version}"),
        None,
        Value::Null,
    )
    .await;
    assert_eq!(
        (&behind["full"], &behind["version"]),
        (&json!(true), &json!(newest)),
        "{behind}"
    );
    let (_, current) = call(
        &app,
        "GET",
        &format!("/v1/registry?since={}", newest - 1),
        None,
        Value::Null,
    )
    .await;
    assert_eq!(current["full"], false, "{current}");
    database.close().await;
}
