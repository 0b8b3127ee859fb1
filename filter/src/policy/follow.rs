//! The configuration of following the sidecar's registry: `registry`, `sidecar.token`, and
//! static API keys given by their hash (`sha256:<hex>`).

use super::check::{ConfigError, at};
use super::raw::RawRegistry;
use super::{Registry, UnknownKey};

/// How a static API key given by its hash starts.
pub(super) const SHA256_PREFIX: &str = "sha256:";

/// `registry`: on by default when there is a sidecar to follow.
pub(super) fn registry(
    raw: Option<RawRegistry>,
    has_sidecar: bool,
) -> Result<(Option<Registry>, UnknownKey), ConfigError> {
    let unknown_key = match raw.as_ref().and_then(|r| r.unknown_key.as_deref()) {
        None | Some("anonymous") => UnknownKey::Anonymous,
        Some("reject") => UnknownKey::Reject,
        Some(other) => {
            return Err(at(
                "registry.unknown_key".into(),
                format!(
                    "{other:?} is not a choice: use \"anonymous\" (per-IP rules only) or \"reject\" (401 invalid_api_key)"
                ),
            ));
        }
    };
    let enabled = raw.as_ref().and_then(|r| r.enabled).unwrap_or(has_sidecar);
    if !enabled {
        return Ok((None, unknown_key));
    }
    if !has_sidecar {
        return Err(at(
            "registry.enabled".into(),
            "the registry is fetched from the sidecar: configure `sidecar` or set it to false"
                .into(),
        ));
    }
    let interval_ms = raw.and_then(|r| r.interval_ms).unwrap_or(1_000);
    if !(100..=60_000).contains(&interval_ms) {
        return Err(at(
            "registry.interval_ms".into(),
            format!("{interval_ms} is out of range (use 100 to 60000 milliseconds)"),
        ));
    }
    Ok((Some(Registry { interval_ms }), unknown_key))
}

/// `sidecar.token`: sent in a header, so visible ASCII without spaces.
pub(super) fn token(token: String) -> Result<String, ConfigError> {
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(at(
            "sidecar.token".into(),
            "not a usable token (it is sent as `Authorization: Bearer <token>`: use visible ASCII, no spaces; remove it to send none)".into(),
        ));
    }
    Ok(token)
}

/// The hash of a static key written `sha256:<hex>` (`hex`: what follows the prefix).
pub(super) fn key_hash(path: &str, hex: &str) -> Result<[u8; 32], ConfigError> {
    crate::registry::table::parse_hash(hex).ok_or_else(|| {
        at(
            path.into(),
            "after \"sha256:\" give the 64 hex digits of the key's SHA-256 (e.g. the output of `printf %s KEY | sha256sum`)".into(),
        )
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use crate::policy::{Policy, Registry, UnknownKey};

    fn policy(extra: &str) -> Policy {
        Policy::from_json(format!(r#"{{ {extra} "rules": [] }}"#).as_bytes()).unwrap()
    }

    #[test]
    fn the_registry_is_followed_by_default_when_there_is_a_sidecar() {
        let with = policy(r#""sidecar": {"cluster": "s", "token": "t0k"},"#);
        assert_eq!(with.registry, Some(Registry { interval_ms: 1_000 }));
        assert_eq!(with.unknown_key, UnknownKey::Anonymous);
        assert_eq!(with.sidecar.unwrap().token.as_deref(), Some("t0k"));
        assert_eq!(policy("").registry, None);
        let off = policy(
            r#""sidecar": {"cluster": "s"}, "registry": {"enabled": false, "unknown_key": "reject"},"#,
        );
        assert_eq!((off.registry, off.unknown_key), (None, UnknownKey::Reject));
        let tuned = policy(r#""sidecar": {"cluster": "s"}, "registry": {"interval_ms": 250},"#);
        assert_eq!(tuned.registry, Some(Registry { interval_ms: 250 }));
    }

    #[test]
    fn static_keys_may_be_given_by_their_hash() {
        let hash = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        let policy = policy(&format!(
            r#""plans": {{"free": {{"requests_per_minute": 1}}}},
               "tenants": {{"sha256:{hash}": {{"id": "acme", "plan": "free"}}}},"#
        ));
        assert!(policy.tenants.is_empty());
        let tenant = &policy.hashed_tenants[&crate::registry::table::sha256("test")];
        assert_eq!(tenant.id, "acme");
    }
}
