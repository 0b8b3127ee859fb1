//! The admin API, the registry feed and the node token, through the routers without a socket,
//! on a SQLite file.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use support::api::{call, send_json};
use tollgate_sidecar::metrics::Metrics;
use tollgate_sidecar::routes::admin::{AdminState, MAX_ADMIN_BODY_BYTES};
use tollgate_sidecar::routes::registry::FeedState;
use tollgate_sidecar::routes::tokens::{TokenSet, node_tokens};
use tollgate_sidecar::services::registry::Registry;
use tollgate_sidecar::services::registry::keys::sha256_hex;
use tollgate_sidecar::storage::MemoryStore;
use tollgate_sidecar::storage::sql::Database;
use tollgate_sidecar::{AppState, app};

const ADMIN: &str = "admin-secret";
/// 2026-12-06T12:00:00Z, Unix seconds.
const NOW: u64 = 1_796_558_400;

fn fixed() -> u64 {
    NOW * 1_000_000_000
}

async fn database(name: &str) -> Database {
    let path = std::env::temp_dir().join(format!(
        "tollgate-registry-{name}-{}.db",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&path);
    let database = Database::connect(Some(&format!("sqlite://{}?mode=rwc", path.display())))
        .await
        .unwrap();
    database.migrate().await.unwrap();
    database
}

/// The sidecar's routes with the registry's over `database`, at `clock`.
fn api(database: &Database, clock: fn() -> u64, nodes: Option<&str>) -> Router {
    let registry = Registry::new(Arc::new(database.clone()), clock);
    let metrics = Arc::new(Metrics::new());
    let admin = AdminState {
        registry: registry.clone(),
        admin: TokenSet::parse(Some(ADMIN)),
        metrics: Arc::clone(&metrics),
    };
    let feed = FeedState { registry, metrics };
    let state = AppState {
        clock,
        ..AppState::new(MemoryStore::new(100))
    };
    let router = app(state)
        .merge(tollgate_sidecar::routes::admin::router(admin))
        .merge(tollgate_sidecar::routes::registry::router(feed));
    node_tokens(router, TokenSet::parse(nodes))
}

async fn admin(app: &Router, method: &str, path: &str, body: Value) -> (StatusCode, Value) {
    call(app, method, path, Some(ADMIN), body).await
}

fn refused(answer: (StatusCode, Value), field: &str, needle: &str) {
    let (status, body) = answer;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"], "invalid_request", "{body}");
    assert_eq!(body["field"], field, "{body}");
    assert!(body["message"].as_str().unwrap().contains(needle), "{body}");
}

#[tokio::test]
async fn admin_routes_need_the_admin_token() {
    let database = database("auth").await;
    let app = api(&database, fixed, None);
    for token in [None, Some("wrong"), Some("")] {
        let (status, body) = call(&app, "GET", "/v1/admin/plans", token, Value::Null).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("unauthorized"))
        );
    }
    let (status, _) = admin(&app, "GET", "/v1/admin/plans", Value::Null).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn plans_and_tenants_are_written_checked_and_read() {
    let database = database("write").await;
    let app = api(&database, fixed, None);
    let pro = json!({"requests_per_minute": 1000, "monthly_quota": 100000, "overage": "block",
                     "overage_price": {"per": 1000, "amount": 50, "currency": "usd"},
                     "billing": "fixed"});
    let (status, plan) = admin(&app, "PUT", "/v1/admin/plans/pro", pro.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{plan}");
    assert_eq!(plan["meter_event_name"], "api_requests");
    assert_eq!(
        admin(&app, "PUT", "/v1/admin/plans/pro", pro).await.0,
        StatusCode::OK
    );
    refused(
        admin(
            &app,
            "PUT",
            "/v1/admin/plans/x",
            json!({"requests_per_minute": 0}),
        )
        .await,
        "requests_per_minute",
        "at least 1",
    );
    refused(
        admin(
            &app,
            "PUT",
            "/v1/admin/plans/bad%20name",
            json!({"requests_per_minute": 1}),
        )
        .await,
        "name",
        "letters",
    );
    refused(
        admin(&app, "PUT", "/v1/admin/plans/x", json!({"requests_per_minute": 1, "overage_price": {"per": 1, "amount": 1, "currency": "US"}})).await,
        "overage_price.currency", "ISO 4217",
    );
    let (status, body) = admin(
        &app,
        "PUT",
        "/v1/admin/plans/x",
        json!({"requests_per_minute": 1, "colour": 1}),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_request")),
        "{body}"
    );
    assert!(
        body["message"].as_str().unwrap().contains("colour"),
        "{body}"
    );
    let huge =
        json!({"requests_per_minute": 1, "meter_event_name": "x".repeat(MAX_ADMIN_BODY_BYTES)});
    let (status, body) = admin(&app, "PUT", "/v1/admin/plans/x", huge).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large")),
        "{body}"
    );

    let acme = json!({"plan": "pro", "billing_anchor_day": 15,
                      "alerts": {"webhook_url": "https://hooks.example.com/t", "email": "ops@acme.io"}});
    let (status, tenant) = admin(&app, "PUT", "/v1/admin/tenants/acme", acme.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{tenant}");
    assert!(
        tenant["webhook_secret"]
            .as_str()
            .unwrap()
            .starts_with("whsec_"),
        "{tenant}"
    );
    assert_eq!(tenant["alerts"]["thresholds"], json!([80, 100]));
    let (status, tenant) = admin(&app, "PUT", "/v1/admin/tenants/acme", acme).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        tenant.get("webhook_secret").is_none(),
        "shown the first time only: {tenant}"
    );
    for (body, field, needle) in [
        (json!({"plan": "gold"}), "plan", "unknown plan \"gold\""),
        (
            json!({"plan": "pro", "billing_anchor_day": 29}),
            "billing_anchor_day",
            "29 is not a day from 1 to 28",
        ),
        (
            json!({"plan": "pro", "alerts": {"webhook_url": "ftp://x"}}),
            "alerts.webhook_url",
            "http",
        ),
        (
            json!({"plan": "pro", "alerts": {"email": "nobody"}}),
            "alerts.email",
            "not an e-mail",
        ),
        (
            json!({"plan": "pro", "alerts": {"thresholds": [100, 80]}}),
            "alerts.thresholds",
            "increasing",
        ),
        (
            json!({"plan": "pro", "stripe_customer_id": "acme"}),
            "stripe_customer_id",
            "cus_",
        ),
    ] {
        refused(
            admin(&app, "PUT", "/v1/admin/tenants/beta", body).await,
            field,
            needle,
        );
    }
    let (status, tenant) = admin(&app, "GET", "/v1/admin/tenants/acme", Value::Null).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(tenant["period"]["first_day"], "2026-11-15", "{tenant}");
    assert_eq!(tenant["period"]["end_day"], "2026-12-15", "{tenant}");
    assert_eq!(
        tenant["usage"],
        json!({"requests": 0, "monthly_quota": 100000, "quota_exhausted": false})
    );
    assert_eq!(tenant["plan_details"]["requests_per_minute"], 1000);
    let (status, body) = admin(&app, "GET", "/v1/admin/tenants/nobody", Value::Null).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (_, list) = admin(
        &app,
        "GET",
        "/v1/admin/tenants?prefix=ac&limit=10",
        Value::Null,
    )
    .await;
    assert_eq!(list["tenants"][0]["id"], "acme", "{list}");
    let (status, _) = admin(&app, "GET", "/v1/admin/tenants?limit=0", Value::Null).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

/// The registry's versions, read from the feed.
async fn feed(app: &Router, since: u64) -> Value {
    let (status, body) = call(
        app,
        "GET",
        &format!("/v1/registry?since={since}"),
        None,
        Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    serde_json::from_value::<tollgate_filter::registry::RegistryFeed>(body.clone()).unwrap();
    body
}

#[tokio::test]
async fn keys_are_shown_once_and_the_feed_carries_changes() {
    let database = database("keys").await;
    let app = api(&database, fixed, None);
    admin(
        &app,
        "PUT",
        "/v1/admin/plans/free",
        json!({"requests_per_minute": 60}),
    )
    .await;
    admin(
        &app,
        "PUT",
        "/v1/admin/tenants/acme",
        json!({"plan": "free"}),
    )
    .await;
    let (status, created) = admin(&app, "POST", "/v1/admin/tenants/acme/keys", Value::Null).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let key = created["key"].as_str().unwrap().to_owned();
    let key_id = created["key_id"].as_str().unwrap().to_owned();
    assert!(key.starts_with("tg_") && key.len() >= 3 + 22, "{key}");
    let (_, keys) = admin(&app, "GET", "/v1/admin/tenants/acme/keys", Value::Null).await;
    assert!(!keys.to_string().contains(&key), "{keys}");
    assert_eq!(keys["keys"][0]["prefix"], key[..11]);
    refused(
        admin(
            &app,
            "POST",
            "/v1/admin/tenants/acme/keys",
            json!({"expires_at": NOW}),
        )
        .await,
        "expires_at",
        "later than now",
    );
    assert_eq!(
        admin(&app, "POST", "/v1/admin/tenants/ghost/keys", Value::Null)
            .await
            .0,
        StatusCode::NOT_FOUND
    );

    let full = feed(&app, 0).await;
    assert_eq!(full["full"], true);
    assert_eq!(
        full["keys"],
        json!([{"sha256": sha256_hex(&key), "tenant": "acme", "expires_at": null}])
    );
    assert_eq!(
        full["tenants"][0]["period_start"], 1_796_083_200,
        "2026-12-01"
    );
    let version = full["version"].as_u64().unwrap();
    assert_eq!(version, 3);
    let same = feed(&app, version).await;
    assert_eq!(
        (same["full"].as_bool(), same["version"].as_u64()),
        (Some(false), Some(version))
    );
    assert_eq!(same["keys"], json!([]));
    assert_eq!(
        feed(&app, version + 10).await["full"],
        true,
        "a version from another database"
    );

    let (status, body) = admin(
        &app,
        "DELETE",
        &format!("/v1/admin/keys/{key_id}"),
        Value::Null,
    )
    .await;
    assert_eq!((status, body), (StatusCode::NO_CONTENT, Value::Null));
    assert_eq!(
        admin(&app, "DELETE", "/v1/admin/keys/key_nope", Value::Null)
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    admin(
        &app,
        "PUT",
        "/v1/admin/plans/free",
        json!({"requests_per_minute": 120}),
    )
    .await;
    let delta = feed(&app, version).await;
    assert_eq!(delta["full"], false);
    assert_eq!(delta["removed_keys"], json!([sha256_hex(&key)]));
    assert_eq!(delta["plans"][0]["requests_per_minute"], 120);
    assert_eq!(delta["version"], version + 2);

    let (_, second) = admin(&app, "POST", "/v1/admin/tenants/acme/keys", Value::Null).await;
    let second_id = second["key_id"].as_str().unwrap();
    let (status, rotated) = admin(
        &app,
        "POST",
        &format!("/v1/admin/keys/{second_id}/rotate"),
        json!({"overlap_seconds": 3600}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{rotated}");
    assert_eq!(rotated["previous_expires_at"], NOW + 3600);
    let full = feed(&app, 0).await;
    let expiries: Vec<_> = full["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["expires_at"].clone())
        .collect();
    assert_eq!(expiries.len(), 2, "{full}");
    assert!(
        expiries.contains(&json!(NOW + 3600)) && expiries.contains(&Value::Null),
        "{full}"
    );
    let (status, _) = call(&app, "GET", "/v1/registry?since=x", None, Value::Null).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

static QUOTA_NOW: AtomicU64 = AtomicU64::new(NOW);

fn moving() -> u64 {
    QUOTA_NOW.load(Ordering::SeqCst) * 1_000_000_000
}

#[tokio::test]
async fn a_used_up_quota_is_in_the_feed_until_the_next_period() {
    let database = database("quota").await;
    let app = api(&database, moving, None);
    admin(
        &app,
        "PUT",
        "/v1/admin/plans/tiny",
        json!({"requests_per_minute": 60, "monthly_quota": 5}),
    )
    .await;
    admin(
        &app,
        "PUT",
        "/v1/admin/plans/billed",
        json!({"requests_per_minute": 60, "monthly_quota": 5, "overage": "bill"}),
    )
    .await;
    admin(
        &app,
        "PUT",
        "/v1/admin/tenants/acme",
        json!({"plan": "tiny", "billing_anchor_day": 7}),
    )
    .await;
    admin(
        &app,
        "PUT",
        "/v1/admin/tenants/bill",
        json!({"plan": "billed", "billing_anchor_day": 7}),
    )
    .await;
    let Database::Sqlite(pool) = &database else {
        panic!()
    };
    for tenant in ["acme", "bill"] {
        sqlx::query("INSERT INTO api_usage_daily (tenant_id, date, endpoint, requests) VALUES ($1, '2026-12-06', 'GET /', 5)")
            .bind(tenant)
            .execute(pool)
            .await
            .unwrap();
    }
    let registry = Registry::new(Arc::new(database.clone()), moving);
    let before = feed(&app, 0).await["version"].as_u64().unwrap();
    assert_eq!(registry.refresh_quotas().await.unwrap(), 1);
    assert_eq!(
        registry.refresh_quotas().await.unwrap(),
        0,
        "unchanged: no new version"
    );
    let delta = feed(&app, before).await;
    assert_eq!(delta["tenants"].as_array().unwrap().len(), 1, "{delta}");
    assert_eq!(delta["tenants"][0]["id"], "acme");
    assert_eq!(delta["tenants"][0]["quota_exhausted"], true);
    assert_eq!(
        delta["tenants"][0]["period_end"], 1_796_601_600,
        "2026-12-07"
    );
    let (_, tenant) = admin(&app, "GET", "/v1/admin/tenants/acme", Value::Null).await;
    assert_eq!(tenant["usage"]["requests"], 5);
    // 2026-12-07: a new period, the quota is back.
    QUOTA_NOW.store(1_796_601_600, Ordering::SeqCst);
    let version = feed(&app, 0).await["version"].as_u64().unwrap();
    assert_eq!(registry.refresh_quotas().await.unwrap(), 1);
    let delta = feed(&app, version).await;
    assert_eq!(delta["tenants"][0]["quota_exhausted"], false, "{delta}");
    assert_eq!(delta["tenants"][0]["period_start"], 1_796_601_600);
}

#[tokio::test]
async fn node_tokens_guard_the_filter_routes_only() {
    let database = database("nodes").await;
    let app = api(&database, fixed, Some("node-a, node-b"));
    let check =
        json!({"rule":"r","key":1,"algorithm":"fixed_window","limit":1,"window_ns":1000000000});
    for path in ["/v1/check", "/v1/registry", "/v1/stats"] {
        let (method, body) = match path {
            "/v1/check" => ("POST", check.clone()),
            "/v1/stats" => ("POST", json!({"sender": 1, "rules": []})),
            _ => ("GET", Value::Null),
        };
        let (status, answer) = call(&app, method, path, None, body.clone()).await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("unauthorized")),
            "{path}"
        );
        assert_eq!(
            call(&app, method, path, Some("node-c"), body.clone())
                .await
                .0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            call(&app, method, path, Some(ADMIN), body.clone()).await.0,
            StatusCode::UNAUTHORIZED
        );
        for token in ["node-a", "node-b"] {
            let expected = if path == "/v1/stats" {
                StatusCode::NO_CONTENT
            } else {
                StatusCode::OK
            };
            assert_eq!(
                call(&app, method, path, Some(token), body.clone()).await.0,
                expected,
                "{path} {token}"
            );
        }
    }
    let (status, _) = send_json(&app, Request::get("/healthz").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK, "health stays open");
    let open = api(&database, fixed, None);
    assert_eq!(
        call(&open, "POST", "/v1/check", None, check).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_openapi_document_names_every_route() {
    let app = tollgate_sidecar::routes::openapi::router();
    let (status, doc) = call(&app, "GET", "/v1/openapi.json", None, Value::Null).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with('3'), "{doc}");
    for path in [
        "/v1/admin/plans/{name}",
        "/v1/admin/tenants/{id}",
        "/v1/admin/tenants/{id}/keys",
        "/v1/admin/keys/{key_id}",
        "/v1/admin/keys/{key_id}/rotate",
        "/v1/admin/tenants/{id}/alerts",
        "/v1/registry",
        "/v1/usage/daily",
        "/v1/usage/period",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing");
    }
    let body = &doc["paths"]["/v1/admin/tenants/{id}"]["put"]["requestBody"];
    assert!(body.to_string().contains("TenantInput"), "{body}");
    assert!(doc["components"]["schemas"]["PlanInput"]["properties"]["monthly_quota"].is_object());
    assert_eq!(
        doc["components"]["securitySchemes"]["admin_token"]["scheme"],
        "bearer"
    );
}
