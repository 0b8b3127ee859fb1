//! What the admin API and the CLI accept, and its validation: every refusal names the field
//! ([`Invalid`]).

use serde::Deserialize;
use tollgate_filter::registry::{Overage, TenantStatus};
use tollgate_filter::usage::MAX_LABEL_LEN;

use crate::storage::sql::registry::{Alerts, Billing, OveragePrice, PlanRecord};

/// A refused field: which, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    /// The field (`billing_anchor_day`, `alerts.webhook_url`, `name`, …).
    pub field: String,
    /// Why.
    pub message: String,
}

fn invalid(field: &str, message: impl Into<String>) -> Invalid {
    Invalid {
        field: field.to_owned(),
        message: message.into(),
    }
}

/// The longest URL, e-mail or external id accepted.
pub const MAX_TEXT_LEN: usize = 2_048;

/// `PUT /v1/admin/plans/{name}`'s body.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanInput {
    /// Its rate (required).
    pub requests_per_minute: u64,
    /// Token-bucket capacity (default: the rule's own).
    #[serde(default)]
    pub burst: Option<u64>,
    /// Requests per period (default: none).
    #[serde(default)]
    pub monthly_quota: Option<u64>,
    /// Default `block`.
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "block")]
    pub overage: Option<Overage>,
    /// Default none.
    #[serde(default)]
    pub overage_price: Option<OveragePrice>,
    /// Default `none`.
    #[serde(default)]
    pub billing: Option<Billing>,
    /// Default `api_requests`.
    #[serde(default)]
    pub meter_event_name: Option<String>,
}

/// `PUT /v1/admin/tenants/{id}`'s body.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantInput {
    /// Its plan (required; must exist).
    pub plan: String,
    /// Its Stripe customer (`cus_…`).
    #[serde(default)]
    pub stripe_customer_id: Option<String>,
    /// 1 to 28, default 1.
    #[serde(default)]
    pub billing_anchor_day: Option<u32>,
    /// Default `active`.
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "active")]
    pub status: Option<TenantStatus>,
    /// Default: no webhook, no e-mail, thresholds [80, 100].
    #[serde(default)]
    pub alerts: Option<AlertsInput>,
}

/// A tenant's alert settings.
#[derive(Clone, Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertsInput {
    /// `https://…` (or `http://`).
    #[serde(default)]
    pub webhook_url: Option<String>,
    /// An e-mail address.
    #[serde(default)]
    pub email: Option<String>,
    /// Percentages of the quota, 1 to 1000, increasing; default [80, 100].
    #[serde(default)]
    pub thresholds: Option<Vec<u32>>,
}

/// Checks a plan name or tenant id: 1 to [`MAX_LABEL_LEN`] bytes of letters, digits and
/// `_ - . : @`.
pub fn check_name(field: &str, name: &str) -> Result<(), Invalid> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "_-.:@".contains(c);
    if name.is_empty() || name.len() > MAX_LABEL_LEN || !name.chars().all(allowed) {
        return Err(invalid(
            field,
            format!("{name:?} must be 1 to {MAX_LABEL_LEN} letters, digits or _ - . : @"),
        ));
    }
    Ok(())
}

impl PlanInput {
    /// The plan named `name`, or the first bad field.
    pub fn validate(self, name: &str) -> Result<PlanRecord, Invalid> {
        check_name("name", name)?;
        let positive = |field: &str, n: u64| {
            if n == 0 {
                Err(invalid(field, "must be at least 1"))
            } else {
                Ok(())
            }
        };
        positive("requests_per_minute", self.requests_per_minute)?;
        if let Some(burst) = self.burst {
            positive("burst", burst)?;
        }
        if let Some(quota) = self.monthly_quota {
            positive("monthly_quota", quota)?;
        }
        if let Some(price) = &self.overage_price {
            positive("overage_price.per", price.per)?;
            let currency = &price.currency;
            if currency.len() != 3 || !currency.chars().all(|c| c.is_ascii_lowercase()) {
                return Err(invalid(
                    "overage_price.currency",
                    format!("{currency:?} is not a lowercase ISO 4217 code (usd, eur)"),
                ));
            }
        }
        let meter_event_name = self
            .meter_event_name
            .unwrap_or_else(|| "api_requests".into());
        let allowed = |c: char| c.is_ascii_alphanumeric() || "_-.".contains(c);
        if meter_event_name.is_empty()
            || meter_event_name.len() > 100
            || !meter_event_name.chars().all(allowed)
        {
            return Err(invalid(
                "meter_event_name",
                "must be 1 to 100 letters, digits or _ - .",
            ));
        }
        Ok(PlanRecord {
            name: name.to_owned(),
            requests_per_minute: self.requests_per_minute,
            burst: self.burst,
            monthly_quota: self.monthly_quota,
            overage: self.overage.unwrap_or(Overage::Block),
            overage_price: self.overage_price,
            billing: self.billing.unwrap_or(Billing::None),
            meter_event_name,
        })
    }
}

