//! The tenant usage API: `GET /v1/usage/{daily,period,endpoints,users,requests}`, JSON, read
//! from the usage database (what the flush job wrote, and the request log) and the live
//! usage store (what it has not flushed yet), answered by
//! [`crate::services::usage_query`].
//!
//! **Who may read what.** `Authorization: Bearer <API key>` (a key of the filter
//! registry's, [`crate::services::registry`], or of the filter configuration's `tenants`,
//! [`crate::tenants`]: the registry wins) reads that key's tenant only; `?tenant=`
//! naming another tenant is 403 `forbidden`. `Authorization: Bearer <TOLLGATE_ADMIN_TOKEN>`
//! reads any tenant, named by `?tenant=` (required). No or an unknown credential is 401
//! `unauthorized`; without `TOLLGATE_FILTER_CONFIG` only the admin token is served (others:
//! 503 `no_tenants`). Credentials are compared as SHA-256 hashes in constant time and never
//! logged or echoed.
//!
//! **Parameters** (anything else is 400 `invalid_parameter` naming it): `days` (1 to
//! [`MAX_DAYS`], default [`DEFAULT_DAYS`]: the last `days` UTC days, today included), `top`
//! (`/endpoints` only, 1 to [`MAX_TOP`], default [`DEFAULT_TOP`]), `limit` (`/requests` only,
//! 1 to [`MAX_LIMIT`], default [`DEFAULT_LIMIT`]), `tenant`.
//!
//! - `/daily`: per day requests, bytes in/out, 4xx, 5xx and active users (every day listed,
//!   zeros included), oldest first, and the totals.
//! - `/period`: the tenant's current billing period so far (the registry's anchor day; the
//!   calendar month for a tenant of the filter configuration only) against its plan's
//!   `monthly_quota` (`quota_source: "monthly_quota"`), or, without one, against
//!   `requests_per_minute × 60 × 24 × days in the period`
//!   (`quota_source: "requests_per_minute"`), and the percentage used (2 decimals).
//!
//! **Live.** Served by the sidecar, every answer includes usage not flushed into the
//! database yet ([`LiveUsage`]), exactly once even while a flush runs.
//! - `/endpoints`: the `top` endpoints by calls with their error rate (4xx + 5xx over
//!   requests) and latency mean and p50/p95/p99 estimated from the merged histogram
//!   ([`crate::services::usage_query`] documents the method).
//! - `/users`: active users per day (the day's distinct JWT subjects).
//! - `/requests`: the latest `limit` requests of the detailed request log, newest first (time,
//!   endpoint, status, bytes, latency, user hash); empty while `TOLLGATE_REQUEST_LOG` is off.

mod access;

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::routing::{MethodRouter, get};
use axum::{Json, Router};
use serde_json::Value;

use self::access::prepare;
use crate::Clock;
use crate::error::{ApiError, ErrorBody};
use crate::metrics::Metrics;
use crate::services::live_usage::LiveUsage;
use crate::services::usage_query;
use crate::storage::sql::Database;
use crate::tenants::{Hash, Tenants, hash};

/// Days when `days` is not given.
pub const DEFAULT_DAYS: u32 = 30;
/// The most days one request may ask for.
pub const MAX_DAYS: u32 = 366;
/// Endpoints when `top` is not given.
pub const DEFAULT_TOP: usize = 10;
/// The most endpoints one request may ask for.
pub const MAX_TOP: usize = 1_000;
/// Logged requests when `limit` is not given.
pub const DEFAULT_LIMIT: u32 = 100;
/// The most logged requests one request may ask for.
pub const MAX_LIMIT: u32 = 1_000;

