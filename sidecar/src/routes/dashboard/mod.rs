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

pub mod chart;
pub mod page;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use super::tokens::TokenSet;
use super::usage_query::percent_decode;
use crate::Clock;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::routes::openapi::ErrorBody;
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
        .route("/dashboard/sign-in", post(sign_in::<Q>))
        .route("/dashboard/sign-out", post(sign_out::<Q>))
        .route("/dashboard/link", get(link::<Q>))
        .route("/dashboard/data", get(data::<Q>))
        .route("/dashboard/panel", get(panel::<Q>))
        .route("/dashboard/admin", get(admin_page::<Q>))
        .route("/dashboard/admin/data", get(admin_data::<Q>))
        .route("/dashboard/assets/dashboard.js", get(script))
        .route("/dashboard/assets/dashboard.css", get(style))
        .route("/v1/admin/tenants/{id}/dashboard-link", post(mint::<Q>))
        .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
        .with_state(state)
}

// ---- answers ---------------------------------------------------------------------------

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

fn html(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure_headers(headers);
    response
}

fn secure_headers(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

fn redirect(to: &'static str, cookie: Option<String>) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, HeaderValue::from_static(to));
    secure_headers(headers);
    if let Some(value) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        headers.insert(header::SET_COOKIE, value);
    }
    response
}

fn json_error<Q>(state: &DashboardState<Q>, error: ApiError) -> Response {
    let mut response = super::fail(&state.metrics, error).into_response();
    secure_headers(response.headers_mut());
    response
}

/// A database or random-source failure on an HTML route: logged, a 503 page.
fn unavailable<Q>(state: &DashboardState<Q>, error: impl std::fmt::Display) -> Response {
    tracing::error!(%error, "dashboard: cannot answer");
    state.metrics.error("database_unavailable");
    html(
        StatusCode::SERVICE_UNAVAILABLE,
        page::message(
            "Try again shortly",
            "The usage database cannot answer now; retry in a moment.",
        ),
    )
}

fn cookie_value<Q>(state: &DashboardState<Q>, token: &str) -> String {
    format!(
        "{COOKIE}={token}; Path=/dashboard; HttpOnly; SameSite=Lax; Max-Age={}{}",
        state.settings.session_ttl.as_secs(),
        if state.settings.secure_cookie {
            "; Secure"
        } else {
            ""
        }
    )
}

fn cleared_cookie() -> String {
    format!("{COOKIE}=; Path=/dashboard; HttpOnly; SameSite=Lax; Max-Age=0")
}

/// The session token the request's cookies carry, if any.
fn session_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, value)| *name == COOKIE && !value.is_empty())
        .map(|(_, value)| value)
}

/// Who the request's session signs in (`None`: no live session).
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
fn field(raw: &str, name: &str) -> Option<String> {
    raw.split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .and_then(|(_, value)| percent_decode(value))
}

async fn sign_in<Q: UsageQueries>(
    State(state): State<DashboardState<Q>>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let credential = body
        .ok()
        .and_then(|bytes| String::from_utf8(bytes.to_vec()).ok())
        .and_then(|text| field(&text, "credential"))
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty());
    let Some(credential) = credential else {
        state.metrics.error("unauthorized");
        return html(
            StatusCode::UNAUTHORIZED,
            page::sign_in(Some("Enter an API key.")),
        );
    };
    let role = match role_of(&state, &credential).await {
        Ok(Some(role)) => role,
        Ok(None) => {
            state.metrics.error("unauthorized");
            return html(
                StatusCode::UNAUTHORIZED,
                page::sign_in(Some("That key is not a valid API key.")),
            );
        }
        Err(error) => return unavailable(&state, error),
    };
    let ttl = state.settings.session_ttl.as_secs();
    match access::start_session(state.store(), &role, state.now(), ttl).await {
        Ok(token) => {
            let to = match role {
                SessionRole::Operator => "/dashboard/admin",
                SessionRole::Tenant(_) => "/dashboard",
            };
            redirect(to, Some(cookie_value(&state, &token)))
        }
        Err(error) => unavailable(&state, error),
    }
}

