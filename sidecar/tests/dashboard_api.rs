//! The dashboard's routes without a socket, over an in-memory SQLite database and a clock the
//! test moves: sign-in by key and by link (single use, expiry, tampering), the cookie, who may
//! read what, the JSON errors and the page's headers.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tollgate_sidecar::metrics::Metrics;
use tollgate_sidecar::routes::dashboard::{DashboardSettings, DashboardState, router};
use tollgate_sidecar::routes::tokens::TokenSet;
use tollgate_sidecar::services::dashboard::access::LinkSigner;
use tollgate_sidecar::services::registry::Registry;
use tollgate_sidecar::services::registry::input::{PlanInput, TenantInput};
use tollgate_sidecar::storage::sql::Database;
use tower::ServiceExt;

const ADMIN: &str = "admin-secret";
/// 2026-12-06 00:00 UTC, in seconds.
const START: u64 = 1_796_515_200;
static NOW: AtomicU64 = AtomicU64::new(START);

fn clock() -> u64 {
    NOW.load(Ordering::SeqCst) * 1_000_000_000
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
    fn cookie(&self) -> String {
        let set = self.headers[header::SET_COOKIE].to_str().unwrap();
        set.split(';').next().unwrap().to_owned()
    }
}

async fn send(
    app: &Router,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::from(body.to_owned())).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

async fn setup() -> (Router, String) {
    let database = Database::connect(Some("sqlite::memory:")).await.unwrap();
    database.migrate().await.unwrap();
    let registry = Registry::new(Arc::new(database.clone()), clock);
    let plan: PlanInput = serde_json::from_value(json!({
        "requests_per_minute": 100, "monthly_quota": 1000, "overage": "block",
        "billing": "none", "meter_event_name": "api_requests"
    }))
    .unwrap();
    registry.put_plan("pro", plan).await.unwrap();
    for id in ["acme", "globex"] {
        let tenant: TenantInput =
            serde_json::from_value(json!({"plan": "pro", "billing_anchor_day": 1})).unwrap();
        registry.put_tenant(id, tenant).await.unwrap();
    }
    let (_, key) = registry.create_key("acme", None).await.unwrap();
    let state = DashboardState {
        usage: Arc::new(database),
        registry,
        tenants: None,
        admin: TokenSet::parse(Some(ADMIN)),
        signer: LinkSigner::new(b"a test secret of enough length!!").unwrap(),
        settings: DashboardSettings {
            link_ttl: Duration::from_secs(60),
            ..DashboardSettings::default()
        },
        metrics: Arc::new(Metrics::new()),
        clock,
    };
    (router(state), key)
}

