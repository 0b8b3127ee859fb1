//! `POST /v1/checks`: several `strict` checks in one call, each decided exactly as
//! `POST /v1/check` decides one.
//!
//! The body is a [`CheckBatch`] (at most [`MAX_SYNC_BODY_BYTES`], the limit of
//! `POST /v1/sync`: [`MAX_CHECK_BATCH`](tollgate_filter::protocol::MAX_CHECK_BATCH) checks of
//! a few hundred bytes each, with room to spare), the answer a [`CheckBatchResponse`] with one
//! [`CheckResponse`](tollgate_filter::protocol::CheckResponse) per check, in the batch's order.
//! The batch is checked whole first: an empty batch, one with too many checks, or one bad
//! check gets 422 naming it (`checks[3].limit: must be at least 1`), and nothing is decided.
//! The decisions, and why a store failure fails the whole batch (503), are
//! [`crate::services::checks`]'.

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::routing::post;
use axum::{Json, Router};
use tollgate_filter::protocol::{CHECKS_PATH, CheckBatch, CheckBatchResponse};

use super::fail;
use crate::error::ApiError;
use crate::services::check::Check;
use crate::services::checks::decide_all;
use crate::storage::CounterStore;
use crate::{AppState, MAX_SYNC_BODY_BYTES};

/// The batch check route, with the body limit of `/v1/sync`.
pub fn router<S: CounterStore>() -> Router<AppState<S>> {
    Router::new().route(
        CHECKS_PATH,
        post(checks::<S>).layer(DefaultBodyLimit::max(MAX_SYNC_BODY_BYTES)),
    )
}

async fn checks<S: CounterStore>(
    State(app): State<AppState<S>>,
    body: Result<Json<CheckBatch>, JsonRejection>,
) -> Result<Json<CheckBatchResponse>, ApiError> {
    match answer(&app, body).await {
        Ok(response) => Ok(Json(response)),
        Err(error) => Err(fail(&app.metrics, error)),
    }
}

async fn answer<S: CounterStore>(
    app: &AppState<S>,
    body: Result<Json<CheckBatch>, JsonRejection>,
) -> Result<CheckBatchResponse, ApiError> {
    let Json(batch) = body.map_err(|e| ApiError::from_json_rejection(e, MAX_SYNC_BODY_BYTES))?;
    batch
        .validate()
        .map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
    let checks = batch
        .checks
        .into_iter()
        .enumerate()
        .map(|(n, request)| {
            Check::new(request).map_err(|e| ApiError::InvalidRequest(format!("checks[{n}].{e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let now = (app.clock)();
    let results = decide_all(&app.store, &app.metrics, checks, now).await?;
    Ok(CheckBatchResponse { results })
}
