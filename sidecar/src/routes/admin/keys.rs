//! The admin API's key routes: create (the plain key in the answer, once), list (prefixes),
//! revoke, rotate with an overlap.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::{AdminState, RawBody, answer, body};
use crate::error::ErrorBody;

/// `POST /v1/admin/tenants/{id}/keys`'s body (optional).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateKey {
    /// Unix seconds after which the key stops working.
    #[serde(default)]
    expires_at: Option<u64>,
}

/// `POST /v1/admin/keys/{key_id}/rotate`'s body.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Rotate {
    /// How long the old key keeps working (default 0: it stops now).
    #[serde(default)]
    overlap_seconds: u64,
}

#[utoipa::path(post, path = "/v1/admin/tenants/{id}/keys", tag = "admin",
    params(("id" = String, Path, description = "The tenant's id")),
    request_body(content = CreateKey, description = "optional"),
    responses((status = 201, description = "`{\"key_id\", \"key\" (shown once), \"prefix\", \"expires_at\"}`", body = Object),
              (status = 404, description = "no such tenant", body = ErrorBody), (status = 401, description = "no or a wrong admin token", body = ErrorBody), (status = 422, description = "a refused field (`field` names it)", body = ErrorBody)),
    security(("admin_token" = [])))]
pub(crate) async fn create(
    State(state): State<AdminState>,
    Path(tenant): Path<String>,
    bytes: RawBody,
) -> Response {
    let result = async {
        let input: CreateKey = body(bytes, Some(CreateKey::default()))?;
        let (record, key) = state.registry.create_key(&tenant, input.expires_at).await?;
        let answer = json!({
            "key_id": record.key_id,
            "key": key,
            "prefix": record.prefix,
            "tenant": record.tenant,
            "created_at": record.created_at,
            "expires_at": record.expires_at,
        });
        Ok((StatusCode::CREATED, Json(answer)).into_response())
    };
    answer(&state, result.await)
}

#[utoipa::path(get, path = "/v1/admin/tenants/{id}/keys", tag = "admin",
    params(("id" = String, Path, description = "The tenant's id")),
    responses((status = 200, description = "`{\"keys\": [{key_id, prefix, created_at, expires_at, revoked_at}]}`", body = Object)),
    security(("admin_token" = [])))]
pub(crate) async fn list(State(state): State<AdminState>, Path(tenant): Path<String>) -> Response {
    let result = async { Ok(Json(state.registry.keys(&tenant).await?).into_response()) };
    answer(&state, result.await)
}

#[utoipa::path(delete, path = "/v1/admin/keys/{key_id}", tag = "admin",
    params(("key_id" = String, Path, description = "The key's id")),
    responses((status = 204, description = "revoked"), (status = 404, description = "no such key", body = ErrorBody)),
    security(("admin_token" = [])))]
pub(crate) async fn revoke(
    State(state): State<AdminState>,
    Path(key_id): Path<String>,
) -> Response {
    let result = async {
        state.registry.revoke_key(&key_id).await?;
        Ok(StatusCode::NO_CONTENT.into_response())
    };
    answer(&state, result.await)
}

#[utoipa::path(post, path = "/v1/admin/keys/{key_id}/rotate", tag = "admin",
    params(("key_id" = String, Path, description = "The key's id")),
    request_body = Rotate,
    responses((status = 201, description = "the new key (shown once), `previous_expires_at`", body = Object),
              (status = 404, description = "no such live key", body = ErrorBody)),
    security(("admin_token" = [])))]
pub(crate) async fn rotate(
    State(state): State<AdminState>,
    Path(key_id): Path<String>,
    bytes: RawBody,
) -> Response {
    let result = async {
        let input: Rotate = body(bytes, Some(Rotate::default()))?;
        let (record, key, until) = state
            .registry
            .rotate_key(&key_id, input.overlap_seconds)
            .await?;
        let answer = json!({
            "key_id": record.key_id,
            "key": key,
            "prefix": record.prefix,
            "tenant": record.tenant,
            "previous_key_id": key_id,
            "previous_expires_at": until,
        });
        Ok((StatusCode::CREATED, Json(answer)).into_response())
    };
    answer(&state, result.await)
}
