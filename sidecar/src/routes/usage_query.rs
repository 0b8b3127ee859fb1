//! The tenant usage API: `GET /v1/usage/{daily,period,endpoints,users,requests}`, JSON, read
//! from the usage database (what the flush job wrote, see [`crate::usage::query`]; and the
//! request log, [`crate::usage::request_log`]).
//!
//! **Who may read what.** `Authorization: Bearer <API key>` (a key of the filter
//! configuration's `tenants`, [`crate::tenants`]) reads that key's tenant only; `?tenant=`
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
//! - `/period`: the current calendar month so far against the plan's quota,
//!   `requests_per_minute × 60 × 24 × days in the month` (plans have no monthly quota yet:
//!   `quota_source: "requests_per_minute"`), and the percentage used (2 decimals).
//! - `/endpoints`: the `top` endpoints by calls with their error rate (4xx + 5xx over
//!   requests) and latency mean and p50/p95/p99 estimated from the merged histogram
//!   ([`crate::usage::query`] documents the method).
//! - `/users`: active users per day (the day's distinct JWT subjects).
//! - `/requests`: the latest `limit` requests of the detailed request log, newest first (time,
//!   endpoint, status, bytes, latency, user hash); empty while `TOLLGATE_REQUEST_LOG` is off.

mod access;

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::routing::{MethodRouter, get};
use axum::{Json, Router};
use serde_json::{Value, json};
use tollgate_filter::usage::format_date;

use self::access::prepare;
use crate::Clock;
use crate::db::Database;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::tenants::{Hash, Tenants, hash};
use crate::usage::query::{self, Counts};
use crate::usage::request_log;

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
            database,
            tenants: tenants.map(Arc::new),
            admin_token: admin_token.filter(|t| !t.is_empty()).map(hash),
            metrics,
            clock,
        }
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

fn counters(counts: &Counts) -> Value {
    json!({
        "requests": counts.requests,
        "bytes_in": counts.bytes_in,
        "bytes_out": counts.bytes_out,
        "errors_4xx": counts.errors_4xx,
        "errors_5xx": counts.errors_5xx,
    })
}

async fn daily(
    State(state): State<QueryState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let answer = async {
        let (scope, params) = prepare(&state, &headers, raw.as_deref(), &["days", "tenant"])?;
        let dates = query::date_range(today(&state), params.days.unwrap_or(DEFAULT_DAYS));
        let (from, to) = bounds(&dates);
        let rows = query::daily_rows(&state.database, &scope.tenant, &from, &to).await?;
        let users = query::active_users(&state.database, &scope.tenant, &from, &to).await?;
        let mut totals = Counts::default();
        let series: Vec<Value> = query::per_day(&rows, &dates)
            .into_iter()
            .map(|(date, counts)| {
                totals.add(&counts);
                let mut day = json!({
                    "date": date,
                    "active_users": users.get(&date).copied().unwrap_or(0),
                });
                if let (Some(day), Value::Object(more)) = (day.as_object_mut(), counters(&counts)) {
                    day.extend(more);
                }
                day
            })
            .collect();
        Ok(Json(json!({
            "tenant": scope.tenant,
            "from": from,
            "to": to,
            "days": series,
            "totals": counters(&totals),
        })))
    };
    counted(&state, answer.await)
}

fn bounds(dates: &[String]) -> (String, String) {
    (
        dates.first().cloned().unwrap_or_default(),
        dates.last().cloned().unwrap_or_default(),
    )
}

