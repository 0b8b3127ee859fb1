//! The admin API: plans, tenants and API keys (`/v1/admin/…`), JSON in and out, every route
//! behind `Authorization: Bearer <TOLLGATE_ADMIN_TOKEN>` (401 `unauthorized` otherwise, also
//! when the sidecar has no admin token: the message names the setting).
//! Refused input is 422 `invalid_request` with the `"field"` that is wrong; an unknown tenant,
//! plan or key is 404 `not_found`.
//!
//! - `PUT /v1/admin/plans/{name}` → 201 created / 200 replaced, the plan;
//!   `GET /v1/admin/plans`, `GET /v1/admin/plans/{name}`.
//! - `PUT /v1/admin/tenants/{id}` → 201 / 200, the tenant (`webhook_secret` the first time it
//!   has a webhook); `GET /v1/admin/tenants/{id}` (plan, history, current period, usage so
//!   far); `GET /v1/admin/tenants?prefix=&after=&limit=` (by id, `next_after` pages on).
//! - Keys ([`keys`]): `POST /v1/admin/tenants/{id}/keys` → 201 `{"key_id", "key", …}` (the
//!   plain key, shown once); `GET /v1/admin/tenants/{id}/keys` (prefixes only);
//!   `DELETE /v1/admin/keys/{key_id}` → 204; `POST /v1/admin/keys/{key_id}/rotate`
//!   `{"overlap_seconds": n}` → 201, the new key, the old one expiring after the overlap.
//! - Alerts ([`alerts`]): `GET /v1/admin/tenants/{id}/alerts`, the tenant's alert deliveries
//!   and every attempt of each.

pub(crate) mod alerts;
pub(crate) mod keys;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::tokens::TokenSet;
use crate::error::{ApiError, ErrorBody};
use crate::metrics::Metrics;
use crate::services::registry::Registry;
use crate::services::registry::input::{PlanInput, TenantInput};
use crate::storage::sql::Database;
use crate::storage::sql::registry::PlanRecord;
use crate::storage::sql::registry::{Put, RegistryStore};

/// The largest admin request body.
pub const MAX_ADMIN_BODY_BYTES: usize = 16 * 1024;

/// The most tenants one list answers.
pub const MAX_LIST: u32 = 1_000;

/// What the admin API shares.
#[derive(Clone)]
pub struct AdminState {
    /// The registry.
    pub registry: Registry<Database>,
    /// The admin token(s).
    pub admin: TokenSet,
    /// The exported metrics.
    pub metrics: Arc<Metrics>,
}

/// The admin routes, with their state.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/v1/admin/plans", get(plans))
        .route("/v1/admin/plans/{name}", get(plan).put(put_plan))
        .route("/v1/admin/tenants", get(tenants))
        .route(
            "/v1/admin/tenants/{id}",
            get(tenant).put(put_tenant).delete(delete_tenant),
        )
        .route(
            "/v1/admin/tenants/{id}/keys",
            get(keys::list).post(keys::create),
        )
        .route("/v1/admin/tenants/{id}/alerts", get(alerts::list))
        .route(
            "/v1/admin/keys/{key_id}",
            axum::routing::delete(keys::revoke),
        )
        .route(
            "/v1/admin/keys/{key_id}/rotate",
            axum::routing::post(keys::rotate),
        )
        .route_layer(middleware::from_fn_with_state(state.clone(), authorize))
        .layer(DefaultBodyLimit::max(MAX_ADMIN_BODY_BYTES))
        .with_state(state)
}

async fn authorize(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    if state.admin.is_empty() {
        let error = ApiError::Unauthorized("the admin API needs TOLLGATE_ADMIN_TOKEN set");
        return super::fail(&state.metrics, error).into_response();
    }
    if !state.admin.admits(request.headers()) {
        let error = ApiError::Unauthorized("send Authorization: Bearer <admin token>");
        return super::fail(&state.metrics, error).into_response();
    }
    next.run(request).await
}

/// A request body, or why it could not be read (too large: 413 `payload_too_large`).
pub(crate) type RawBody = Result<Bytes, BytesRejection>;

/// Parses a JSON body (empty: `empty`, when given).
pub(crate) fn body<T: DeserializeOwned>(raw: RawBody, empty: Option<T>) -> Result<T, ApiError> {
    let bytes = raw.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge {
                limit: MAX_ADMIN_BODY_BYTES,
            }
        } else {
            ApiError::InvalidRequest(rejection.body_text())
        }
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace)
        && let Some(default) = empty
    {
        return Ok(default);
    }
    serde_json::from_slice(&bytes).map_err(|error| match error.classify() {
        serde_json::error::Category::Data => ApiError::InvalidRequest(error.to_string()),
        _ => ApiError::InvalidJson(error.to_string()),
    })
}

/// Counts an error and answers it.
pub(crate) fn answer(state: &AdminState, result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(|error| super::fail(&state.metrics, error).into_response())
}

fn status(put: Put) -> StatusCode {
    match put {
        Put::Created => StatusCode::CREATED,
        Put::Replaced => StatusCode::OK,
    }
}

#[utoipa::path(put, path = "/v1/admin/plans/{name}", tag = "admin",
    params(("name" = String, Path, description = "The plan's name")),
    request_body = PlanInput,
    responses((status = 201, description = "created: the plan", body = PlanRecord),
              (status = 200, description = "replaced: the plan", body = PlanRecord), (status = 401, description = "no or a wrong admin token", body = ErrorBody), (status = 422, description = "a refused field (`field` names it)", body = ErrorBody)),
    security(("admin_token" = [])))]
