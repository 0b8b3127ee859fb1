//! `POST /v1/sync`: a filter worker's batch for `global` rules, added into the global buckets
//! exactly once, answered with each bucket's global total.
//!
//! The body is a [`SyncRequest`] (at most [`MAX_SYNC_BODY_BYTES`]), the answer a
//! [`SyncResponse`]. The batch is checked whole before anything is counted: a bad entry gets
//! 422 naming it (`entries[3].limit: must be at least 1`). How it is counted, exactly once,
//! is [`crate::services::sync`]'s.

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::routing::post;
use axum::{Json, Router};
use tollgate_filter::protocol::{SYNC_PATH, SyncRequest, SyncResponse};

use super::fail;
use crate::error::ApiError;
use crate::services;
use crate::storage::CounterStore;
use crate::{AppState, MAX_SYNC_BODY_BYTES};

/// The sync route, with its own body limit.
pub fn router<S: CounterStore>() -> Router<AppState<S>> {
    Router::new().route(
        SYNC_PATH,
        post(sync::<S>).layer(DefaultBodyLimit::max(MAX_SYNC_BODY_BYTES)),
    )
}

async fn sync<S: CounterStore>(
    State(app): State<AppState<S>>,
    body: Result<Json<SyncRequest>, JsonRejection>,
) -> Result<Json<SyncResponse>, ApiError> {
    match answer(&app, body).await {
        Ok(response) => Ok(Json(response)),
        Err(error) => Err(fail(&app.metrics, error)),
    }
}

async fn answer<S: CounterStore>(
    app: &AppState<S>,
    body: Result<Json<SyncRequest>, JsonRejection>,
) -> Result<SyncResponse, ApiError> {
    let Json(batch) = body.map_err(|e| ApiError::from_json_rejection(e, MAX_SYNC_BODY_BYTES))?;
    batch
        .validate()
        .map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
    let quotas = batch
        .entries
        .iter()
        .enumerate()
        .map(|(n, entry)| {
            entry
                .quota()
                .map_err(|e| ApiError::InvalidRequest(format!("entries[{n}].{e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let now = (app.clock)();
    Ok(services::sync::apply(&app.store, &app.metrics, batch, quotas, now).await?)
}
