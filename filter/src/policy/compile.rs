//! Checks the parsed configuration ([`RawConfig`]) and compiles it into a [`Policy`]: defaults
//! filled in, names resolved to ids, every mistake reported with its path and the fix.

use super::check::{ConfigError, at};
use super::follow;
use super::raw::{Object, RawConfig, RawSidecar};
use super::serde_error;
use super::{ErrorFormat, FailureMode, HeaderStyle, Policy, Sidecar, Usage, rule};

/// Shared-data slots when `state_slots` is not given.
const DEFAULT_STATE_SLOTS: u64 = 65_536;
/// Shared-data slots: at least this many …
const MIN_STATE_SLOTS: u64 = 1024;
/// … and at most this many.
const MAX_STATE_SLOTS: u64 = 4_194_304;

mod identity;
mod plans;

use identity::identity;
use plans::{default_plan, plans, tenants};

/// Parses and checks the plugin configuration (see [`Policy::from_json`]).
pub(super) fn compile(bytes: &[u8]) -> Result<Policy, ConfigError> {
    let raw: Object<RawConfig> = serde_error::parse(bytes)?;
    let secret = key_secret(raw.0.key_secret.clone())?;
    let mut policy = Policy::try_from(raw.0)?;
    policy.seed = seed(bytes, secret.as_deref());
    Ok(policy)
}

/// The longest `key_secret` (bytes).
const MAX_KEY_SECRET: usize = 1024;

/// `key_secret`: 16 to [`MAX_KEY_SECRET`] bytes when given.
fn key_secret(secret: Option<String>) -> Result<Option<String>, ConfigError> {
    match secret {
        Some(s) if s.len() < 16 || s.len() > MAX_KEY_SECRET => Err(at(
            "key_secret".into(),
            format!(
                "must be 16 to {MAX_KEY_SECRET} bytes long (a random string, the same on every node)"
            ),
        )),
        other => Ok(other),
    }
}

/// The seed of the bucket and user hashes ([`Policy::seed`]): from `key_secret` when given,
/// else from the `rules` alone, as canonical JSON (key order and whitespace do not matter).
/// Tenants, plans and every other setting can change without resetting a single counter, and
/// nodes that run the same rules hash alike.
fn seed(bytes: &[u8], secret: Option<&str>) -> u64 {
    use std::hash::BuildHasher;
    let hasher = foldhash::quality::FixedState::with_seed(0x746f_6c6c_6761_7465);
    if let Some(secret) = secret {
        return hasher.hash_one(secret.as_bytes());
    }
    let rules = serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|mut config| config.get_mut("rules").map(serde_json::Value::take))
        .unwrap_or_default();
    hasher.hash_one(serde_json::to_vec(&rules).unwrap_or_default())
}

impl TryFrom<RawConfig> for Policy {
    type Error = ConfigError;

    fn try_from(raw: RawConfig) -> Result<Policy, ConfigError> {
        let plans = plans(raw.plans)?;
        let default_plan = default_plan(raw.default_plan.as_deref(), &plans)?;
        let (tenants, hashed_tenants) =
            tenants(raw.tenants.map(|t| t.0).unwrap_or_default(), &plans)?;
        let identity = identity(raw.identity.map(|i| i.0))?;
        let rules = rule::rules(raw.rules, &plans, &identity)?;
        let state_slots = ranged(
            "state_slots",
            raw.state_slots.unwrap_or(DEFAULT_STATE_SLOTS),
            MIN_STATE_SLOTS,
            MAX_STATE_SLOTS,
            "",
        )?;
        let sidecar = raw.sidecar.map(|s| sidecar(s.0)).transpose()?;
        let usage = usage(raw.usage.map(|u| u.0), sidecar.is_some())?;
        let (registry, unknown_key) =
            follow::registry(raw.registry.map(|r| r.0), sidecar.is_some())?;
        Ok(Policy {
            rules,
            plans,
            default_plan,
            tenants,
            hashed_tenants,
            registry,
            unknown_key,
            identity,
            headers: header_style(raw.headers.as_deref())?,
            error_format: error_format(raw.error_format.as_deref())?,
            failure_mode: failure_mode(raw.failure_mode.as_deref())?,
            sidecar,
            state_slots: u32::try_from(state_slots).unwrap_or(u32::MAX),
            usage,
            seed: 0,
        })
    }
}