pub(crate) async fn put_plan(
    State(state): State<AdminState>,
    Path(name): Path<String>,
    bytes: RawBody,
) -> Response {
    let result = async {
        let input = body(bytes, None)?;
        let (put, plan) = state.registry.put_plan(&name, input).await?;
        Ok((status(put), Json(json!(plan))).into_response())
    };
    answer(&state, result.await)
}

#[utoipa::path(get, path = "/v1/admin/plans/{name}", tag = "admin",
    params(("name" = String, Path, description = "The plan's name")),
    responses((status = 200, description = "the plan", body = PlanRecord),
              (status = 404, description = "no such plan", body = ErrorBody)),
    security(("admin_token" = [])))]
pub(crate) async fn plan(State(state): State<AdminState>, Path(name): Path<String>) -> Response {
    let result = async {
        let plan = state.registry.store.plan(&name).await?;
        let plan = plan.ok_or_else(|| ApiError::Missing(format!("no plan {name:?}")))?;
        Ok(Json(json!(plan)).into_response())
    };
    answer(&state, result.await)
}

#[utoipa::path(get, path = "/v1/admin/plans", tag = "admin",
    responses((status = 200, description = "`{\"plans\": [plan…]}`", body = Object)),
    security(("admin_token" = [])))]
pub(crate) async fn plans(State(state): State<AdminState>) -> Response {
    let result = async {
        let plans = state.registry.store.plans().await?;
        Ok(Json(json!({ "plans": plans })).into_response())
    };
    answer(&state, result.await)
}

#[utoipa::path(put, path = "/v1/admin/tenants/{id}", tag = "admin",
    params(("id" = String, Path, description = "The tenant's id")),
    request_body = TenantInput,
    responses((status = 201, description = "created: the tenant (`webhook_secret` the first time it has a webhook)", body = Object),
              (status = 200, description = "replaced: the tenant", body = Object), (status = 401, description = "no or a wrong admin token", body = ErrorBody), (status = 422, description = "a refused field (`field` names it)", body = ErrorBody)),
    security(("admin_token" = [])))]
pub(crate) async fn put_tenant(
    State(state): State<AdminState>,
    Path(id): Path<String>,
    bytes: RawBody,
) -> Response {
    let result = async {
        let input = body(bytes, None)?;
        let put = state.registry.put_tenant(&id, input).await?;
        Ok((status(put.put), Json(put.tenant)).into_response())
    };
    answer(&state, result.await)
}

#[utoipa::path(get, path = "/v1/admin/tenants/{id}", tag = "admin",
    params(("id" = String, Path, description = "The tenant's id")),
    responses((status = 200, description = "the tenant, `plan_details`, `plan_history`, `period`, `usage`", body = Object),
              (status = 404, description = "no such tenant", body = ErrorBody)),
    security(("admin_token" = [])))]
pub(crate) async fn tenant(State(state): State<AdminState>, Path(id): Path<String>) -> Response {
    let result = async { Ok(Json(state.registry.tenant(&id).await?).into_response()) };
    answer(&state, result.await)
}

#[utoipa::path(delete, path = "/v1/admin/tenants/{id}", tag = "admin",
    params(("id" = String, Path, description = "The tenant's id")),
    responses((status = 204, description = "deleted: its keys stop working, it leaves the registry feed; its usage stays"),
              (status = 404, description = "no such tenant", body = ErrorBody)),
    security(("admin_token" = [])))]
pub(crate) async fn delete_tenant(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Response {
    let result = async {
        state.registry.delete_tenant(&id).await?;
        Ok(StatusCode::NO_CONTENT.into_response())
    };
    answer(&state, result.await)
}

#[utoipa::path(get, path = "/v1/admin/tenants", tag = "admin",
    params(("prefix" = Option<String>, Query, description = "ids starting with this"),
           ("after" = Option<String>, Query, description = "ids after this (paging)"),
           ("limit" = Option<u32>, Query, description = "1 to 1000, default 100")),
    responses((status = 200, description = "`{\"tenants\": […], \"next_after\": id | null}`", body = Object)),
    security(("admin_token" = [])))]
pub(crate) async fn tenants(State(state): State<AdminState>, RawQuery(raw): RawQuery) -> Response {
    let result = async {
        let (mut prefix, mut after, mut limit) = (String::new(), String::new(), 100);
        let pairs: Vec<(String, String)> = serde_urlencoded_pairs(raw.as_deref().unwrap_or(""))?;
        for (name, value) in pairs {
            match name.as_str() {
                "prefix" => prefix = value,
                "after" => after = value,
                "limit" => {
                    limit = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=MAX_LIST).contains(n))
                        .ok_or_else(|| {
                            ApiError::InvalidParameter(format!(
                                "limit: {value:?} is not an integer from 1 to {MAX_LIST}"
                            ))
                        })?;
                }
                other => {
                    return Err(ApiError::InvalidParameter(format!(
                        "{other}: unknown parameter (this endpoint takes prefix, after, limit)"
                    )));
                }
            }
        }
        let list: Value = state.registry.tenants(&prefix, &after, limit).await?;
        Ok(Json(list).into_response())
    };
    answer(&state, result.await)
}

/// `name=value` pairs of a query (percent-decoded).
fn serde_urlencoded_pairs(raw: &str) -> Result<Vec<(String, String)>, ApiError> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |text: &str| {
                super::percent_decode(text).ok_or_else(|| {
                    ApiError::InvalidParameter(
                        "the query is not valid percent-encoded UTF-8".into(),
                    )
                })
            };
            Ok((decode(name)?, decode(value)?))
        })
        .collect()
}
