//! Webhooks by the Standard Webhooks convention: `webhook-id`, `webhook-timestamp` (Unix
//! seconds of the attempt) and `webhook-signature: v1,<base64 HMAC-SHA256 of
//! "{id}.{timestamp}.{body}">`, keyed by the base64-decoded part of the tenant's `whsec_…`
//! secret. The id and the body are the same on every attempt; the timestamp and signature are
//! the attempt's own (receivers reject old timestamps).
//!
//! ```
//! use tollgate_sidecar::services::alerts::webhook::sign;
//!
//! // The Standard Webhooks specification's own example.
//! let signature = sign(
//!     "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
//!     "msg_p5jXN8AQM9LWM0D4loKWxJek",
//!     1614265330,
//!     r#"{"test": 2432232314}"#,
//! )
//! .unwrap();
//! assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
//! ```

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Why a payload cannot be signed.
#[derive(Debug, thiserror::Error)]
#[error("the webhook secret is not whsec_<base64>")]
pub struct BadSecret;

/// The `webhook-signature` value of `body` sent as message `id` at `timestamp`.
pub fn sign(secret: &str, id: &str, timestamp: u64, body: &str) -> Result<String, BadSecret> {
    let key = secret.strip_prefix("whsec_").ok_or(BadSecret)?;
    let key = STANDARD.decode(key).map_err(|_| BadSecret)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).map_err(|_| BadSecret)?;
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body.as_bytes());
    Ok(format!(
        "v1,{}",
        STANDARD.encode(mac.finalize().into_bytes())
    ))
}

/// What one POST got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The HTTP status; `None`: no answer (refused, timed out, TLS failed).
    pub status: Option<u16>,
    /// What went wrong (a non-2xx status or the transport error).
    pub error: Option<String>,
    /// The answer's `Retry-After`, seconds.
    pub retry_after: Option<u64>,
}

/// Posts webhooks: one HTTP client (connections reused), a timeout per attempt, redirects not
/// followed (a redirect is a failed attempt).
#[derive(Clone)]
pub struct WebhookClient {
    client: reqwest::Client,
}

impl WebhookClient {
    /// A client whose attempts give up after `timeout`.
    pub fn new(timeout: Duration) -> Result<WebhookClient, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("tollgate-sidecar/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(WebhookClient { client })
    }

    /// POSTs `body` to `url` as message `id` at `timestamp`, signed with `secret`.
    pub async fn post(
        &self,
        url: &str,
        id: &str,
        timestamp: u64,
        secret: &str,
        body: &str,
    ) -> Answer {
        let signature = match sign(secret, id, timestamp, body) {
            Ok(signature) => signature,
            Err(error) => {
                return Answer {
                    status: None,
                    error: Some(error.to_string()),
                    retry_after: None,
                };
            }
        };
        let sent = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body.to_owned())
            .send()
            .await;
        match sent {
            Ok(response) => {
                let status = response.status();
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse().ok());
                Answer {
                    status: Some(status.as_u16()),
                    error: (!status.is_success()).then(|| format!("HTTP {status}")),
                    retry_after,
                }
            }
            Err(error) => Answer {
                status: None,
                error: Some(transport_error(&error)),
                retry_after: None,
            },
        }
    }
}

/// A transport error in one line, without the URL (it may carry credentials).
fn transport_error(error: &reqwest::Error) -> String {
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else if error.is_request() {
        "request failed"
    } else {
        "failed"
    };
    let mut cause = String::new();
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        cause = inner.to_string();
        source = inner.source();
    }
    if cause.is_empty() {
        what.to_owned()
    } else {
        format!("{what}: {cause}")
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn signs_like_the_specification_and_refuses_bad_secrets() {
        // Standard Webhooks' test vector (standard-webhooks/libraries, the Python tests).
        assert_eq!(
            sign(
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                r#"{"test": 2432232314}"#
            )
            .unwrap(),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert!(sign("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "m", 1, "").is_err());
        assert!(sign("whsec_not base64!", "m", 1, "").is_err());
    }
}
