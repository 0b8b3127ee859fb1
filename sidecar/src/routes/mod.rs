//! The HTTP routes, one module each, each exposing `router()`.

pub mod admin;
pub mod check;
pub mod checks;
pub mod dashboard;
pub mod health;
pub mod metrics;
pub mod openapi;
pub mod registry;
pub mod stats;
pub mod sync;
pub mod tokens;
pub mod usage;
pub mod usage_query;

use axum::extract::State;

use crate::AppState;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::storage::CounterStore;

/// Counts `error` in `metrics` (`tollgate_errors_total{kind}`) and returns it: every
/// handler's error path goes through here.
pub(crate) fn fail(metrics: &Metrics, error: ApiError) -> ApiError {
    metrics.error(error.code());
    error
}

/// The answer for a path no route serves.
pub(crate) async fn not_found<S: CounterStore>(State(app): State<AppState<S>>) -> ApiError {
    fail(&app.metrics, ApiError::NotFound)
}

/// The answer for a known path with a method it does not serve.
pub(crate) async fn method_not_allowed<S: CounterStore>(
    State(app): State<AppState<S>>,
) -> ApiError {
    fail(&app.metrics, ApiError::MethodNotAllowed)
}
