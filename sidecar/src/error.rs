//! The HTTP API's errors: JSON `{"error": "<stable code>", "message": "…"}` with a fitting
//! status. Messages about the client's own input are returned; internal causes are logged and
//! replaced by a generic message.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::storage::StoreError;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not JSON at all (`invalid_json`, 400).
    #[error("{0}")]
    InvalidJson(String),
    /// The body is JSON but not the expected message: a missing, unknown or mistyped field,
    /// or a value out of range (`invalid_request`, 422).
    #[error("{0}")]
    InvalidRequest(String),
    /// The body is larger than the sidecar accepts (`payload_too_large`, 413).
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The body is not declared as `application/json` (`unsupported_media_type`, 415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// No such route (`not_found`, 404).
    #[error("no such endpoint")]
    NotFound,
    /// The route exists but not for this method (`method_not_allowed`, 405).
    #[error("method not allowed on this endpoint")]
    MethodNotAllowed,
    /// The counter store failed (its `kind()`, 503): transient, worth a retry, and what the
    /// filter's `failure_mode` is for.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ApiError {
    /// The stable `error` code (also the `kind` label of `tollgate_errors_total`).
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidJson(_) => "invalid_json",
            ApiError::InvalidRequest(_) => "invalid_request",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Store(error) => error.kind(),
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidJson(_) => StatusCode::BAD_REQUEST,
            ApiError::InvalidRequest(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Maps axum's JSON extractor rejection; `body_limit` is the configured body limit.
    pub fn from_json_rejection(rejection: JsonRejection, body_limit: usize) -> Self {
        match rejection {
            JsonRejection::JsonSyntaxError(e) => ApiError::InvalidJson(e.body_text()),
            JsonRejection::JsonDataError(e) => ApiError::InvalidRequest(e.body_text()),
            JsonRejection::MissingJsonContentType(e) => {
                ApiError::UnsupportedMediaType(e.body_text())
            }
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::PayloadTooLarge { limit: body_limit }
            }
            other => ApiError::InvalidRequest(other.body_text()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = match &self {
            ApiError::Store(cause) => {
                tracing::error!(error = %cause, code = self.code(), "counter store failed");
                "the counter store cannot answer now; retry later".to_owned()
            }
            other => other.to_string(),
        };
        let body = json!({ "error": self.code(), "message": message });
        (self.status(), Json(body)).into_response()
    }
}
