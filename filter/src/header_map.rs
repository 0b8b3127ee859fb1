//! Header maps as the Proxy-Wasm ABI serializes them, read in place.

/// A serialized header map as the Proxy-Wasm ABI returns it: a little-endian `u32` count,
/// then `count` pairs of `u32` name and value lengths, then each name and value followed by a
/// NUL byte. Parsed in place; a malformed buffer reads as fewer (or no) headers.
#[derive(Default)]
pub struct HeaderPairs {
    bytes: Vec<u8>,
    /// (name, value) byte ranges into `bytes`.
    spans: Vec<(core::ops::Range<usize>, core::ops::Range<usize>)>,
}

impl HeaderPairs {
    /// Indexes a serialized map.
    pub fn parse(bytes: Vec<u8>) -> Self {
        let word = |at: usize| {
            bytes
                .get(at..at.saturating_add(4))
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map_or(0, |b| u32::from_le_bytes(b) as usize)
        };
        let count = word(0);
        let mut spans = Vec::with_capacity(count.min(64));
        let mut at = count.saturating_mul(8).saturating_add(4);
        for n in 0..count {
            let (name_len, value_len) = (word(4 + n * 8), word(8 + n * 8));
            let name = at..at.saturating_add(name_len);
            let value_start = name.end.saturating_add(1);
            let value = value_start..value_start.saturating_add(value_len);
            at = value.end.saturating_add(1);
            if value.end > bytes.len() {
                break;
            }
            spans.push((name, value));
        }
        HeaderPairs { bytes, spans }
    }

    /// One header.
    pub fn single(name: &str, value: &[u8]) -> Self {
        let mut bytes = Vec::with_capacity(name.len() + value.len());
        bytes.extend_from_slice(name.as_bytes());
        bytes.extend_from_slice(value);
        let spans = vec![(0..name.len(), name.len()..bytes.len())];
        HeaderPairs { bytes, spans }
    }

    /// The UTF-8 values of header `name` (lower case; matched in any case: hosts other than
    /// Envoy hand names over as the client wrote them), in order.
    pub fn values<'a, 'n>(&'a self, name: &'n str) -> impl Iterator<Item = &'a str> + use<'a, 'n> {
        self.spans.iter().filter_map(move |(n, v)| {
            (self
                .bytes
                .get(n.clone())?
                .eq_ignore_ascii_case(name.as_bytes()))
            .then(|| self.bytes.get(v.clone()))
            .flatten()
            .and_then(|v| core::str::from_utf8(v).ok())
        })
    }
}

#[cfg(test)]
mod tests {
    #[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    fn serialize(pairs: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
        for (name, value) in pairs {
            out.extend_from_slice(&(name.len() as u32).to_le_bytes());
            out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        }
        for (name, value) in pairs {
            out.extend_from_slice(name.as_bytes());
            out.push(0);
            out.extend_from_slice(value);
            out.push(0);
        }
        out
    }

    #[test]
    fn reads_every_value_of_a_header_in_order() {
        let map = HeaderPairs::parse(serialize(&[
            (":path", b"/api/x?y=1"),
            ("x-forwarded-for", b"1.1.1.1"),
            ("x-api-key", b"k1"),
            ("x-forwarded-for", b"2.2.2.2"),
        ]));
        assert_eq!(map.values(":path").collect::<Vec<_>>(), ["/api/x?y=1"]);
        assert_eq!(
            map.values("x-forwarded-for").collect::<Vec<_>>(),
            ["1.1.1.1", "2.2.2.2"]
        );
        assert_eq!(map.values("absent").count(), 0);
    }

    #[test]
    fn a_value_that_is_not_utf8_reads_as_absent_instead_of_panicking() {
        let map = HeaderPairs::parse(serialize(&[("x-api-key", b"\xff\xfe"), ("x-other", b"ok")]));
        assert_eq!(map.values("x-api-key").count(), 0);
        assert_eq!(map.values("x-other").collect::<Vec<_>>(), ["ok"]);
    }

    #[test]
    fn malformed_buffers_read_as_fewer_headers() {
        let mut bytes = serialize(&[("a", b"1"), ("b", b"2")]);
        bytes.truncate(bytes.len() - 3);
        assert_eq!(
            HeaderPairs::parse(bytes).values("a").collect::<Vec<_>>(),
            ["1"]
        );
        assert_eq!(HeaderPairs::parse(vec![0xff; 3]).values("a").count(), 0);
        assert_eq!(
            HeaderPairs::parse(u32::MAX.to_le_bytes().to_vec())
                .values("a")
                .count(),
            0
        );
    }

    #[test]
    fn a_single_header() {
        let map = HeaderPairs::single("x-api-key", b"k1");
        assert_eq!(map.values("x-api-key").collect::<Vec<_>>(), ["k1"]);
    }
}
