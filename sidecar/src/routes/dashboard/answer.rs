//! How the dashboard answers: HTML with its security headers, redirects with the session
//! cookie, JSON errors, and the compiled-in assets.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{COOKIE, DashboardState, page};
use crate::error::ApiError;

pub(super) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub(super) fn html(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    secure_headers(headers);
    response
}

pub(super) fn secure_headers(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

pub(super) fn redirect(to: &'static str, cookie: Option<String>) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, HeaderValue::from_static(to));
    secure_headers(headers);
    if let Some(value) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        headers.insert(header::SET_COOKIE, value);
    }
    response
}

pub(super) fn json_error<Q>(state: &DashboardState<Q>, error: ApiError) -> Response {
    let mut response = crate::routes::fail(&state.metrics, error).into_response();
    secure_headers(response.headers_mut());
    response
}

/// A database or random-source failure on an HTML route: logged, a 503 page.
pub(super) fn unavailable<Q>(state: &DashboardState<Q>, error: impl std::fmt::Display) -> Response {
    tracing::error!(%error, "dashboard: cannot answer");
    state.metrics.error("database_unavailable");
    html(
        StatusCode::SERVICE_UNAVAILABLE,
        page::message(
            "Try again shortly",
            "The usage database cannot answer now; retry in a moment.",
        ),
    )
}

pub(super) fn cookie_value<Q>(state: &DashboardState<Q>, token: &str) -> String {
    format!(
        "{COOKIE}={token}; Path=/dashboard; HttpOnly; SameSite=Lax; Max-Age={}{}",
        state.settings.session_ttl.as_secs(),
        if state.settings.secure_cookie {
            "; Secure"
        } else {
            ""
        }
    )
}

pub(super) fn cleared_cookie() -> String {
    format!("{COOKIE}=; Path=/dashboard; HttpOnly; SameSite=Lax; Max-Age=0")
}

/// The session token the request's cookies carry, if any.
pub(super) fn session_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, value)| *name == COOKIE && !value.is_empty())
        .map(|(_, value)| value)
}

/// Who the request's session signs in (`None`: no live session).
pub(super) async fn script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("assets/dashboard.js"),
    )
}

pub(super) async fn style() -> Response {
    asset(
        "text/css; charset=utf-8",
        include_str!("assets/dashboard.css"),
    )
}

pub(super) fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}
