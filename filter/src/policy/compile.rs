//! Checks the parsed configuration ([`RawConfig`]) and compiles it into a [`Policy`]: defaults
//! filled in, names resolved to ids, every mistake reported with its path and the fix.

use hashbrown::HashMap;

use super::check::{MAX_LIMIT, at, header_name, unknown_plan, valid_name};
use super::follow;
use super::raw::{
    Object, OrderedMap, RawConfig, RawIdentity, RawJwt, RawPlan, RawSidecar, RawTenant,
};
use super::serde_error::{self, child};

use super::check::ConfigError;
use super::{
    ErrorFormat, FailureMode, HeaderStyle, Identity, Jwt, Plan, PlanId, Policy, Sidecar, Tenant,
    Usage, rule,
};

/// Shared-data slots when `state_slots` is not given.
const DEFAULT_STATE_SLOTS: u64 = 65_536;
/// Shared-data slots: at least this many …
const MIN_STATE_SLOTS: u64 = 1024;
/// … and at most this many.
const MAX_STATE_SLOTS: u64 = 4_194_304;
/// Proxies in front of this one that may be trusted to append to `X-Forwarded-For`.
const MAX_XFF_HOPS: u64 = 10;
/// Where API keys arrive unless `identity.api_key_header` says otherwise.
const DEFAULT_API_KEY_HEADER: &str = "x-api-key";

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

fn plan_id(path: String, name: &str, plans: &[Plan]) -> Result<PlanId, ConfigError> {
    plans
        .iter()
        .position(|p| p.name == name)
        .ok_or_else(|| at(path, unknown_plan(name, plans)))
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

fn plans(raw: Option<OrderedMap<Object<RawPlan>>>) -> Result<Vec<Plan>, ConfigError> {
    let Some(raw) = raw else {
        return Ok([("free", 100), ("pro", 1_000), ("enterprise", 10_000)]
            .into_iter()
            .map(|(name, rpm)| Plan {
                name: name.into(),
                requests_per_minute: rpm,
                burst: None,
            })
            .collect());
    };
    let mut plans: Vec<Plan> = Vec::with_capacity(raw.0.len());
    for (name, plan) in raw.0 {
        let path = child("plans", &name);
        if !valid_name(&name) {
            return Err(at(
                path,
                format!(
                    "{name:?} is not a valid plan name (use 1-64 characters of A-Z, a-z, 0-9, '_', '.', '-')"
                ),
            ));
        }
        if plans.iter().any(|p| p.name == name) {
            return Err(at(path, "given twice (define each plan once)".into()));
        }
        let rpm_path = child(&path, "requests_per_minute");
        let rpm = ranged(&rpm_path, plan.0.requests_per_minute, 1, MAX_LIMIT, "")?;
        plans.push(Plan {
            name,
            requests_per_minute: rpm,
            burst: None,
        });
    }
    Ok(plans)
}

fn default_plan(name: Option<&str>, plans: &[Plan]) -> Result<Option<PlanId>, ConfigError> {
    match name {
        Some(name) => plan_id("default_plan".into(), name, plans).map(Some),
        None => Ok(plans.iter().position(|p| p.name == "free")),
    }
}

/// Static tenants by plain key, and by hash for keys given as `sha256:<hex>`.
type StaticTenants = (HashMap<String, Tenant>, HashMap<[u8; 32], Tenant>);

fn tenants(
    raw: Vec<(String, Object<RawTenant>)>,
    plans: &[Plan],
) -> Result<StaticTenants, ConfigError> {
    let mut tenants = HashMap::with_capacity(raw.len());
    let mut hashed = HashMap::new();
    for (key, raw_tenant) in raw {
        let path = child("tenants", &key);
        if let Some(hex) = key.strip_prefix(follow::SHA256_PREFIX) {
            let hash = follow::key_hash(&path, hex)?;
            if hashed.contains_key(&hash) {
                return Err(at(path, "given twice (list each API key once)".into()));
            }
            hashed.insert(hash, tenant(&path, raw_tenant.0, plans)?);
            continue;
        }
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(at(
                path,
                "not a usable API key (it is matched against a header value: use visible ASCII, no spaces)"
                    .into(),
            ));
        }
        if tenants.contains_key(&key) {
            return Err(at(path, "given twice (list each API key once)".into()));
        }
        let compiled = tenant(&path, raw_tenant.0, plans)?;
        tenants.insert(key, compiled);
    }
    Ok((tenants, hashed))
}

