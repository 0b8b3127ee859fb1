//! A small typed Stripe client over `reqwest`: the five calls Tollgate makes, nothing else.
//!
//! - `POST /v1/billing/meter_events` ([`StripeClient::meter_event`])
//! - `GET /v1/billing/meters` and `GET /v1/billing/meters/{id}/event_summaries`
//!   ([`StripeClient::meters`], [`StripeClient::event_summaries`])
//! - `POST /v1/invoices`, `POST /v1/invoiceitems`, `POST /v1/invoices/{id}/finalize`
//!   ([`StripeClient::post`], used by the overage invoices)
//!
//! Every request carries `Authorization: Bearer <secret key>` (the key is never logged nor
//! shown by `Debug`), every POST is form-encoded (`payload[value]=…`) and carries an
//! `Idempotency-Key`. Answers are sorted into [`Answer`]: what Stripe accepted, what it refused
//! for good (with its error), and what may be retried (429, 5xx, 409, timeouts, dropped
//! connections; `Stripe-Should-Retry` decides when present, `Retry-After` is kept).
//!
//! Why not a Stripe crate: `async-stripe` 0.41 has no billing meters, and 1.0 is a release
//! candidate with no event-summary pagination helpers we need and a large compile; these
//! five form posts are about 200 lines of our own that we test against the stand-in.

use std::time::Duration;

use serde_json::Value;

/// The Stripe API base URL (`TOLLGATE_STRIPE_API_BASE`'s default).
pub const DEFAULT_BASE: &str = "https://api.stripe.com";

/// A Stripe client: base URL, secret key, one HTTP connection pool.
#[derive(Clone)]
pub struct StripeClient {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl std::fmt::Debug for StripeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeClient")
            .field("base", &self.base)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// How Stripe answered one call.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// 2xx: the object Stripe returned.
    Ok(Value),
    /// Refused for good (a 4xx that must not be retried): status and Stripe's error.
    Refused {
        /// The HTTP status.
        status: u16,
        /// Stripe's `error.type`, `error.code` and `error.message`, joined.
        error: String,
    },
    /// May succeed later: why, and how long Stripe asked to wait (`Retry-After`).
    Retry {
        /// The status (None: no answer: timeout, connection refused or dropped).
        status: Option<u16>,
        /// What went wrong.
        error: String,
        /// `Retry-After`, when Stripe sent one.
        after: Option<Duration>,
    },
}

/// Why the client cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No secret key.
    #[error("TOLLGATE_STRIPE_API_KEY is not set: meter events and invoices wait until it is")]
    NoKey,
    /// The HTTP client could not be built.
    #[error("cannot build the Stripe HTTP client: {0}")]
    Http(String),
}

/// Whether a 400 says the meter event's identifier was accepted before (Stripe: "An event
/// already exists with identifier …"): the event is delivered.
pub fn already_exists(answer: &Answer) -> bool {
    matches!(answer, Answer::Refused { status: 400, error } if error.contains("already exists with identifier"))
}

/// Sorts a non-2xx answer: `should_retry` (the `Stripe-Should-Retry` header) decides when
/// present; else 409, 429 and 5xx are retried and other statuses refused.
pub fn classify(
    status: u16,
    should_retry: Option<bool>,
    after: Option<Duration>,
    body: &Value,
) -> Answer {
    let error = error_text(body);
    let retry = should_retry.unwrap_or(status == 409 || status == 429 || status >= 500);
    if retry {
        Answer::Retry {
            status: Some(status),
            error,
            after,
        }
    } else {
        Answer::Refused { status, error }
    }
}