#[tokio::test]
async fn sign_in_links_sessions_and_who_reads_what() {
    let (app, key) = setup().await;
    let bearer = format!("Bearer {ADMIN}");

    // Nobody signed in: the form (200, with a strict CSP), JSON 401 for the data.
    let form = send(&app, "GET", "/dashboard", &[], "").await;
    assert_eq!(form.status, StatusCode::OK);
    assert!(form.body.contains(r#"action="/dashboard/sign-in""#));
    let csp = form.headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(form.headers[header::REFERRER_POLICY], "no-referrer");
    let data = send(&app, "GET", "/dashboard/data", &[], "").await;
    assert_eq!(
        (data.status, data.json()["error"].clone()),
        (StatusCode::UNAUTHORIZED, json!("unauthorized"))
    );

    // A key signs in: an HttpOnly, SameSite=Lax cookie scoped to /dashboard.
    let form_body = format!("credential={key}");
    let signed = send(
        &app,
        "POST",
        "/dashboard/sign-in",
        &[("content-type", "application/x-www-form-urlencoded")],
        &form_body,
    )
    .await;
    assert_eq!(signed.status, StatusCode::SEE_OTHER);
    assert_eq!(signed.headers[header::LOCATION], "/dashboard");
    let set = signed.headers[header::SET_COOKIE].to_str().unwrap();
    for part in [
        "tollgate_session=tgs_",
        "Path=/dashboard",
        "HttpOnly",
        "SameSite=Lax",
        "Max-Age=43200",
    ] {
        assert!(set.contains(part), "{set}");
    }
    let cookie = signed.cookie();
    let mine = send(
        &app,
        "GET",
        "/dashboard/data?tenant=globex",
        &[("cookie", &cookie)],
        "",
    )
    .await;
    assert_eq!(mine.status, StatusCode::OK);
    assert_eq!(mine.json()["tenant"], "acme");
    assert_eq!(mine.json()["days"].as_array().unwrap().len(), 30);
    assert_eq!(mine.json()["quota"]["monthly_quota"], 1000);
    let page = send(&app, "GET", "/dashboard", &[("cookie", &cookie)], "").await;
    assert!(
        page.body.contains(r#"data-testid="quota-bar""#)
            && page.body.contains(r#"aria-valuenow="0.00""#)
    );
    let overview = send(
        &app,
        "GET",
        "/dashboard/admin/data",
        &[("cookie", &cookie)],
        "",
    )
    .await;
    assert_eq!(overview.status, StatusCode::FORBIDDEN);
    let wrong = send(
        &app,
        "POST",
        "/dashboard/sign-in",
        &[],
        "credential=tg_nope",
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.headers.get(header::SET_COOKIE).is_none());

    // Links: admin only, known tenants only; once; not altered; not late.
    let refused = send(
        &app,
        "POST",
        "/v1/admin/tenants/globex/dashboard-link",
        &[],
        "",
    )
    .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    let unknown = send(
        &app,
        "POST",
        "/v1/admin/tenants/nobody/dashboard-link",
        &[("authorization", &bearer)],
        "",
    )
    .await;
    assert_eq!(
        (unknown.status, unknown.json()["error"].clone()),
        (StatusCode::NOT_FOUND, json!("not_found"))
    );
    let minted = send(
        &app,
        "POST",
        "/v1/admin/tenants/globex/dashboard-link",
        &[("authorization", &bearer)],
        "",
    )
    .await;
    assert_eq!(minted.status, StatusCode::CREATED);
    let url = minted.json()["url"].as_str().unwrap().to_owned();
    assert!(url.starts_with("/dashboard/link?token="), "{url}");
    assert_eq!(minted.json()["expires_at"], START + 60);
    let token = url.split_once("token=").unwrap().1.to_owned();
    let mut forged = token.clone().into_bytes();
    let last = forged.len() - 1;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    let altered = send(
        &app,
        "GET",
        &format!("/dashboard/link?token={forged}"),
        &[],
        "",
    )
    .await;
    assert_eq!(altered.status, StatusCode::BAD_REQUEST);
    let first = send(&app, "GET", &url, &[], "").await;
    assert_eq!(first.status, StatusCode::SEE_OTHER);
    let theirs = first.cookie();
    let again = send(&app, "GET", &url, &[], "").await;
    assert_eq!(again.status, StatusCode::GONE);
    assert!(again.body.contains("used already"));
    let globex = send(&app, "GET", "/dashboard/data", &[("cookie", &theirs)], "").await;
    assert_eq!(globex.json()["tenant"], "globex");

    let late = send(
        &app,
        "POST",
        "/v1/admin/tenants/acme/dashboard-link",
        &[("authorization", &bearer)],
        "",
    )
    .await;
    let late_url = late.json()["url"].as_str().unwrap().to_owned();
    NOW.fetch_add(60, Ordering::SeqCst);
    let expired = send(&app, "GET", &late_url, &[], "").await;
    assert_eq!(expired.status, StatusCode::GONE);
    assert!(expired.body.contains("expired"));

    // The operator: the admin token signs in to the overview; Bearer works for its JSON.
    let op = send(
        &app,
        "POST",
        "/dashboard/sign-in",
        &[],
        &format!("credential={ADMIN}"),
    )
    .await;
    assert_eq!(op.headers[header::LOCATION], "/dashboard/admin");
    let op_cookie = op.cookie();
    assert_eq!(
        send(&app, "GET", "/dashboard", &[("cookie", &op_cookie)], "")
            .await
            .status,
        StatusCode::SEE_OTHER
    );
    assert_eq!(
        send(
            &app,
            "GET",
            "/dashboard/data",
            &[("cookie", &op_cookie)],
            ""
        )
        .await
        .status,
        StatusCode::FORBIDDEN
    );
    let listed = send(
        &app,
        "GET",
        "/dashboard/admin/data",
        &[("authorization", &bearer)],
        "",
    )
    .await;
    let listed = listed.json();
    let ids: Vec<&str> = listed["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tenant"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["acme", "globex"]);

    // Sign-out ends the session on the server; sessions end by themselves after their TTL.
    let out = send(
        &app,
        "POST",
        "/dashboard/sign-out",
        &[("cookie", &cookie)],
        "",
    )
    .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert!(
        out.headers[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    assert_eq!(
        send(&app, "GET", "/dashboard/data", &[("cookie", &cookie)], "")
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(&app, "GET", "/dashboard/data", &[("cookie", &theirs)], "")
            .await
            .status,
        StatusCode::OK
    );
    NOW.fetch_add(12 * 3_600, Ordering::SeqCst);
    assert_eq!(
        send(&app, "GET", "/dashboard/data", &[("cookie", &theirs)], "")
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );

    // The assets are compiled in.
    let js = send(&app, "GET", "/dashboard/assets/dashboard.js", &[], "").await;
    assert_eq!(
        js.headers[header::CONTENT_TYPE],
        "text/javascript; charset=utf-8"
    );
    assert!(js.body.contains("/dashboard/panel"));
}
