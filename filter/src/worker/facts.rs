//! Reading the request attributes the policy needs, with as few host calls as possible.
//!
//! Every host call that returns a value makes the host call back into the VM to allocate
//! memory for it, and that round trip dominates the filter's cost: measured under callgrind
//! in Envoy 1.40 (`bench/filter/instructions.py --probes`), one `get_map_value` costs ≈ 14k
//! instructions, one `get_property` ≈ 12k, while `get_map` of a whole small header map costs
//! ≈ 20k. So one header is read alone, two or more come from one read of the whole map
//! (parsed in place, never as `String`s), and the downstream address (a property) is only
//! read when `X-Forwarded-For` does not already name the client.

use super::host::Host;
use crate::decision::Needs;
use crate::header_map::HeaderPairs;
use crate::identity;
use crate::policy::Policy;

/// The request headers the policy reads, kept as the bytes the host returned.
pub struct RequestHeaders {
    pairs: HeaderPairs,
}

impl RequestHeaders {
    /// Fetches the headers `policy` needs (one call for one header, the whole map for more).
    pub fn fetch(host: &mut impl Host, policy: &Policy, needs: &Needs) -> Self {
        let mut wanted: Vec<&str> = Vec::new();
        if needs.path {
            wanted.push(":path");
        }
        if needs.method {
            wanted.push(":method");
        }
        if needs.client_ip && policy.identity.xff_trusted_hops > 0 {
            wanted.push("x-forwarded-for");
        }
        if needs.tenant {
            wanted.extend(policy.identity.api_key_header.as_deref());
            if let Some(jwt) = &policy.identity.jwt {
                wanted.push(jwt.header.as_str());
                wanted.extend(jwt.claims_header.as_deref());
            }
        }
        wanted.extend(needs.headers.iter().map(String::as_str));
        let pairs = match wanted.as_slice() {
            [] => HeaderPairs::default(),
            [one] => host
                .request_header(one)
                .map_or_else(HeaderPairs::default, |value| {
                    HeaderPairs::single(one, &value)
                }),
            _ => host
                .request_header_pairs()
                .map_or_else(HeaderPairs::default, HeaderPairs::parse),
        };
        RequestHeaders { pairs }
    }

    /// The first value of header `name` (lower case); `None` also for a value that is not UTF-8.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs.values(name).next()
    }

    /// All values of `X-Forwarded-For` joined as one list (a request may carry several).
    pub fn forwarded_for(&self) -> Option<String> {
        let mut values = self.pairs.values("x-forwarded-for");
        let first = values.next()?;
        Some(values.fold(first.to_owned(), |mut all, v| {
            all.push(',');
            all.push_str(v);
            all
        }))
    }
}

/// The client's address as the policy trusts it (no port). Reads the downstream address only
/// when the trusted `X-Forwarded-For` hop does not name the client.
pub fn client_ip(host: &mut impl Host, policy: &Policy, headers: &RequestHeaders) -> String {
    let hops = policy.identity.xff_trusted_hops;
    let xff = if hops > 0 {
        headers.forwarded_for()
    } else {
        None
    };
    let from_xff = identity::client_ip(xff.as_deref(), "", hops);
    if !from_xff.is_empty() {
        return from_xff.to_owned();
    }
    let downstream = host.property(&["source", "address"]).unwrap_or_default();
    let downstream = String::from_utf8(downstream).unwrap_or_default();
    identity::client_ip(None, &downstream, 0).to_owned()
}
