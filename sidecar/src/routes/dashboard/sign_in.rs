//! Signing in and out: the API key form, operator-minted links (and minting them), sign-out.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::answer::{
    cleared_cookie, cookie_value, html, json_error, redirect, session_token, unavailable,
};
use super::{DashboardState, page};
use crate::error::{ApiError, ErrorBody};
use crate::routes::percent_decode;
use crate::services::dashboard::access::{self, AccessError};
use crate::storage::sql::UsageQueries;
use crate::storage::sql::dashboard::SessionRole;
use crate::storage::sql::registry::RegistryStore;

pub(super) fn field(raw: &str, name: &str) -> Option<String> {
    raw.split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .and_then(|(_, value)| percent_decode(value))
}

pub(super) async fn sign_in<Q: UsageQueries>(
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
pub(super) async fn role_of<Q>(
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

pub(super) async fn link<Q: UsageQueries>(
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

pub(super) async fn sign_out<Q: UsageQueries>(
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
