//! The plugin JSON exactly as written, read by serde. Every object denies unknown fields, so a
//! typo is an error rather than a silently ignored setting. Values that need a friendlier
//! message than serde can give (enumerations, durations, limits) are kept loose here and
//! checked by [`super::compile`].

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserializer, MapAccess, Visitor};

/// The whole configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub rules: Vec<Object<RawRule>>,
    pub plans: Option<OrderedMap<Object<RawPlan>>>,
    pub default_plan: Option<String>,
    pub tenants: Option<OrderedMap<Object<RawTenant>>>,
    pub identity: Option<Object<RawIdentity>>,
    pub headers: Option<String>,
    pub error_format: Option<String>,
    pub failure_mode: Option<String>,
    pub sidecar: Option<Object<RawSidecar>>,
    pub state_slots: Option<u64>,
    pub usage: Option<Object<RawUsage>>,
    pub key_secret: Option<String>,
    pub registry: Option<Object<RawRegistry>>,
}

/// `registry`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRegistry {
    pub enabled: Option<bool>,
    pub interval_ms: Option<u64>,
    pub unknown_key: Option<String>,
}

/// `usage`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUsage {
    pub enabled: Option<bool>,
    pub interval_ms: Option<u64>,
    pub request_log: Option<bool>,
}

/// One entry of `rules`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    pub name: String,
    pub key: Vec<String>,
    #[serde(rename = "match")]
    pub matcher: Option<Object<RawMatch>>,
    pub algorithm: String,
    /// A number, `"plan"` or `{"plan": {…}, "default": n}`: checked in compile.
    pub limit: serde_json::Value,
    /// A duration string such as `"1m"`: checked in compile (so a bare number gets a hint).
    pub window: serde_json::Value,
    pub burst: Option<u64>,
    pub queue: Option<u64>,
    pub cost: Option<u64>,
    pub scope: Option<String>,
    pub shadow: Option<bool>,
}

/// `rules[].match`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMatch {
    pub path_prefix: Option<String>,
    pub path_exact: Option<String>,
    pub methods: Option<Vec<String>>,
}

/// One entry of `plans`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPlan {
    pub requests_per_minute: u64,
}

/// One entry of `tenants`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTenant {
    pub id: String,
    pub plan: String,
    pub stripe_customer_id: Option<String>,
}

/// `identity`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIdentity {
    /// Absent: the default header; `null`: no API keys.
    #[serde(default, deserialize_with = "present")]
    pub api_key_header: Option<Option<String>>,
    pub jwt: Option<Object<RawJwt>>,
    pub client_ip: Option<Object<RawClientIp>>,
}

/// `identity.jwt`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawJwt {
    pub header: Option<String>,
    pub tenant_claim: Option<String>,
    pub plan_claim: Option<String>,
    pub metadata_namespace: Option<String>,
    pub payload_key: Option<String>,
    pub claims_header: Option<String>,
}

/// `identity.client_ip`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClientIp {
    pub xff_trusted_hops: Option<u64>,
}

/// `sidecar`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSidecar {
    pub cluster: String,
    pub authority: Option<String>,
    pub timeout_ms: Option<u64>,
    pub sync_interval_ms: Option<u64>,
    pub nodes: Option<u64>,
    pub token: Option<String>,
}

/// A JSON object read as `T`. serde's derived structs also accept a list of the field values
/// in order; a configuration must name its fields, so here a list where an object belongs is
/// an error.
#[derive(Debug)]
pub(super) struct Object<T>(pub T);

/// What an [`Object`] is called in "expected …, found …" messages.
pub(super) trait Expecting {
    const EXPECTING: &'static str = "an object";
}

impl Expecting for RawConfig {
    const EXPECTING: &'static str = "a configuration object such as {\"rules\": []}";
}
impl Expecting for RawRule {}
impl Expecting for RawMatch {}
impl Expecting for RawPlan {}
impl Expecting for RawTenant {}
impl Expecting for RawIdentity {}
impl Expecting for RawJwt {}
impl Expecting for RawClientIp {}
impl Expecting for RawSidecar {}
impl Expecting for RawUsage {}
impl Expecting for RawRegistry {}

impl<'de, T: Deserialize<'de> + Expecting> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(ObjectVisitor(PhantomData))
    }
}

struct ObjectVisitor<T>(PhantomData<T>);

impl<'de, T: Deserialize<'de> + Expecting> Visitor<'de> for ObjectVisitor<T> {
    type Value = Object<T>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(T::EXPECTING)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map)).map(Object)
    }
}

/// A JSON object read in document order, repeated names included (compile reports them), so
/// that plan ids follow the configuration and errors come in the order they were written.
#[derive(Debug)]
pub(super) struct OrderedMap<V>(pub Vec<(String, V)>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for OrderedMap<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(OrderedMapVisitor(PhantomData))
    }
}

struct OrderedMapVisitor<V>(PhantomData<V>);

impl<'de, V: Deserialize<'de>> Visitor<'de> for OrderedMapVisitor<V> {
    type Value = OrderedMap<V>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("an object keyed by name")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, V>()? {
            entries.push((key, value));
        }
        Ok(OrderedMap(entries))
    }
}

/// Tells a field given as `null` (`Some(None)`) from an absent one (`None`).
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}
