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
