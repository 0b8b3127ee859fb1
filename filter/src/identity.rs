//! Who is asking: client address, tenant from API key, claims of a verified JWT.
//!
//! OWNER: headers helper (client IP, API key); the JWT metadata reader is the host owner's.

/// The client's address without port: with `trusted_hops == 0` the downstream address;
/// otherwise the `trusted_hops`-th address from the right of `X-Forwarded-For` (the one the
/// outermost trusted proxy appended), so that whatever the client wrote to the left is
/// ignored. Falls back to the downstream address when the header has fewer entries.
/// `downstream` may carry a port (`1.2.3.4:5678`, `[::1]:5678`); the result never does.
pub fn client_ip<'a>(xff: Option<&'a str>, downstream: &'a str, trusted_hops: u32) -> &'a str {
    let _ = (xff, downstream, trusted_hops);
    todo!("headers helper")
}
