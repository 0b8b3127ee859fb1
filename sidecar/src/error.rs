//! The one error type of the HTTP API, [`ApiError`]: JSON `{"error": "<stable code>",
//! "message": "…"}` with a fitting status. Messages about the client's own input are returned;
//! internal causes (a counter store or usage store failure, a database error) are logged and
//! replaced by a generic message. Handlers count each error in `tollgate_errors_total{kind}`
//! (its [`code`](ApiError::code)) through one helper of [`crate::routes`].

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::{StatusCode, header};
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
    /// No or an unknown credential (`unauthorized`, 401, with `WWW-Authenticate: Bearer`).
    #[error("{0}")]
    Unauthorized(&'static str),
    /// A tenant key asking for another tenant (`forbidden`, 403).
    #[error("{0}")]
    Forbidden(&'static str),
    /// A bad query parameter, named (`invalid_parameter`, 400).
    #[error("{0}")]
    InvalidParameter(String),
    /// No tenant registry, and not the admin token (`no_tenants`, 503).
    #[error(
        "no tenant registry: the sidecar has no TOLLGATE_FILTER_CONFIG, so only the admin \
         token is served"
    )]
    NoTenants,
    /// The counter store (or the usage store) failed (its `kind()`, 503): transient, worth a
    /// retry, and what the filter's `failure_mode` is for.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A background job stopped while the sidecar serves (`job_stopped`, 503, from
    /// `/readyz`; see [`crate::jobs`]).
    #[error("the background job {0} stopped; restart the sidecar (its log says why)")]
    JobStopped(&'static str),
    /// A field of an admin request is refused (`invalid_request`, 422, with `"field"`).
    #[error("{field}: {message}")]
    InvalidField {
        /// The field (`billing_anchor_day`, `alerts.webhook_url`, …).
        field: String,
        /// Why.
        message: String,
    },
    /// No such tenant, plan or key (`not_found`, 404).
    #[error("{0}")]
    Missing(String),
    /// The usage database failed (`database_unavailable`, 503; the cause is logged).
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl ApiError {
    /// The stable `error` code (also the `kind` label of `tollgate_errors_total`).
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidJson(_) => "invalid_json",
            ApiError::InvalidRequest(_) | ApiError::InvalidField { .. } => "invalid_request",
            ApiError::Missing(_) => "not_found",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::UnsupportedMediaType(_) => "unsupported_media_type",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::InvalidParameter(_) => "invalid_parameter",
            ApiError::NoTenants => "no_tenants",
            ApiError::Store(error) => error.kind(),
            ApiError::JobStopped(_) => "job_stopped",
            ApiError::Database(_) => "database_unavailable",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::InvalidJson(_) => StatusCode::BAD_REQUEST,
            ApiError::InvalidRequest(_) | ApiError::InvalidField { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::Missing(_) => StatusCode::NOT_FOUND,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::InvalidParameter(_) => StatusCode::BAD_REQUEST,
            ApiError::NoTenants
            | ApiError::Store(_)
            | ApiError::JobStopped(_)
            | ApiError::Database(_) => StatusCode::SERVICE_UNAVAILABLE,
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

impl From<crate::services::registry::RegistryError> for ApiError {
    fn from(error: crate::services::registry::RegistryError) -> Self {
        use crate::services::registry::RegistryError;
        match error {
            RegistryError::Invalid(invalid) => ApiError::InvalidField {
                field: invalid.field,
                message: invalid.message,
            },
            RegistryError::NotFound(what) => ApiError::Missing(what),
            RegistryError::Database(cause) => ApiError::Database(cause),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = match &self {
            // The log's own words (its bound, the disk's error): nothing secret, and what the
            // operator needs to see.
            ApiError::Store(cause @ StoreError::UsageLog(_)) => {
                tracing::error!(error = %cause, code = self.code(), "usage log refused a batch");
                format!("{cause}; the batch is not counted, send it again later")
            }
            ApiError::Store(cause) => {
                tracing::error!(error = %cause, code = self.code(), "counter store failed");
                "the counter store cannot answer now; retry later".to_owned()
            }
            ApiError::Database(cause) => {
                tracing::error!(error = %cause, code = self.code(), "usage database failed");
                "the usage database cannot answer now; retry later".to_owned()
            }
            other => other.to_string(),
        };
        let body = match &self {
            ApiError::InvalidField { field, .. } => {
                Json(json!({ "error": self.code(), "message": message, "field": field }))
            }
            _ => Json(json!({ "error": self.code(), "message": message })),
        };
        if matches!(self, ApiError::Unauthorized(_)) {
            (self.status(), [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response()
        } else {
            (self.status(), body).into_response()
        }
    }
}

// The schema of `ApiError`'s JSON body in the OpenAPI document (its doc comment is the
// schema's description there).
/// Every error answer: a stable code, a message, and for a refused admin field its name.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    /// The stable code (`invalid_request`, `unauthorized`, `not_found`, …).
    error: String,
    /// What is wrong.
    message: String,
    /// The refused field (admin API, `invalid_request`).
    field: Option<String>,
}
