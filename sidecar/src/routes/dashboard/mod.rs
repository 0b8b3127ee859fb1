//! The customer dashboard, served by the sidecar itself (no CDN: the stylesheet and the small
//! script are compiled into the binary).
//!
//! - `GET /dashboard`: a tenant's page (server-rendered HTML and SVG, [`page`], [`chart`]),
//!   the operator's overview (redirect), or the sign-in form.
//! - `POST /dashboard/sign-in` (form `credential=`): an API key of the tenant (registry keys
//!   first, then the filter configuration's) or the admin token (the operator) → a session
//!   cookie and `303 /dashboard`; unknown: `401` and the form again.
//! - `GET /dashboard/link?token=…`: an operator-minted link (`POST
//!   /v1/admin/tenants/{id}/dashboard-link`, admin token; signed, expiring, single use) → a
//!   session cookie and `303 /dashboard`; used, expired or altered: `410`/`400` and a page that
//!   says which.
//! - `POST /dashboard/sign-out`: ends the session (also in the database), clears the cookie.
//! - `GET /dashboard/data`: the tenant's figures as JSON; `GET /dashboard/panel`: the part of
//!   the page the script refreshes every few seconds.
//! - `GET /dashboard/admin` (HTML) and `GET /dashboard/admin/data` (JSON): every registry tenant
//!   by share of quota used, for an operator session or `Authorization: Bearer <admin token>`.
//!
//! The session cookie (`tollgate_session`) is HttpOnly, `SameSite=Lax` (a link opened from a
//! mail must work; cross-site POSTs carry no cookie), `Path=/dashboard`, `Secure` when
//! `TOLLGATE_DASHBOARD_SECURE_COOKIE` is on. The tenant shown is the session's, never a
//! parameter. Pages carry a strict Content-Security-Policy (own script and style only) and
//! `Referrer-Policy: no-referrer`, so a link's token never leaves in a Referer.

mod answer;
pub mod chart;
pub mod format;
pub mod page;
mod sign_in;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use self::answer::{html, json_error, redirect, secure_headers, session_token, unavailable};
pub(crate) use self::sign_in::{__path_mint, mint};
use super::tokens::TokenSet;
use crate::Clock;
use crate::error::{ApiError, ErrorBody};
use crate::metrics::Metrics;
use crate::services::dashboard::access::{self, AccessError, LinkSigner};
use crate::services::dashboard::{self as service, Subject};
use crate::services::registry::Registry;
use crate::storage::sql::Database;
use crate::storage::sql::UsageQueries;
use crate::storage::sql::dashboard::SessionRole;
use crate::storage::sql::registry::RegistryStore;
use crate::tenants::Tenants;

/// The session cookie's name.
pub const COOKIE: &str = "tollgate_session";
/// The largest sign-in form accepted.
const MAX_FORM_BYTES: usize = 4 * 1024;

/// How the dashboard behaves.
#[derive(Clone, Debug)]
pub struct DashboardSettings {
    /// How long a minted link stays usable (`TOLLGATE_DASHBOARD_LINK_TTL`, default 15 min).
    pub link_ttl: Duration,
    /// How long a session lasts (`TOLLGATE_DASHBOARD_SESSION_TTL`, default 12 h).
    pub session_ttl: Duration,
    /// How often the page refreshes its figures (`TOLLGATE_DASHBOARD_REFRESH`, default 5 s).
    pub refresh: Duration,
    /// Mark the cookie `Secure` (behind HTTPS).
    pub secure_cookie: bool,
}

impl Default for DashboardSettings {
    fn default() -> Self {
        DashboardSettings {
            link_ttl: Duration::from_secs(15 * 60),
            session_ttl: Duration::from_secs(12 * 3600),
            refresh: Duration::from_secs(5),
            secure_cookie: false,
        }
    }
}

/// What the dashboard shares. `usage` is read for every figure: any [`UsageQueries`] (the
/// database, or a wrapper that adds usage not flushed yet).
pub struct DashboardState<Q> {
    /// Where usage is read.
    pub usage: Arc<Q>,
    /// The registry (tenants, plans, API keys) and the database holding sessions and links.
    pub registry: Registry<Database>,
    /// The filter configuration's tenants (their API keys sign in too).
    pub tenants: Option<Arc<Tenants>>,
    /// The admin token(s).
    pub admin: TokenSet,
    /// Signs sign-in links.
    pub signer: LinkSigner,
    /// Lifetimes and refresh.
    pub settings: DashboardSettings,
    /// The exported metrics.
    pub metrics: Arc<Metrics>,
    /// The clock (Unix nanoseconds).
    pub clock: Clock,
}