/// What the usage API shares.
#[derive(Clone)]
pub struct QueryState {
    /// The usage database.
    pub database: Database,
    /// The tenant registry (`None`: no `TOLLGATE_FILTER_CONFIG`, only the admin token works).
    pub tenants: Option<Arc<Tenants>>,
    /// The SHA-256 hash of `TOLLGATE_ADMIN_TOKEN`, if set.
    pub admin_token: Option<Hash>,
    /// The exported metrics.
    pub metrics: Arc<Metrics>,
    /// The clock ("today").
    pub clock: Clock,
    /// The registry, consulted before `tenants` ("the registry wins"); `None`: static only.
    pub registry: Option<crate::services::registry::Registry<Database>>,
    /// What the usage answers read: `database` alone, or with the live usage store
    /// ([`with_live`](Self::with_live)).
    pub usage: LiveUsage<Database>,
}

impl QueryState {
    /// State over `database`; `admin_token` is hashed at once (an empty one counts as unset).
    pub fn new(
        database: Database,
        tenants: Option<Tenants>,
        admin_token: Option<&str>,
        metrics: Arc<Metrics>,
        clock: Clock,
    ) -> Self {
        QueryState {
            usage: LiveUsage::flushed(database.clone()),
            database,
            tenants: tenants.map(Arc::new),
            admin_token: admin_token.filter(|t| !t.is_empty()).map(hash),
            metrics,
            clock,
            registry: None,
        }
    }

    /// Answers with usage as it is now: `usage` (the database plus the live usage store)
    /// instead of the flushed rows alone.
    pub fn with_live(mut self, usage: LiveUsage<Database>) -> Self {
        self.usage = usage;
        self
    }

    /// Looks API keys and tenants up in `registry` first, then in the static tenants.
    pub fn with_registry(
        mut self,
        registry: crate::services::registry::Registry<Database>,
    ) -> Self {
        self.registry = Some(registry);
        self
    }
}

/// The usage API's routes, with their state.
pub fn router(state: QueryState) -> Router {
    Router::new()
        .route("/v1/usage/daily", only_get(get(daily)))
        .route("/v1/usage/period", only_get(get(period)))
        .route("/v1/usage/endpoints", only_get(get(endpoints)))
        .route("/v1/usage/users", only_get(get(users)))
        .route("/v1/usage/requests", only_get(get(requests)))
        .with_state(state)
}

fn only_get(route: MethodRouter<QueryState>) -> MethodRouter<QueryState> {
    route.fallback(|State(state): State<QueryState>| async move {
        counted(&state, Err::<Json<Value>, _>(ApiError::MethodNotAllowed))
    })
}

fn counted(
    state: &QueryState,
    answer: Result<Json<Value>, ApiError>,
) -> Result<Json<Value>, ApiError> {
    answer.map_err(|error| super::fail(&state.metrics, error))
}

fn today(state: &QueryState) -> i64 {
    ((state.clock)() / 86_400_000_000_000) as i64
}

/// The last `days` dates (default [`DEFAULT_DAYS`]), today included.
fn dates(state: &QueryState, days: Option<u32>) -> Vec<String> {
    usage_query::date_range(today(state), days.unwrap_or(DEFAULT_DAYS))
}

#[utoipa::path(get, path = "/v1/usage/daily", tag = "usage",
    params(("tenant" = Option<String>, Query, description = "required with the admin token"),
           ("days" = Option<u32>, Query, description = "1 to 366, default 30 (daily, endpoints, users)"),
           ("top" = Option<usize>, Query, description = "endpoints only"),
           ("limit" = Option<u32>, Query, description = "requests only")),
    responses((status = 200, description = "per day: requests, bytes, errors, active users, and totals", body = Object),
              (status = 401, description = "no or an unknown credential", body = ErrorBody)),
    security(("api_key" = []), ("admin_token" = [])))]
pub(crate) async fn daily(
    State(state): State<QueryState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let answer = async {
        let (scope, params) =
            prepare(&state, &headers, raw.as_deref(), &["days", "tenant"]).await?;
        let dates = dates(&state, params.days);
        Ok(Json(
            usage_query::daily(&state.usage, &scope.tenant, &dates).await?,
        ))
    };
    counted(&state, answer.await)
}

