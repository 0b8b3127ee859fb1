//! Who is asking: client address, tenant from API key, claims of a verified JWT.
//!
//! OWNER: headers helper (client IP, API key); the JWT metadata reader is the host owner's.
//!
//! ```
//! use tollgate_filter::identity::client_ip;
//!
//! // The client wrote `6.6.6.6`; the one trusted load balancer appended what it saw.
//! assert_eq!(client_ip(Some("6.6.6.6, 203.0.113.7"), "10.0.0.2:443", 1), "203.0.113.7");
//! assert_eq!(client_ip(Some("6.6.6.6, 203.0.113.7"), "10.0.0.2:443", 0), "10.0.0.2");
//! ```

use core::net::IpAddr;

/// The client's address without port: with `trusted_hops == 0` the downstream address;
/// otherwise the `trusted_hops`-th address from the right of `X-Forwarded-For` (the one the
/// outermost trusted proxy appended), so that whatever the client wrote to the left is
/// ignored. Falls back to the downstream address when the header has fewer entries, or when
/// the entry at that position is empty or not an IP address (with or without a port).
/// `downstream` may carry a port (`1.2.3.4:5678`, `[::1]:5678`); the result never does.
///
/// This is Envoy's `xff_num_trusted_hops` counted on the header as this filter receives it:
/// if the proxy running the filter appends the downstream address itself (Envoy with
/// `use_remote_address: true`), that entry counts as one more hop. Never allocates.
pub fn client_ip<'a>(xff: Option<&'a str>, downstream: &'a str, trusted_hops: u32) -> &'a str {
    let fallback = strip_port(downstream.trim_matches(is_ows));
    let (Some(xff), Some(skip)) = (xff, trusted_hops.checked_sub(1)) else {
        return fallback;
    };
    let skip = usize::try_from(skip).unwrap_or(usize::MAX);
    match xff.rsplit(',').nth(skip) {
        Some(entry) => {
            let candidate = strip_port(entry.trim_matches(is_ows));
            if candidate.parse::<IpAddr>().is_ok() {
                candidate
            } else {
                fallback
            }
        }
        None => fallback,
    }
}

/// `1.2.3.4:5678` → `1.2.3.4`, `[::1]:5678` and `[::1]` → `::1`; anything else (a bare IPv4 or
/// IPv6 address, garbage) unchanged.
fn strip_port(addr: &str) -> &str {
    if let Some(bracketed) = addr.strip_prefix('[') {
        return match bracketed.split_once(']') {
            Some((ip, _port)) => ip,
            None => addr,
        };
    }
    match addr.split_once(':') {
        // Exactly one colon: IPv4 (or a host name) with a port. Two or more: bare IPv6.
        Some((host, port)) if !port.contains(':') => host,
        _ => addr,
    }
}

/// HTTP optional whitespace (RFC 9110 §5.6.3).
fn is_ows(c: char) -> bool {
    c == ' ' || c == '\t'
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn no_trusted_hops_uses_the_downstream_address() {
        assert_eq!(client_ip(None, "192.0.2.1:5678", 0), "192.0.2.1");
        assert_eq!(
            client_ip(Some("203.0.113.9"), "192.0.2.1:5678", 0),
            "192.0.2.1",
            "XFF ignored"
        );
        assert_eq!(client_ip(Some("203.0.113.9"), "192.0.2.1", 0), "192.0.2.1");
    }

    #[test]
    fn downstream_ports_are_stripped() {
        assert_eq!(client_ip(None, "[::1]:5678", 0), "::1");
        assert_eq!(client_ip(None, "[2001:db8::7]", 0), "2001:db8::7");
        assert_eq!(client_ip(None, "::1", 0), "::1", "bare IPv6 untouched");
        assert_eq!(client_ip(None, "2001:db8::7", 0), "2001:db8::7");
        assert_eq!(client_ip(None, "10.0.0.1", 0), "10.0.0.1");
    }

    #[test]
    fn spoofed_entries_left_of_the_trusted_proxy_are_ignored() {
        // The client sends `X-Forwarded-For: 6.6.6.6`; the trusted proxy appends the address
        // it really saw, 203.0.113.7.
        let xff = Some("6.6.6.6, 203.0.113.7");
        assert_eq!(client_ip(xff, "10.0.0.2:40000", 1), "203.0.113.7");
        // Even a long forged chain does not move the answer.
        assert_eq!(
            client_ip(
                Some("1.1.1.1, 2.2.2.2,6.6.6.6,203.0.113.7"),
                "10.0.0.2:40000",
                1
            ),
            "203.0.113.7"
        );
    }

    #[test]
    fn n_trusted_hops_take_the_nth_from_the_right() {
        let xff = Some("6.6.6.6,  203.0.113.7 ,\t10.0.0.3");
        assert_eq!(client_ip(xff, "10.0.0.2:1", 1), "10.0.0.3");
        assert_eq!(client_ip(xff, "10.0.0.2:1", 2), "203.0.113.7");
        assert_eq!(client_ip(xff, "10.0.0.2:1", 3), "6.6.6.6");
    }

    #[test]
    fn too_few_entries_fall_back_to_downstream() {
        assert_eq!(client_ip(Some("203.0.113.7"), "10.0.0.2:1", 2), "10.0.0.2");
        assert_eq!(
            client_ip(None, "10.0.0.2:1", 1),
            "10.0.0.2",
            "no header at all"
        );
        assert_eq!(
            client_ip(Some("203.0.113.7"), "10.0.0.2:1", u32::MAX),
            "10.0.0.2"
        );
    }

    #[test]
    fn empty_or_garbage_entries_fall_back_to_downstream() {
        for xff in [
            "",
            " ",
            "203.0.113.7,",
            "203.0.113.7, ",
            "unknown",
            "1.2.3.4, evil.example",
            "1.2.3",
            "[::1",
        ] {
            assert_eq!(
                client_ip(Some(xff), "[2001:db8::2]:443", 1),
                "2001:db8::2",
                "{xff:?}"
            );
        }
    }

    #[test]
    fn xff_entries_lose_their_ports() {
        assert_eq!(
            client_ip(Some("6.6.6.6, 203.0.113.7:5678"), "10.0.0.2", 1),
            "203.0.113.7"
        );
        assert_eq!(
            client_ip(Some("6.6.6.6, [2001:db8::9]:5678"), "10.0.0.2", 1),
            "2001:db8::9"
        );
        assert_eq!(
            client_ip(Some("6.6.6.6, 2001:db8::9"), "10.0.0.2", 1),
            "2001:db8::9"
        );
    }
}
