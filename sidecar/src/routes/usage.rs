//! `POST /v1/usage`: a filter worker's usage batch, added into the live aggregates exactly once
//! per `(sender, seq)` and tenant (see [`crate::storage::usage`]).
//!
//! The body is a [`UsageBatch`] (at most [`MAX_USAGE_BODY_BYTES`]), the answer a
//! [`UsageResponse`] saying how many records were counted now and how many were duplicates.
//! The batch is checked whole before anything is counted: a bad record gets 422 naming it
//! (`records[3].date: "2026-13-01" is not a date (YYYY-MM-DD)`), as does a date more than
//! [`MAX_AGE_DAYS`](crate::storage::usage::MAX_AGE_DAYS) days old or in the future. A store failure is a
//! 503: the filter keeps the batch and sends it again unchanged, which counts only what was not
//! counted yet.
//!
//! The batch's request log entries (`requests`) go to the
//! [`RequestLog`](crate::services::request_log::RequestLog) once its records were ingested
//! ([`crate::services::usage`]): queued without waiting, written later by its own task, so the
//! log never delays or fails the answer.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::routing::post;
use axum::{Json, Router};
use tollgate_filter::usage::{USAGE_PATH, UsageBatch, UsageResponse};

use super::fail;
use crate::Clock;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::services::usage::UsageIngest;

/// The largest `POST /v1/usage` body accepted: 1024 records of up to about 1 KiB each, plus
/// 4096 request log entries of up to about 420 bytes each (both limits of the protocol).
pub const MAX_USAGE_BODY_BYTES: usize = 3 * 1024 * 1024;

/// What the usage route shares.
#[derive(Clone)]
pub struct UsageState {
    /// Ingestion: the aggregates and the request log.
    pub usage: UsageIngest,
    /// The exported metrics (the API's own).
    pub metrics: Arc<Metrics>,
    /// The clock (Unix nanoseconds) dates are checked against.
    pub clock: Clock,
}

/// The usage route, with its state and body limit.
pub fn router(state: UsageState) -> Router {
    Router::new()
        .route(
            USAGE_PATH,
            post(ingest)
                .fallback(method_not_allowed)
                .layer(DefaultBodyLimit::max(MAX_USAGE_BODY_BYTES)),
        )
        .with_state(state)
}

async fn ingest(
    State(state): State<UsageState>,
    body: Result<Json<UsageBatch>, JsonRejection>,
) -> Result<Json<UsageResponse>, ApiError> {
    let answer = match body {
        Ok(Json(batch)) => {
            let now = (state.clock)();
            state.usage.ingest(batch, &state.metrics, now).await
        }
        Err(rejection) => Err(ApiError::from_json_rejection(
            rejection,
            MAX_USAGE_BODY_BYTES,
        )),
    };
    answer
        .map(Json)
        .map_err(|error| fail(&state.metrics, error))
}

async fn method_not_allowed(State(state): State<UsageState>) -> ApiError {
    fail(&state.metrics, ApiError::MethodNotAllowed)
}
