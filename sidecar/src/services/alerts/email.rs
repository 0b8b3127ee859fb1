//! Alert e-mails over SMTP (`TOLLGATE_SMTP_URL`): `smtp://host:port` (no TLS, e.g. a local
//! relay), `smtp://host:587?tls=required` (STARTTLS), `smtps://host:465` (TLS), with
//! `user:password@` when the server wants a login. Each e-mail is plain text with an HTML
//! alternative; its `Message-ID` is the delivery's id, the same on every retry.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde_json::Value;

use crate::storage::sql::alerts::AlertKind;

/// Why an e-mail was not sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MailError {
    /// The SMTP reply code, when the server answered.
    pub code: Option<u16>,
    /// Retrying cannot help (a 5xx reply, or a bad address).
    pub permanent: bool,
    /// What happened.
    pub message: String,
}

/// Sends alert e-mails through one SMTP server.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Mailer {
    /// A mailer for the server `url`, sending from `from`; each send gives up after `timeout`.
    /// The error never shows the URL's password.
    pub fn new(url: &str, from: &str, timeout: Duration) -> Result<Mailer, String> {
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| format!("TOLLGATE_SMTP_URL is not an SMTP URL: {e}"))?
            .timeout(Some(timeout))
            .build();
        let from = from
            .parse()
            .map_err(|e| format!("TOLLGATE_ALERT_FROM {from:?} is not an address: {e}"))?;
        Ok(Mailer { transport, from })
    }

    /// Sends the e-mail of an alert (`kind`, its webhook `payload`) to `to` as message `id`;
    /// the server's reply code.
    pub async fn send(
        &self,
        to: &str,
        id: &str,
        kind: AlertKind,
        payload: &Value,
    ) -> Result<u16, MailError> {
        let to: Mailbox = to.parse().map_err(|e| MailError {
            code: None,
            permanent: true,
            message: format!("not an address: {e}"),
        })?;
        let (subject, text, html) = render(kind, payload.get("data").unwrap_or(payload));
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .message_id(Some(format!("<{id}@tollgate>")))
            .multipart(
                MultiPart::alternative()
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_PLAIN)
                            .body(text),
                    )
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_HTML)
                            .body(html),
                    ),
            )
            .map_err(|e| MailError {
                code: None,
                permanent: true,
                message: format!("cannot build the e-mail: {e}"),
            })?;
        match self.transport.send(message).await {
            Ok(response) => Ok(u16::from(response.code())),
            Err(error) => Err(MailError {
                code: error.status().map(u16::from),
                permanent: error.is_permanent(),
                message: error.to_string(),
            }),
        }
    }
}

/// The subject, plain text and HTML of an alert whose webhook `data` is `data`.
pub fn render(kind: AlertKind, data: &Value) -> (String, String, String) {
    let text = |key: &str| match data.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
    let tenant = text("tenant");
    let mut lines = match kind {
        AlertKind::ThresholdReached => vec![format!(
            "Tenant {tenant} has used {} of its {} requests ({}% of its quota; alert threshold {}%).",
            text("used"),
            text("quota"),
            text("percent_used"),
            text("threshold"),
        )],
        AlertKind::PeriodEnding => vec![format!(
            "Tenant {tenant}'s billing period ends at {}. It has used {} of its {} requests.",
            text("period_end"),
            text("used"),
            text("quota"),
        )],
    };
    lines.push(format!(
        "Period: {} to {}.",
        text("period_start"),
        text("period_end")
    ));
    lines.push(format!(
        "Forecast for the period (an estimate, at the rate so far): {} requests.",
        text("forecast")
    ));
    if let Some(overage) = data.get("forecast_overage") {
        let mut line = format!("Forecast overage (an estimate): {overage} requests");
        if let Some(amount) = data.get("forecast_overage_amount") {
            let cents = amount.get("amount").and_then(Value::as_u64).unwrap_or(0);
            let currency = amount.get("currency").and_then(Value::as_str).unwrap_or("");
            line.push_str(&format!(
                ", about {}.{:02} {}",
                cents / 100,
                cents % 100,
                currency.to_uppercase()
            ));
        }
        line.push('.');
        lines.push(line);
    }
    if let Some(at) = data.get("forecast_exhausted_at") {
        lines.push(match at.as_str() {
            Some(at) => format!(
                "At this rate the quota runs out at {at} (an estimate); requests past it are refused until the next period."
            ),
            None => "At this rate the quota lasts until the end of the period.".to_owned(),
        });
    }
    let subject = match kind {
        AlertKind::ThresholdReached => {
            format!(
                "[Tollgate] {tenant} reached {}% of its quota",
                text("threshold")
            )
        }
        AlertKind::PeriodEnding => format!("[Tollgate] {tenant}'s billing period ends soon"),
    };
    let plain = format!("{}\n", lines.join("\n"));
    let html = format!(
        "<!doctype html><html><body><h1>{}</h1>{}</body></html>",
        crate::html::escape(&subject),
        lines
            .iter()
            .map(|line| format!("<p>{}</p>", crate::html::escape(line)))
            .collect::<String>()
    );
    (subject, plain, html)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn renders_text_and_escaped_html() {
        let data = json!({"tenant": "a<b>", "threshold": 80, "used": 16, "quota": 20,
            "percent_used": 80, "period_start": "2026-12-01T00:00:00Z",
            "period_end": "2027-01-01T00:00:00Z", "forecast": 99});
        let (subject, text, html) = render(AlertKind::ThresholdReached, &data);
        assert_eq!(subject, "[Tollgate] a<b> reached 80% of its quota");
        assert!(
            text.contains("has used 16 of its 20 requests (80% of its quota"),
            "{text}"
        );
        assert!(text.contains("99 requests"), "{text}");
        assert!(
            html.contains("a&lt;b&gt;") && !html.contains("a<b>"),
            "{html}"
        );
        let data = json!({"tenant": "t", "used": 3000, "quota": 2000, "forecast": 3100,
            "forecast_overage": 1100, "forecast_overage_amount": {"amount": 150, "currency": "usd"}});
        let (_, text, _) = render(AlertKind::PeriodEnding, &data);
        assert!(text.contains("1100 requests, about 1.50 USD."), "{text}");
        assert!(
            Mailer::new(
                "smtp://127.0.0.1:2525",
                "alerts@example.com",
                Duration::from_secs(1)
            )
            .is_ok()
        );
        for tls in [
            "smtps://user:secret@smtp.example.com:465",
            "smtp://smtp.example.com:587?tls=required",
            "smtp://smtp.example.com?tls=opportunistic",
        ] {
            assert!(
                Mailer::new(tls, "a@example.com", Duration::from_secs(1)).is_ok(),
                "{tls}"
            );
        }
        let error = Mailer::new("http://u:secret@x", "a@example.com", Duration::from_secs(1));
        assert!(!error.err().unwrap().contains("secret"));
        assert!(
            Mailer::new(
                "smtp://127.0.0.1:2525",
                "not an address",
                Duration::from_secs(1)
            )
            .is_err()
        );
    }
}
