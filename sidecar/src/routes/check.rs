//! `POST /v1/check`: one `strict` decision, exact across every filter that asks this sidecar.
//!
//! The body is a [`CheckRequest`], the answer a [`CheckResponse`]. The decision is the
//! filter's own [`Algorithm::acquire`] with `min == max == cost`, run inside
//! [`CounterStore::update`] so that concurrent checks of one bucket never both take its last
//! permit. A refused request takes nothing and writes nothing.

use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::routing::post;
use axum::{Json, Router};
use tollgate_filter::algorithm::Algorithm;
use tollgate_filter::protocol::{CHECK_PATH, CheckRequest, CheckResponse};

use super::fail;
use crate::error::ApiError;
use crate::storage::{CounterKey, CounterStore, Write};
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
        Err(error) => Err(fail(&app, error)),
    }
}

async fn decide<S: CounterStore>(
    app: &AppState<S>,
    body: Result<Json<CheckRequest>, JsonRejection>,
) -> Result<CheckResponse, ApiError> {
    let Json(request) = body.map_err(|e| ApiError::from_json_rejection(e, MAX_BODY_BYTES))?;
    let quota = request
        .quota()
        .map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
    let algorithm = Algorithm::from(request.algorithm);
    let cost = request.cost;
    let now = (app.clock)();
    let key = CounterKey {
        rule: request.rule,
        key: request.key,
    };
    let grant = app
        .store
        .update(&key, now, |state| {
            let grant = algorithm.acquire(&quota, state, now, cost, cost);
            let write = if grant.granted > 0 {
                Write::State {
                    idle_at: algorithm.idle_at(&quota, state),
                }
            } else {
                Write::Nothing
            };
            (grant, write)
        })
        .await?;
    app.metrics.decision(&key.rule, grant.granted > 0);
    Ok(CheckResponse::from_grant(&grant, now))
}
