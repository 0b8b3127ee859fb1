//! `GET /metrics`: the Prometheus text exposition.

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::AppState;
use crate::storage::CounterStore;

/// The Prometheus text format's content type.
pub const CONTENT_TYPE_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The metrics route.
pub fn router<S: CounterStore>() -> Router<AppState<S>> {
    Router::new().route("/metrics", get(metrics::<S>))
}

async fn metrics<S: CounterStore>(State(app): State<AppState<S>>) -> impl IntoResponse {
    ([(CONTENT_TYPE, CONTENT_TYPE_TEXT)], app.metrics.render())
}
