//! `POST /v1/usage`: a filter worker's usage batch, added into the live aggregates exactly once
//! per `(sender, seq)` and tenant (see [`crate::usage`]).
//!
//! The body is a [`UsageBatch`] (at most [`MAX_USAGE_BODY_BYTES`]), the answer a
//! [`UsageResponse`] saying how many records were counted now and how many were duplicates.
//! The batch is checked whole before anything is counted: a bad record gets 422 naming it
//! (`records[3].date: "2026-13-01" is not a date (YYYY-MM-DD)`), as does a date more than
//! [`MAX_AGE_DAYS`](crate::usage::MAX_AGE_DAYS) days old or in the future. A store failure is a
//! 503: the filter keeps the batch and sends it again unchanged, which counts only what was not
//! counted yet.
//!
//! The batch's request log entries (`requests`) go to the [`RequestLog`] once its records were
//! ingested: queued without waiting, written later by its own task, so the log never delays or
//! fails the answer. A batch that was entirely a duplicate (`applied == 0`, `duplicate > 0`) is
//! a resend whose entries were queued the first time: they are not queued again (the residual
//! double-logging cases are in [`crate::usage::request_log`]). A batch the store could not
//! ingest (503) queues nothing: the filter sends it again.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::routing::post;
use axum::{Json, Router};
use tollgate_filter::usage::{USAGE_PATH, UsageBatch, UsageResponse};

use crate::Clock;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::usage::request_log::RequestLog;
use crate::usage::{UsageStore, check_dates};

/// The largest `POST /v1/usage` body accepted: 1024 records of up to about 1 KiB each, plus
/// 4096 request log entries of up to about 420 bytes each (both limits of the protocol).
pub const MAX_USAGE_BODY_BYTES: usize = 3 * 1024 * 1024;

/// What the usage route shares.
pub struct UsageState<U> {
    /// The aggregates.
    pub store: Arc<U>,
    /// The exported metrics (the API's own).
    pub metrics: Arc<Metrics>,
    /// The clock (Unix nanoseconds) dates are checked against.
    pub clock: Clock,
    /// Where the batches' request log entries go.
    pub request_log: RequestLog,
}

impl<U> Clone for UsageState<U> {
    fn clone(&self) -> Self {
        UsageState {
            store: Arc::clone(&self.store),
            metrics: Arc::clone(&self.metrics),
            clock: self.clock,
            request_log: self.request_log.clone(),
        }
    }
}

/// The usage route, with its state and body limit.
pub fn router<U: UsageStore>(state: UsageState<U>) -> Router {
    Router::new()
        .route(
            USAGE_PATH,
            post(ingest::<U>)
                .fallback(method_not_allowed::<U>)
                .layer(DefaultBodyLimit::max(MAX_USAGE_BODY_BYTES)),
        )
        .with_state(state)
}

async fn ingest<U: UsageStore>(
    State(state): State<UsageState<U>>,
    body: Result<Json<UsageBatch>, JsonRejection>,
) -> Result<Json<UsageResponse>, ApiError> {
    match apply(&state, body).await {
        Ok(response) => Ok(Json(response)),
        Err(error) => {
            state.metrics.error(error.code());
            Err(error)
        }
    }
}

async fn method_not_allowed<U: UsageStore>(State(state): State<UsageState<U>>) -> ApiError {
    let error = ApiError::MethodNotAllowed;
    state.metrics.error(error.code());
    error
}

async fn apply<U: UsageStore>(
    state: &UsageState<U>,
    body: Result<Json<UsageBatch>, JsonRejection>,
) -> Result<UsageResponse, ApiError> {
    let Json(mut batch) =
        body.map_err(|e| ApiError::from_json_rejection(e, MAX_USAGE_BODY_BYTES))?;
    batch
        .validate()
        .map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
    let now = (state.clock)();
    check_dates(&batch, now)
        .map_err(|(n, reason)| ApiError::InvalidRequest(format!("records[{n}].date: {reason}")))?;
    let ingested = state.store.ingest(&batch, now).await?;
    let duplicate = ingested.applied == 0 && ingested.duplicate > 0;
    state.metrics.usage_batch(ingested.applied, duplicate);
    if !duplicate {
        state
            .request_log
            .submit(std::mem::take(&mut batch.requests));
    }
    Ok(UsageResponse {
        applied: ingested.applied,
        duplicate: ingested.duplicate,
    })
}