#[utoipa::path(get, path = "/v1/usage/period", tag = "usage",
    params(("tenant" = Option<String>, Query, description = "required with the admin token"),
           ("days" = Option<u32>, Query, description = "1 to 366, default 30 (daily, endpoints, users)"),
           ("top" = Option<usize>, Query, description = "endpoints only"),
           ("limit" = Option<u32>, Query, description = "requests only")),
    responses((status = 200, description = "the current month against the quota", body = Object),
              (status = 401, description = "no or an unknown credential", body = ErrorBody)),
    security(("api_key" = []), ("admin_token" = [])))]
pub(crate) async fn period(
    State(state): State<QueryState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let answer = async {
        let (scope, _) = prepare(&state, &headers, raw.as_deref(), &["tenant"]).await?;
        let plan = scope.info.as_ref();
        let terms = match &state.registry {
            Some(registry) => registry.billing_terms(&scope.tenant).await?,
            None => None,
        };
        let today = today(&state);
        let answer = usage_query::period(&state.usage, &scope.tenant, plan, terms.as_ref(), today);
        Ok(Json(answer.await?))
    };
    counted(&state, answer.await)
}

#[utoipa::path(get, path = "/v1/usage/endpoints", tag = "usage",
    params(("tenant" = Option<String>, Query, description = "required with the admin token"),
           ("days" = Option<u32>, Query, description = "1 to 366, default 30 (daily, endpoints, users)"),
           ("top" = Option<usize>, Query, description = "endpoints only"),
           ("limit" = Option<u32>, Query, description = "requests only")),
    responses((status = 200, description = "top endpoints with error rates and latency percentiles", body = Object),
              (status = 401, description = "no or an unknown credential", body = ErrorBody)),
    security(("api_key" = []), ("admin_token" = [])))]
pub(crate) async fn endpoints(
    State(state): State<QueryState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let answer = async {
        let allowed = ["days", "top", "tenant"];
        let (scope, params) = prepare(&state, &headers, raw.as_deref(), &allowed).await?;
        let dates = dates(&state, params.days);
        let top = params.top.unwrap_or(DEFAULT_TOP);
        Ok(Json(
            usage_query::endpoints(&state.usage, &scope.tenant, &dates, top).await?,
        ))
    };
    counted(&state, answer.await)
}

#[utoipa::path(get, path = "/v1/usage/users", tag = "usage",
    params(("tenant" = Option<String>, Query, description = "required with the admin token"),
           ("days" = Option<u32>, Query, description = "1 to 366, default 30 (daily, endpoints, users)"),
           ("top" = Option<usize>, Query, description = "endpoints only"),
           ("limit" = Option<u32>, Query, description = "requests only")),
    responses((status = 200, description = "active users per day", body = Object),
              (status = 401, description = "no or an unknown credential", body = ErrorBody)),
    security(("api_key" = []), ("admin_token" = [])))]
pub(crate) async fn users(
    State(state): State<QueryState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let answer = async {
        let (scope, params) =
            prepare(&state, &headers, raw.as_deref(), &["days", "tenant"]).await?;
        let dates = dates(&state, params.days);
        Ok(Json(
            usage_query::users(&state.usage, &scope.tenant, &dates).await?,
        ))
    };
    counted(&state, answer.await)
}

#[utoipa::path(get, path = "/v1/usage/requests", tag = "usage",
    params(("tenant" = Option<String>, Query, description = "required with the admin token"),
           ("days" = Option<u32>, Query, description = "1 to 366, default 30 (daily, endpoints, users)"),
           ("top" = Option<usize>, Query, description = "endpoints only"),
           ("limit" = Option<u32>, Query, description = "requests only")),
    responses((status = 200, description = "the latest logged requests", body = Object),
              (status = 401, description = "no or an unknown credential", body = ErrorBody)),
    security(("api_key" = []), ("admin_token" = [])))]
pub(crate) async fn requests(
    State(state): State<QueryState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let answer = async {
        let (scope, params) =
            prepare(&state, &headers, raw.as_deref(), &["limit", "tenant"]).await?;
        let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
        Ok(Json(
            usage_query::requests(&state.database, &scope.tenant, limit).await?,
        ))
    };
    counted(&state, answer.await)
}