async fn period(
    State(state): State<QueryState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let answer = async {
        let (scope, _) = prepare(&state, &headers, raw.as_deref(), &["tenant"])?;
        let today = today(&state);
        let (start, length) = query::month_of(today);
        let (from, to) = (format_date(start), format_date(today));
        let rows = query::daily_rows(&state.database, &scope.tenant, &from, &to).await?;
        let requests = rows
            .iter()
            .fold(0u64, |sum, row| sum.saturating_add(row.counts.requests));
        let plan = scope.info.as_ref();
        let quota = plan.map(|p| {
            p.requests_per_minute
                .saturating_mul(60 * 24)
                .saturating_mul(u64::from(length))
        });
        let percent = quota
            .filter(|&q| q > 0)
            .map(|q| query::round(requests as f64 * 100.0 / q as f64, 2));
        Ok(Json(json!({
            "tenant": scope.tenant,
            "plan": plan.map(|p| p.plan.as_str()),
            "period": {
                "start": from,
                "end": format_date(start + i64::from(length) - 1),
                "today": to,
                "days": length,
                "days_elapsed": today - start + 1,
            },
            "requests": requests,
            "requests_per_minute": plan.map(|p| p.requests_per_minute),
            "quota": quota,
            "quota_source": plan.map(|_| "requests_per_minute"),
            "remaining": quota.map(|q| q.saturating_sub(requests)),
            "percent_used": percent,
        })))
    };
    counted(&state, answer.await)
}

async fn endpoints(
    State(state): State<QueryState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let answer = async {
        let allowed = ["days", "top", "tenant"];
        let (scope, params) = prepare(&state, &headers, raw.as_deref(), &allowed)?;
        let dates = query::date_range(today(&state), params.days.unwrap_or(DEFAULT_DAYS));
        let (from, to) = bounds(&dates);
        let rows = query::daily_rows(&state.database, &scope.tenant, &from, &to).await?;
        let top = query::top_endpoints(&rows, params.top.unwrap_or(DEFAULT_TOP));
        let list: Vec<Value> = top
            .iter()
            .map(|(endpoint, c)| {
                let errors = c.errors_4xx.saturating_add(c.errors_5xx);
                let share = |n: u64| {
                    (c.requests > 0).then(|| query::round(n as f64 / c.requests as f64, 4))
                };
                let p = |percent| query::percentile(&c.latency_buckets, percent);
                json!({
                    "endpoint": endpoint,
                    "requests": c.requests,
                    "errors_4xx": c.errors_4xx,
                    "errors_5xx": c.errors_5xx,
                    "error_rate": share(errors),
                    "latency_ms": {
                        "mean": share(c.latency_ms_sum),
                        "p50": p(50).map(|v| query::round(v, 2)),
                        "p95": p(95).map(|v| query::round(v, 2)),
                        "p99": p(99).map(|v| query::round(v, 2)),
                    },
                })
            })
            .collect();
        Ok(Json(json!({
            "tenant": scope.tenant,
            "from": from,
            "to": to,
            "endpoints": list,
        })))
    };
    counted(&state, answer.await)
}

async fn users(
    State(state): State<QueryState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let answer = async {
        let (scope, params) = prepare(&state, &headers, raw.as_deref(), &["days", "tenant"])?;
        let dates = query::date_range(today(&state), params.days.unwrap_or(DEFAULT_DAYS));
        let (from, to) = bounds(&dates);
        let users = query::active_users(&state.database, &scope.tenant, &from, &to).await?;
        let series: Vec<Value> = dates
            .iter()
            .map(|date| json!({ "date": date, "users": users.get(date).copied().unwrap_or(0) }))
            .collect();
        Ok(Json(json!({
            "tenant": scope.tenant,
            "from": from,
            "to": to,
            "days": series,
        })))
    };
    counted(&state, answer.await)
}

async fn requests(
    State(state): State<QueryState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let answer = async {
        let (scope, params) = prepare(&state, &headers, raw.as_deref(), &["limit", "tenant"])?;
        let limit = params.limit.unwrap_or(DEFAULT_LIMIT);
        let entries = request_log::latest(&state.database, &scope.tenant, limit).await?;
        let list: Vec<Value> = entries
            .iter()
            .map(|entry| {
                json!({
                    "time_ms": entry.time_ms,
                    "endpoint": entry.endpoint,
                    "status": entry.status,
                    "bytes_in": entry.bytes_in,
                    "bytes_out": entry.bytes_out,
                    "latency_ms": entry.latency_ms,
                    "user": entry.user,
                })
            })
            .collect();
        Ok(Json(json!({
            "tenant": scope.tenant,
            "limit": limit,
            "requests": list,
        })))
    };
    counted(&state, answer.await)
}
