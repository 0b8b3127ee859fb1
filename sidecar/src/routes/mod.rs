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

/// Percent-decodes `text` (`+` is a space), a query string's or a form's name or value;
/// `None` when it is not valid UTF-8 afterwards.
pub(crate) fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = |at: usize| bytes.get(at).and_then(|&h| (h as char).to_digit(16));
        match b {
            b'+' => out.push(b' '),
            b'%' => match (hex(i + 1), hex(i + 2)) {
                (Some(high), Some(low)) => {
                    out.push((high * 16 + low) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            _ => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}