/// The role `credential` signs in: the admin token (operator), a live registry key, or a key
/// of the filter configuration (that tenant).
async fn role_of<Q>(
    state: &DashboardState<Q>,
    credential: &str,
) -> Result<Option<SessionRole>, crate::services::registry::RegistryError> {
    let mut bearer = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(&format!("Bearer {credential}")) {
        bearer.insert(header::AUTHORIZATION, value);
    }
    if state.admin.admits(&bearer) {
        return Ok(Some(SessionRole::Operator));
    }
    if let Some(info) = state.registry.tenant_of_key(credential).await? {
        return Ok(Some(SessionRole::Tenant(info.id)));
    }
    Ok(state
        .tenants
        .as_ref()
        .and_then(|t| t.by_key(credential))
        .map(|info| SessionRole::Tenant(info.id.clone())))
}

async fn link<Q: UsageQueries>(
    State(state): State<DashboardState<Q>>,
    RawQuery(raw): RawQuery,
) -> Response {
    let token = raw
        .as_deref()
        .and_then(|q| field(q, "token"))
        .unwrap_or_default();
    let now = state.now();
    let refused = |status, error: &AccessError| {
        state.metrics.error("invalid_link");
        html(
            status,
            page::message("This link cannot be used", &error.to_string()),
        )
    };
    let tenant = match access::use_link(state.store(), &state.signer, &token, now).await {
        Ok(tenant) => tenant,
        Err(error @ AccessError::InvalidLink) => return refused(StatusCode::BAD_REQUEST, &error),
        Err(error @ (AccessError::ExpiredLink | AccessError::UsedLink)) => {
            return refused(StatusCode::GONE, &error);
        }
        Err(error) => return unavailable(&state, error),
    };
    let ttl = state.settings.session_ttl.as_secs();
    match access::start_session(state.store(), &SessionRole::Tenant(tenant), now, ttl).await {
        Ok(token) => redirect("/dashboard", Some(cookie_value(&state, &token))),
        Err(error) => unavailable(&state, error),
    }
}

async fn sign_out<Q: UsageQueries>(
    State(state): State<DashboardState<Q>>,
    headers: HeaderMap,
) -> Response {
    if let Some(token) = session_token(&headers)
        && let Err(error) = access::end_session(state.store(), token).await
    {
        return unavailable(&state, error);
    }
    redirect("/dashboard", Some(cleared_cookie()))
}

/// The tenant of the request's session, or the JSON error to answer.
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

#[utoipa::path(post, path = "/v1/admin/tenants/{id}/dashboard-link", tag = "admin",
    params(("id" = String, Path, description = "The tenant's id")),
    responses((status = 201, description = "`{\"url\": \"/dashboard/link?token=…\", \"tenant\", \"expires_at\"}`: a signed sign-in link, usable once before it expires", body = Object),
              (status = 401, description = "no or a wrong admin token", body = ErrorBody),
              (status = 404, description = "no such tenant", body = ErrorBody)),
    security(("admin_token" = [])))]
pub(crate) async fn mint<Q: UsageQueries>(
    State(state): State<DashboardState<Q>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if state.admin.is_empty() {
        let error = ApiError::Unauthorized("the admin API needs TOLLGATE_ADMIN_TOKEN set");
        return json_error(&state, error);
    }
    if !state.admin.admits(&headers) {
        let error = ApiError::Unauthorized("send Authorization: Bearer <admin token>");
        return json_error(&state, error);
    }
    let answer = async {
        let known = state.store().tenant(&id).await?.is_some()
            || state
                .tenants
                .as_ref()
                .is_some_and(|t| t.by_id(&id).is_some());
        if !known {
            return Err(ApiError::Missing(format!("no tenant {id:?}")));
        }
        let ttl = state.settings.link_ttl.as_secs();
        let (token, expires_at) =
            access::mint_link(state.store(), &state.signer, &id, state.now(), ttl)
                .await
                .map_err(|error| match error {
                    AccessError::Database(error) => ApiError::Database(error),
                    _ => ApiError::Unauthorized("cannot mint a link now"),
                })?;
        Ok((
            StatusCode::CREATED,
            Json(json!({
                "url": format!("/dashboard/link?token={token}"),
                "tenant": id,
                "expires_at": expires_at,
            })),
        ))
    };
    match answer.await {
        Ok(created) => created.into_response(),
        Err(error) => json_error(&state, error),
    }
}

async fn script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("assets/dashboard.js"),
    )
}

async fn style() -> Response {
    asset(
        "text/css; charset=utf-8",
        include_str!("assets/dashboard.css"),
    )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}
