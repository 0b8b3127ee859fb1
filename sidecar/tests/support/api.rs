//! Driving `app()` without a socket: a fixed clock, requests, JSON answers.
#![allow(dead_code, clippy::unwrap_used)]

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;
use tollgate_sidecar::storage::CounterStore;
use tollgate_sidecar::{AppState, app};
use tower::ServiceExt;

/// The instant every test app decides at (Unix nanoseconds).
pub const NOW: u64 = 1_000_000_000_000;
/// One hour in nanoseconds.
pub const HOUR: u64 = 3_600_000_000_000;

/// The clock of test apps: always [`NOW`].
pub fn fixed_clock() -> u64 {
    NOW
}

/// The app over `store`, deciding at [`NOW`].
pub fn with_fixed_clock<S: CounterStore>(store: S) -> Router {
    app(AppState {
        clock: fixed_clock,
        ..AppState::new(store)
    })
}

/// Sends `request`; the status and the body as text.
pub async fn send(app: &Router, request: Request<Body>) -> (StatusCode, String) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(bytes.to_vec()).unwrap())
}

/// Sends `request`; the status and the body as JSON.
pub async fn send_json(app: &Router, request: Request<Body>) -> (StatusCode, Value) {
    let (status, text) = send(app, request).await;
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
    (status, body)
}

/// `GET path`; the status and the body as text.
pub async fn get(app: &Router, path: &str) -> (StatusCode, String) {
    send(app, Request::get(path).body(Body::empty()).unwrap()).await
}

/// `POST path` with a JSON `body` (sent as is); the status and the answer as JSON.
pub async fn post(app: &Router, path: &str, body: impl Into<Body>) -> (StatusCode, Value) {
    let request = Request::post(path)
        .header("content-type", "application/json")
        .body(body.into())
        .unwrap();
    send_json(app, request).await
}

/// Asserts a JSON error with `code` whose message contains `needle`.
pub fn assert_error(response: (StatusCode, Value), status: StatusCode, code: &str, needle: &str) {
    let (actual, body) = response;
    assert_eq!(actual, status, "{body}");
    assert_eq!(body["error"], code, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains(needle), "{message:?} lacks {needle:?}");
}

/// `method path` with an optional bearer `token` and a JSON `body` (`Value::Null`: none); the
/// status and the answer as JSON (`Value::Null` when empty).
pub async fn call(
    app: &Router,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Value,
) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let body = if body.is_null() {
        Body::empty()
    } else {
        Body::from(body.to_string())
    };
    let request = request
        .header("content-type", "application/json")
        .body(body)
        .unwrap();
    let response = tower::ServiceExt::oneshot(app.clone(), request)
        .await
        .unwrap();
    let status = response.status();
    let bytes = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (status, body)
}