impl<Q> Clone for DashboardState<Q> {
    fn clone(&self) -> Self {
        DashboardState {
            usage: Arc::clone(&self.usage),
            registry: self.registry.clone(),
            tenants: self.tenants.clone(),
            admin: self.admin.clone(),
            signer: self.signer.clone(),
            settings: self.settings.clone(),
            metrics: Arc::clone(&self.metrics),
            clock: self.clock,
        }
    }
}

impl<Q> DashboardState<Q> {
    fn now(&self) -> u64 {
        (self.clock)() / 1_000_000_000
    }

    fn store(&self) -> &Database {
        &self.registry.store
    }
}

/// The dashboard's routes and `POST /v1/admin/tenants/{id}/dashboard-link`, with their state.
pub fn router<Q: UsageQueries>(state: DashboardState<Q>) -> Router {
    Router::new()
        .route("/dashboard", get(home::<Q>))
        .route("/dashboard/", get(home::<Q>))
        .route("/dashboard/sign-in", post(sign_in::sign_in::<Q>))
        .route("/dashboard/sign-out", post(sign_in::sign_out::<Q>))
        .route("/dashboard/link", get(sign_in::link::<Q>))
        .route("/dashboard/data", get(data::<Q>))
        .route("/dashboard/panel", get(panel::<Q>))
        .route("/dashboard/admin", get(admin_page::<Q>))
        .route("/dashboard/admin/data", get(admin_data::<Q>))
        .route("/dashboard/assets/dashboard.js", get(answer::script))
        .route("/dashboard/assets/dashboard.css", get(answer::style))
        .route("/v1/admin/tenants/{id}/dashboard-link", post(mint::<Q>))
        .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
        .with_state(state)
}

async fn who<Q>(
    state: &DashboardState<Q>,
    headers: &HeaderMap,
) -> Result<Option<SessionRole>, AccessError> {
    match session_token(headers) {
        Some(token) => access::session(state.store(), token, state.now()).await,
        None => Ok(None),
    }
}

/// What the dashboard knows about tenant `id`: the registry first, then the filter
/// configuration's tenants.
async fn subject<Q>(state: &DashboardState<Q>, id: &str) -> Result<Subject, sqlx::Error> {
    let store = state.store();
    if let Some(tenant) = store.tenant(id).await? {
        let terms = store.plan(&tenant.plan).await?;
        return Ok(Subject {
            id: tenant.id,
            plan: Some(tenant.plan),
            terms,
            anchor_day: tenant.billing_anchor_day,
        });
    }
    let known = state.tenants.as_ref().and_then(|t| t.by_id(id));
    Ok(Subject {
        id: id.to_owned(),
        plan: known.map(|t| t.plan.clone()),
        terms: None,
        anchor_day: 1,
    })
}

// ---- handlers --------------------------------------------------------------------------

async fn home<Q: UsageQueries>(
    State(state): State<DashboardState<Q>>,
    headers: HeaderMap,
) -> Response {
    match who(&state, &headers).await {
        Err(error) => unavailable(&state, error),
        Ok(None) => html(StatusCode::OK, page::sign_in(None)),
        Ok(Some(SessionRole::Operator)) => redirect("/dashboard/admin", None),
        Ok(Some(SessionRole::Tenant(id))) => {
            let figures = async {
                let subject = subject(&state, &id).await?;
                service::tenant_data(&*state.usage, &subject, state.now()).await
            };
            match figures.await {
                Ok(data) => html(StatusCode::OK, page::tenant_page(&data, refresh_ms(&state))),
                Err(error) => unavailable(&state, error),
            }
        }
    }
}

fn refresh_ms<Q>(state: &DashboardState<Q>) -> u64 {
    u64::try_from(state.settings.refresh.as_millis())
        .unwrap_or(u64::MAX)
        .max(500)
}