fn tenant(path: &str, raw: RawTenant, plans: &[Plan]) -> Result<Tenant, ConfigError> {
    let id = non_empty(
        child(path, "id"),
        raw.id,
        "give the tenant's id, e.g. \"t-acme\"",
    )?;
    let plan = plan_id(child(path, "plan"), &raw.plan, plans)?;
    let stripe_customer_id = match raw.stripe_customer_id {
        Some(customer) if !customer.starts_with("cus_") || customer.len() < 5 => {
            return Err(at(
                child(path, "stripe_customer_id"),
                format!("{customer:?} is not a Stripe customer id (they look like \"cus_...\")"),
            ));
        }
        other => other,
    };
    Ok(Tenant {
        id,
        plan,
        stripe_customer_id,
    })
}

fn identity(raw: Option<RawIdentity>) -> Result<Identity, ConfigError> {
    let Some(raw) = raw else {
        return Ok(Identity {
            api_key_header: Some(DEFAULT_API_KEY_HEADER.into()),
            jwt: None,
            xff_trusted_hops: 0,
        });
    };
    let api_key_header = match raw.api_key_header {
        None => Some(DEFAULT_API_KEY_HEADER.to_owned()),
        Some(None) => None,
        Some(Some(name)) => Some(header_name("identity.api_key_header", &name)?),
    };
    let jwt = raw.jwt.map(|j| jwt(j.0)).transpose()?;
    let hops = raw
        .client_ip
        .and_then(|c| c.0.xff_trusted_hops)
        .unwrap_or(0);
    let hops = ranged(
        "identity.client_ip.xff_trusted_hops",
        hops,
        0,
        MAX_XFF_HOPS,
        ": how many proxies in front of this one append to X-Forwarded-For",
    )?;
    Ok(Identity {
        api_key_header,
        jwt,
        xff_trusted_hops: u32::try_from(hops).unwrap_or(0),
    })
}

fn jwt(raw: RawJwt) -> Result<Jwt, ConfigError> {
    let path = "identity.jwt";
    let header = header_name(
        &child(path, "header"),
        raw.header.as_deref().unwrap_or("authorization"),
    )?;
    let text = |field: &str, value: Option<String>, default: &str, hint: &str| {
        non_empty(
            child(path, field),
            value.unwrap_or_else(|| default.to_owned()),
            hint,
        )
    };
    let claims_header = raw
        .claims_header
        .map(|name| header_name(&child(path, "claims_header"), &name))
        .transpose()?;
    if claims_header.as_deref() == Some(header.as_str()) {
        return Err(at(
            child(path, "claims_header"),
            format!(
                "{header:?} is the token's own header, which nothing has verified (name the header your proxy's authentication step sets to the verified claims)"
            ),
        ));
    }
    Ok(Jwt {
        claims_header,
        header,
        tenant_claim: text(
            "tenant_claim",
            raw.tenant_claim,
            "tenant",
            "name the claim holding the tenant id",
        )?,
        plan_claim: raw
            .plan_claim
            .map(|claim| {
                non_empty(
                    child(path, "plan_claim"),
                    claim,
                    "name the claim holding the plan, or remove it",
                )
            })
            .transpose()?,
        metadata_namespace: text(
            "metadata_namespace",
            raw.metadata_namespace,
            "envoy.filters.http.jwt_authn",
            "remove it to use envoy.filters.http.jwt_authn",
        )?,
        payload_key: text(
            "payload_key",
            raw.payload_key,
            "jwt_payload",
            "remove it to use jwt_payload",
        )?,
    })
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
