//! `POST /v1/stats`: a filter worker's counters since it started ([`StatsReport`]), exported
//! on `/metrics` as `tollgate_filter_decisions_total{rule, outcome}` and
//! `tollgate_filter_events_total{counter}` (see [`crate::metrics::FilterTotals`]). Answered
//! `204 No Content`; a bad report 422 naming the field.

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use tollgate_filter::protocol::{STATS_PATH, StatsReport};

use super::fail;
use crate::AppState;
use crate::error::ApiError;
use crate::storage::CounterStore;

/// The largest report accepted: 1,024 rules of about 250 bytes, and the counters.
pub const MAX_STATS_BODY_BYTES: usize = 320 * 1024;

/// The stats route.
pub fn router<S: CounterStore>() -> Router<AppState<S>> {
    Router::new().route(
        STATS_PATH,
        post(report::<S>).layer(DefaultBodyLimit::max(MAX_STATS_BODY_BYTES)),
    )
}

async fn report<S: CounterStore>(
    State(app): State<AppState<S>>,
    body: Result<Json<StatsReport>, JsonRejection>,
) -> Result<StatusCode, ApiError> {
    let checked = body
        .map_err(|e| ApiError::from_json_rejection(e, MAX_STATS_BODY_BYTES))
        .and_then(|Json(report)| {
            report
                .validate()
                .map_err(ApiError::InvalidRequest)
                .map(|()| report)
        });
    match checked {
        Ok(report) => {
            let now = (app.clock)() / 1_000_000_000;
            app.metrics.filter_report(&report, now);
            Ok(StatusCode::NO_CONTENT)
        }
        Err(error) => Err(fail(&app.metrics, error)),
    }
}