/// The value of `name` in a form or query string.
async fn tenant_of<Q>(state: &DashboardState<Q>, headers: &HeaderMap) -> Result<String, ApiError> {
    match who(state, headers).await {
        Ok(Some(SessionRole::Tenant(id))) => Ok(id),
        Ok(Some(SessionRole::Operator)) => Err(ApiError::Forbidden(
            "the operator session has no tenant dashboard: see /dashboard/admin/data",
        )),
        Ok(None) => Err(ApiError::Unauthorized(
            "sign in at /dashboard (session cookie missing or ended)",
        )),
        Err(AccessError::Database(error)) => Err(ApiError::Database(error)),
        Err(_) => Err(ApiError::Unauthorized("sign in at /dashboard")),
    }
}

async fn figures<Q: UsageQueries>(
    state: &DashboardState<Q>,
    headers: &HeaderMap,
) -> Result<service::DashboardData, ApiError> {
    let id = tenant_of(state, headers).await?;
    let subject = subject(state, &id).await?;
    Ok(service::tenant_data(&*state.usage, &subject, state.now()).await?)
}

#[utoipa::path(get, path = "/dashboard/data", tag = "dashboard",
    responses((status = 200, description = "the signed-in tenant's dashboard figures: period, quota, forecast, 30 days, top endpoints, active users", body = Object),
              (status = 401, description = "no live session cookie", body = ErrorBody),
              (status = 403, description = "an operator session (no tenant)", body = ErrorBody)))]
pub(crate) async fn data<Q: UsageQueries>(
    State(state): State<DashboardState<Q>>,
    headers: HeaderMap,
) -> Response {
    match figures(&state, &headers).await {
        Ok(data) => {
            let mut response = Json(data).into_response();
            secure_headers(response.headers_mut());
            response
        }
        Err(error) => json_error(&state, error),
    }
}

async fn panel<Q: UsageQueries>(
    State(state): State<DashboardState<Q>>,
    headers: HeaderMap,
) -> Response {
    match figures(&state, &headers).await {
        Ok(data) => html(StatusCode::OK, page::panel(&data, refresh_ms(&state))),
        Err(error) => json_error(&state, error),
    }
}

/// Whether the request is the operator's: an operator session or the admin bearer token.
async fn operator<Q>(state: &DashboardState<Q>, headers: &HeaderMap) -> Result<(), ApiError> {
    if !state.admin.is_empty() && state.admin.admits(headers) {
        return Ok(());
    }
    match who(state, headers).await {
        Ok(Some(SessionRole::Operator)) => Ok(()),
        Ok(Some(SessionRole::Tenant(_))) => Err(ApiError::Forbidden(
            "the overview is for the operator (admin token) only",
        )),
        Ok(None) => Err(ApiError::Unauthorized(
            "send Authorization: Bearer <admin token>, or sign in at /dashboard with it",
        )),
        Err(AccessError::Database(error)) => Err(ApiError::Database(error)),
        Err(_) => Err(ApiError::Unauthorized("sign in at /dashboard")),
    }
}

async fn admin_page<Q: UsageQueries>(
    State(state): State<DashboardState<Q>>,
    headers: HeaderMap,
) -> Response {
    match operator(&state, &headers).await {
        Ok(()) => {}
        Err(ApiError::Unauthorized(_)) => {
            return html(StatusCode::UNAUTHORIZED, page::sign_in(None));
        }
        Err(ApiError::Forbidden(why)) => {
            state.metrics.error("forbidden");
            return html(StatusCode::FORBIDDEN, page::message("Not for tenants", why));
        }
        Err(error) => return unavailable(&state, error),
    }
    let now = state.now();
    match service::overview(&*state.usage, state.store(), now).await {
        Ok(rows) => html(StatusCode::OK, page::overview(&rows, now)),
        Err(error) => unavailable(&state, error),
    }
}

#[utoipa::path(get, path = "/dashboard/admin/data", tag = "dashboard",
    responses((status = 200, description = "`{\"generated_at\", \"tenants\": [...]}`: every registry tenant, the largest share of quota used first", body = Object),
              (status = 401, description = "neither the admin token nor an operator session", body = ErrorBody)),
    security(("admin_token" = [])))]
pub(crate) async fn admin_data<Q: UsageQueries>(
    State(state): State<DashboardState<Q>>,
    headers: HeaderMap,
) -> Response {
    let answer = async {
        operator(&state, &headers).await?;
        let now = state.now();
        let rows = service::overview(&*state.usage, state.store(), now).await?;
        Ok::<_, ApiError>(Json(json!({ "generated_at": now, "tenants": rows })))
    };
    match answer.await {
        Ok(body) => body.into_response(),
        Err(error) => json_error(&state, error),
    }
}
