//! Calls to the sidecar: a JSON POST (or a GET) out, with the node token when configured, the
//! answer read back.

use serde::de::DeserializeOwned;

use super::host::{CallOut, Host};
use crate::policy::Sidecar;

/// POSTs the JSON `body` to the sidecar's `path`, given `timeout_ms`; the call's token, or
/// `None` if the host refused.
pub fn call(
    host: &mut impl Host,
    sidecar: &Sidecar,
    path: &str,
    body: &[u8],
    timeout_ms: u64,
) -> Option<u32> {
    host.call(&CallOut {
        cluster: &sidecar.cluster,
        authority: &sidecar.authority,
        method: "POST",
        path,
        token: sidecar.token.as_deref(),
        body,
        timeout_ms,
    })
}

/// GETs the sidecar's `path` (with its query), given `timeout_ms`; the call's token, or `None`
/// if the host refused.
pub fn get(host: &mut impl Host, sidecar: &Sidecar, path: &str, timeout_ms: u64) -> Option<u32> {
    host.call(&CallOut {
        cluster: &sidecar.cluster,
        authority: &sidecar.authority,
        method: "GET",
        path,
        token: sidecar.token.as_deref(),
        body: &[],
        timeout_ms,
    })
}

/// The current call response as a `T` (`CheckResponse`, `SyncResponse`), or `None` (a
/// timeout or a failed connection, a status other than 200, or a body that does not parse).
pub fn read_response<T: DeserializeOwned>(
    host: &mut impl Host,
    num_headers: usize,
    body_size: usize,
) -> Option<T> {
    let body = host.call_response(num_headers, body_size)?;
    serde_json::from_slice(&body).ok()
}
