//! [`Host`] over the Proxy-Wasm ABI: one host call per method.

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType, Status};

use super::abi;
use crate::Nanos;
use crate::engine::StoreError;
use crate::worker::host::{CallOut, ContextId, Host};
use crate::worker::usage_out::parse_status;

/// The proxy, as the current callback sees it.
pub struct ProxyHost;

/// The host's clock in nanoseconds since the Unix epoch (0 if it cannot tell).
pub fn now() -> Nanos {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl Host for ProxyHost {
    fn now(&mut self) -> Nanos {
        now()
    }

    fn shared_get(&mut self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        abi::shared_get(key).map_err(|()| StoreError::Failed)
    }

    fn shared_set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        match abi::shared_set(key, value, cas) {
            Status::Ok => Ok(()),
            Status::CasMismatch => Err(StoreError::CasMismatch),
            _ => Err(StoreError::Failed),
        }
    }

    fn call(&mut self, out: &CallOut<'_>) -> Option<u32> {
        let bearer = out.token.map(|token| format!("Bearer {token}"));
        let mut headers = vec![
            (":method", out.method),
            (":path", out.path),
            (":authority", out.authority),
        ];
        let post = out.method == "POST";
        if post {
            headers.push(("content-type", "application/json"));
        }
        if let Some(bearer) = bearer.as_deref() {
            headers.push(("authorization", bearer));
        }
        hostcalls::dispatch_http_call(
            out.cluster,
            headers,
            post.then_some(out.body),
            vec![],
            std::time::Duration::from_millis(out.timeout_ms),
        )
        .ok()
    }

    fn call_response(&mut self, num_headers: usize, body_size: usize) -> Option<Vec<u8>> {
        // No headers: a timeout or a failed connection (the getters may not be asked then).
        if num_headers == 0 {
            return None;
        }
        let status = abi::header_value(MapType::HttpCallResponseHeaders, ":status")?;
        if status != b"200" {
            return None;
        }
        hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
            .ok()
            .flatten()
    }

    fn request_header(&mut self, name: &str) -> Option<Vec<u8>> {
        abi::header_value(MapType::HttpRequestHeaders, name)
    }

    fn request_header_pairs(&mut self) -> Option<Vec<u8>> {
        abi::header_pairs(MapType::HttpRequestHeaders)
    }

    fn property(&mut self, path: &[&str]) -> Option<Vec<u8>> {
        hostcalls::get_property(path.to_vec()).ok().flatten()
    }

    fn add_response_header(&mut self, name: &str, value: &str) {
        let _ = hostcalls::add_map_value(MapType::HttpResponseHeaders, name, value);
    }

    fn response_status(&mut self) -> u16 {
        abi::header_value(MapType::HttpResponseHeaders, ":status").map_or(0, |s| parse_status(&s))
    }

    fn send_reply(
        &mut self,
        _context: ContextId,
        status: u32,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> bool {
        abi::send_local_response(status, headers, body)
    }

    fn resume(&mut self, _context: ContextId) -> bool {
        abi::continue_request()
    }

    fn set_effective_context(&mut self, context: ContextId) -> bool {
        abi::set_effective_context(context)
    }

    fn set_tick_period(&mut self, millis: u32) -> bool {
        abi::set_tick_period(millis)
    }

    fn register_wakeup(&mut self, name: &str) -> Option<u32> {
        abi::register_queue(name)
    }

    fn wake_root(&mut self, wakeup: u32) -> bool {
        abi::enqueue(wakeup, b"1")
    }

    fn take_wakeups(&mut self, wakeup: u32) {
        // Bounded: the filter puts one item in per wake-up it asks for.
        for _ in 0..64 {
            if !abi::dequeue(wakeup) {
                break;
            }
        }
    }

    fn define_counter(&mut self, name: &str) -> Option<u32> {
        abi::define_counter(name)
    }

    fn increment(&mut self, id: u32, delta: u64) {
        abi::increment(id, delta);
    }
}
