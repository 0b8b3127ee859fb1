//! `POST /v1/check`: one `strict` decision, exact across every filter that asks this sidecar.
//!
//! The body is a [`CheckRequest`], the answer a [`CheckResponse`]; the decision is
//! [`crate::services::check`]'s.

use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::routing::post;
use axum::{Json, Router};
use tollgate_filter::protocol::{CHECK_PATH, CheckRequest, CheckResponse};

use super::fail;
use crate::error::ApiError;
use crate::services::check::Check;
use crate::storage::CounterStore;
use crate::{AppState, MAX_BODY_BYTES};

/// The check route.
pub fn router<S: CounterStore>() -> Router<AppState<S>> {
    Router::new().route(CHECK_PATH, post(check::<S>))
}

async fn check<S: CounterStore>(
    State(app): State<AppState<S>>,
    body: Result<Json<CheckRequest>, JsonRejection>,
) -> Result<Json<CheckResponse>, ApiError> {
    match decide(&app, body).await {
        Ok(response) => Ok(Json(response)),
        Err(error) => Err(fail(&app.metrics, error)),
    }
}

async fn decide<S: CounterStore>(
    app: &AppState<S>,
    body: Result<Json<CheckRequest>, JsonRejection>,
) -> Result<CheckResponse, ApiError> {
    let Json(request) = body.map_err(|e| ApiError::from_json_rejection(e, MAX_BODY_BYTES))?;
    let check = Check::new(request).map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
    let now = (app.clock)();
    Ok(check.decide(&*app.store, &app.metrics, now).await?)
}
