//! The admin API's alert route: a tenant's alert deliveries and their attempts.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};

use super::{AdminState, answer};
use crate::error::ErrorBody;
use crate::services::alerts::history::history;

#[utoipa::path(get, path = "/v1/admin/tenants/{id}/alerts", tag = "admin",
    params(("id" = String, Path, description = "The tenant's id")),
    responses((status = 200, description = "`{\"tenant\", \"deliveries\": [{\"id\" (the webhook-id or Message-ID), \"event_id\", \"channel\", \"target\", \"status\" (pending, delivered, failed, disabled), \"attempts\", \"next_attempt_at\" (Unix ms), \"last_error\", \"attempt_log\": [{\"attempt\", \"at\" (Unix ms), \"status\", \"error\", \"duration_ms\"}]}]}`", body = Object),
              (status = 404, description = "no such tenant", body = ErrorBody), (status = 401, description = "no or a wrong admin token", body = ErrorBody)),
    security(("admin_token" = [])))]
pub(crate) async fn list(State(state): State<AdminState>, Path(tenant): Path<String>) -> Response {
    let result = async {
        state.registry.existing_tenant(&tenant).await?;
        let answer = history(&*state.registry.store, &tenant)
            .await
            .map_err(crate::services::registry::RegistryError::from)?;
        Ok(Json(answer).into_response())
    };
    answer(&state, result.await)
}