/// `usage`: on by default when there is a sidecar to send it to.
fn usage(
    raw: Option<super::raw::RawUsage>,
    has_sidecar: bool,
) -> Result<Option<Usage>, ConfigError> {
    let enabled = raw.as_ref().and_then(|u| u.enabled).unwrap_or(has_sidecar);
    let request_log = raw.as_ref().and_then(|u| u.request_log).unwrap_or(false);
    if !enabled {
        if request_log {
            return Err(at(
                "usage.request_log".into(),
                "the request log is sent with usage: turn usage on (a `sidecar` and \
                 usage.enabled not false) or set request_log to false"
                    .into(),
            ));
        }
        return Ok(None);
    }
    if !has_sidecar {
        return Err(at(
            "usage.enabled".into(),
            "usage is sent to the sidecar: configure `sidecar` or set it to false".into(),
        ));
    }
    let interval_ms = ranged(
        "usage.interval_ms",
        raw.as_ref().and_then(|u| u.interval_ms).unwrap_or(1_000),
        10,
        60_000,
        " milliseconds",
    )?;
    Ok(Some(Usage {
        interval_ms,
        request_log,
    }))
}

fn ranged(path: &str, value: u64, min: u64, max: u64, unit: &str) -> Result<u64, ConfigError> {
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(at(
            path.to_owned(),
            format!("{value} is out of range (use {min} to {max}{unit})"),
        ))
    }
}

fn non_empty(path: String, value: String, hint: &str) -> Result<String, ConfigError> {
    if value.is_empty() {
        Err(at(path, format!("empty ({hint})")))
    } else if value.chars().any(char::is_control) {
        Err(at(
            path,
            format!("{value:?} contains control characters ({hint})"),
        ))
    } else {
        Ok(value)
    }
}

fn sidecar(raw: RawSidecar) -> Result<Sidecar, ConfigError> {
    let cluster = non_empty(
        "sidecar.cluster".into(),
        raw.cluster,
        "name the Envoy cluster that reaches the sidecar",
    )?;
    let authority = match raw.authority {
        Some(authority) => non_empty(
            "sidecar.authority".into(),
            authority,
            "remove it to use the cluster name",
        )?,
        None => cluster.clone(),
    };
    Ok(Sidecar {
        cluster,
        authority,
        timeout_ms: ranged(
            "sidecar.timeout_ms",
            raw.timeout_ms.unwrap_or(100),
            1,
            60_000,
            " milliseconds",
        )?,
        sync_interval_ms: ranged(
            "sidecar.sync_interval_ms",
            raw.sync_interval_ms.unwrap_or(200),
            10,
            60_000,
            " milliseconds",
        )?,
        nodes: raw
            .nodes
            .map(|n| ranged("sidecar.nodes", n, 1, 10_000, " nodes"))
            .transpose()?,
        token: raw.token.map(follow::token).transpose()?,
    })
}

fn header_style(text: Option<&str>) -> Result<HeaderStyle, ConfigError> {
    Ok(match text {
        None | Some("draft-6") => HeaderStyle::Draft6,
        Some("draft-7") => HeaderStyle::Draft7,
        Some("draft-8") => HeaderStyle::Draft8,
        Some("ietf") => HeaderStyle::Ietf,
        Some("legacy") => HeaderStyle::Legacy,
        Some("none") => HeaderStyle::None,
        Some(other) => {
            return Err(at(
                "headers".into(),
                format!(
                    "unknown style {other:?} (use draft-6, draft-7, draft-8, ietf, legacy or none)"
                ),
            ));
        }
    })
}

fn error_format(text: Option<&str>) -> Result<ErrorFormat, ConfigError> {
    Ok(match text {
        None | Some("json") => ErrorFormat::Json,
        Some("problem+json") => ErrorFormat::ProblemJson,
        Some(other) => {
            return Err(at(
                "error_format".into(),
                format!("unknown format {other:?} (use json or problem+json)"),
            ));
        }
    })
}

fn failure_mode(text: Option<&str>) -> Result<FailureMode, ConfigError> {
    Ok(match text {
        None | Some("open") => FailureMode::Open,
        Some("closed") => FailureMode::Closed,
        Some(other) => {
            return Err(at(
                "failure_mode".into(),
                format!("unknown mode {other:?} (use open or closed)"),
            ));
        }
    })
}
