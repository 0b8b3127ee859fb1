//! `GET /healthz` (the process answers) and `GET /readyz` (its stores answer too, and its
//! background jobs run).

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::fail;
use crate::AppState;
use crate::error::ApiError;
use crate::storage::CounterStore;

/// The health routes.
pub fn router<S: CounterStore>() -> Router<AppState<S>> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz::<S>))
}

/// Always `200 {"status":"ok"}` while the process serves HTTP.
async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `200 {"status":"ready"}` when the counter store answers and no background job stopped;
/// else `503` with the store's error code, or `job_stopped` naming the job.
async fn readyz<S: CounterStore>(State(app): State<AppState<S>>) -> Result<Json<Value>, ApiError> {
    if let Err(error) = app.store.ping().await {
        return Err(fail(&app.metrics, error.into()));
    }
    if let Some(job) = app.jobs.stopped() {
        return Err(fail(&app.metrics, ApiError::JobStopped(job)));
    }
    Ok(Json(json!({ "status": "ready" })))
}