fn error_text(body: &Value) -> String {
    let error = body.get("error");
    let part = |name: &str| {
        error
            .and_then(|e| e.get(name))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let text = [part("type"), part("code"), part("message")]
        .into_iter()
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join(": ");
    if text.is_empty() {
        let raw = body.to_string();
        raw.chars().take(300).collect()
    } else {
        text
    }
}

impl StripeClient {
    /// A client of `base` with secret `key`; each call gives up after `timeout`.
    pub fn new(base: &str, key: Option<&str>, timeout: Duration) -> Result<Self, ClientError> {
        let key = key.filter(|k| !k.is_empty()).ok_or(ClientError::NoKey)?;
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .pool_max_idle_per_host(64)
            .build()
            .map_err(|e| ClientError::Http(e.to_string()))?;
        Ok(StripeClient {
            http,
            base: base.trim_end_matches('/').to_owned(),
            key: key.to_owned(),
        })
    }

    /// `POST {base}{path}` with `form` (form-encoded, in order) and `Idempotency-Key: key`.
    pub async fn post(
        &self,
        path: &str,
        form: &[(String, String)],
        idempotency_key: &str,
    ) -> Answer {
        let request = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .header("Idempotency-Key", idempotency_key)
            .form(form);
        answer(request.send().await).await
    }

    /// `GET {base}{path}?query`.
    pub async fn get(&self, path: &str, query: &[(String, String)]) -> Answer {
        let request = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.key)
            .query(query);
        answer(request.send().await).await
    }

    /// Reports one meter event (`POST /v1/billing/meter_events`); the identifier is also the
    /// idempotency key.
    pub async fn meter_event(&self, event: &MeterEvent<'_>) -> Answer {
        let form = vec![
            ("event_name".to_owned(), event.event_name.to_owned()),
            (
                "payload[stripe_customer_id]".to_owned(),
                event.customer.to_owned(),
            ),
            ("payload[value]".to_owned(), event.value.to_string()),
            ("identifier".to_owned(), event.identifier.to_owned()),
            ("timestamp".to_owned(), event.timestamp.to_string()),
        ];
        self.post("/v1/billing/meter_events", &form, event.identifier)
            .await
    }

    /// Every meter's `(event_name, id)` (`GET /v1/billing/meters`, every page).
    pub async fn meters(&self) -> Result<Vec<(String, String)>, Answer> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut query = vec![("limit".to_owned(), "100".to_owned())];
            if let Some(id) = &after {
                query.push(("starting_after".to_owned(), id.clone()));
            }
            let page = match self.get("/v1/billing/meters", &query).await {
                Answer::Ok(page) => page,
                other => return Err(other),
            };
            let data = page
                .get("data")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for meter in &data {
                let field = |name: &str| meter.get(name).and_then(Value::as_str).map(str::to_owned);
                if let (Some(name), Some(id)) = (field("event_name"), field("id")) {
                    out.push((name, id));
                }
            }
            after = match (page.get("has_more").and_then(Value::as_bool), data.last()) {
                (Some(true), Some(last)) => {
                    last.get("id").and_then(Value::as_str).map(str::to_owned)
                }
                _ => None,
            };
            if after.is_none() {
                break;
            }
        }
        Ok(out)
    }

    /// The meter `meter`'s daily sums for `customer` from `start` to `end` (Unix seconds, start
    /// included), `value_grouping_window=day`, every page: `(day start, aggregated value)`.
    pub async fn event_summaries(
        &self,
        meter: &str,
        customer: &str,
        start: i64,
        end: i64,
    ) -> Result<Vec<(i64, f64)>, Answer> {
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut query = vec![
                ("customer".to_owned(), customer.to_owned()),
                ("start_time".to_owned(), start.to_string()),
                ("end_time".to_owned(), end.to_string()),
                ("value_grouping_window".to_owned(), "day".to_owned()),
                ("limit".to_owned(), "100".to_owned()),
            ];
            if let Some(id) = &after {
                query.push(("starting_after".to_owned(), id.clone()));
            }
            let page = match self
                .get(
                    &format!("/v1/billing/meters/{meter}/event_summaries"),
                    &query,
                )
                .await
            {
                Answer::Ok(page) => page,
                other => return Err(other),
            };
            let data = page
                .get("data")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for summary in &data {
                out.push((
                    summary
                        .get("start_time")
                        .and_then(Value::as_i64)
                        .unwrap_or(0),
                    summary
                        .get("aggregated_value")
                        .and_then(Value::as_f64)
                        .unwrap_or(0.0),
                ));
            }
            match (page.get("has_more").and_then(Value::as_bool), data.last()) {
                (Some(true), Some(last)) => {
                    after = last.get("id").and_then(Value::as_str).map(str::to_owned)
                }
                _ => break,
            }
            if after.is_none() {
                break;
            }
        }
        Ok(out)
    }
}

/// One meter event to report.
#[derive(Clone, Copy, Debug)]
pub struct MeterEvent<'a> {
    /// The meter's event name.
    pub event_name: &'a str,
    /// The Stripe customer.
    pub customer: &'a str,
    /// The whole-number value.
    pub value: i64,
    /// The deterministic identifier (also the idempotency key).
    pub identifier: &'a str,
    /// Unix seconds.
    pub timestamp: i64,
}

async fn answer(sent: Result<reqwest::Response, reqwest::Error>) -> Answer {
    let response = match sent {
        Ok(response) => response,
        Err(error) => {
            return Answer::Retry {
                status: None,
                error: transport(error),
                after: None,
            };
        }
    };
    let status = response.status().as_u16();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let should_retry = header("stripe-should-retry").map(|v| v == "true");
    let after = header("retry-after")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body: Value = match response.bytes().await {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        Err(error) => {
            // The status came, the body did not: the outcome is unknown, so retry (the
            // idempotency key makes that safe).
            return Answer::Retry {
                status: Some(status),
                error: transport(error),
                after,
            };
        }
    };
    if (200..300).contains(&status) {
        Answer::Ok(body)
    } else {
        classify(status, should_retry, after, &body)
    }
}

/// A transport error without the URL's query (never the key: it is only in a header).
fn transport(error: reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timeout"
    } else if error.is_connect() {
        "cannot connect"
    } else {
        "connection failed"
    };
    format!("{kind}: {}", error.without_url())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sorts_answers_as_stripe_documents() {
        let dup = json!({"error": {"type": "invalid_request_error",
                                   "message": "An event already exists with identifier x."}});
        let answer = classify(400, Some(false), None, &dup);
        assert!(already_exists(&answer), "{answer:?}");
        let bad = json!({"error": {"type": "invalid_request_error", "code": "parameter_missing",
                                   "message": "Missing required param: event_name."}});
        let answer = classify(400, None, None, &bad);
        assert!(
            matches!(&answer, Answer::Refused { status: 400, error } if error.contains("parameter_missing"))
        );
        assert!(!already_exists(&answer));
        let after = Some(Duration::from_secs(3));
        assert!(
            matches!(classify(429, None, after, &json!({})), Answer::Retry { after: Some(a), .. } if a.as_secs() == 3)
        );
        assert!(matches!(
            classify(500, None, None, &json!({})),
            Answer::Retry { .. }
        ));
        // Stripe-Should-Retry wins over the status either way.
        assert!(matches!(
            classify(500, Some(false), None, &json!({})),
            Answer::Refused { .. }
        ));
        assert!(matches!(
            classify(400, Some(true), None, &json!({})),
            Answer::Retry { .. }
        ));
    }

    #[test]
    fn never_shows_the_key() {
        let client =
            StripeClient::new("http://x/", Some("sk_test_secret"), Duration::from_secs(1)).unwrap();
        assert!(!format!("{client:?}").contains("sk_test_secret"));
        assert!(matches!(
            StripeClient::new("http://x", None, Duration::from_secs(1)),
            Err(ClientError::NoKey)
        ));
    }
}