/// A tenant's settings, checked (the plan's existence is checked by the caller).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantSettings {
    /// Its plan.
    pub plan: String,
    /// Its Stripe customer.
    pub stripe_customer_id: Option<String>,
    /// 1 to 28.
    pub billing_anchor_day: u32,
    /// Active or suspended.
    pub status: TenantStatus,
    /// Alerts.
    pub alerts: Alerts,
}

impl TenantInput {
    /// The settings of tenant `id`, or the first bad field.
    pub fn validate(self, id: &str) -> Result<TenantSettings, Invalid> {
        check_name("id", id)?;
        check_name("plan", &self.plan)?;
        if let Some(customer) = &self.stripe_customer_id
            && (!customer.starts_with("cus_") || customer.len() > 255)
        {
            return Err(invalid(
                "stripe_customer_id",
                "must be a Stripe customer id (cus_…, at most 255 bytes)",
            ));
        }
        let billing_anchor_day = self.billing_anchor_day.unwrap_or(1);
        if !(1..=28).contains(&billing_anchor_day) {
            return Err(invalid(
                "billing_anchor_day",
                format!("{billing_anchor_day} is not a day from 1 to 28"),
            ));
        }
        let alerts = self.alerts.unwrap_or_default();
        if let Some(url) = &alerts.webhook_url {
            check_url(url)?;
        }
        if let Some(email) = &alerts.email {
            check_email(email)?;
        }
        let thresholds = alerts.thresholds.unwrap_or_else(|| vec![80, 100]);
        let increasing = thresholds.windows(2).all(|w| w.first() < w.get(1));
        if thresholds.len() > 10
            || !increasing
            || thresholds.iter().any(|t| !(1..=1_000).contains(t))
        {
            return Err(invalid(
                "alerts.thresholds",
                "must be at most 10 increasing percentages from 1 to 1000",
            ));
        }
        Ok(TenantSettings {
            plan: self.plan,
            stripe_customer_id: self.stripe_customer_id,
            billing_anchor_day,
            status: self.status.unwrap_or(TenantStatus::Active),
            alerts: Alerts {
                webhook_url: alerts.webhook_url,
                email: alerts.email,
                thresholds,
            },
        })
    }
}

fn check_url(url: &str) -> Result<(), Invalid> {
    let field = "alerts.webhook_url";
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    let host = rest.map(|rest| rest.split(['/', '?', '#']).next().unwrap_or(""));
    let bad_char = |c: char| c.is_whitespace() || c.is_control();
    match host {
        Some(host) if !host.is_empty() && url.len() <= MAX_TEXT_LEN && !url.contains(bad_char) => {
            Ok(())
        }
        _ => Err(invalid(
            field,
            format!("must be an http:// or https:// URL with a host, at most {MAX_TEXT_LEN} bytes"),
        )),
    }
}

fn check_email(email: &str) -> Result<(), Invalid> {
    let parts = email.split_once('@');
    let ok = parts.is_some_and(|(local, domain)| {
        !local.is_empty() && domain.contains('.') && !domain.contains('@')
    }) && email.len() <= 254
        && !email.contains(|c: char| c.is_whitespace() || c.is_control());
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "alerts.email",
            format!("{email:?} is not an e-mail address"),
        ))
    }
}
