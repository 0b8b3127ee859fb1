//! Everything a worker asks of the proxy, as one trait.
//!
//! The Proxy-Wasm implementation (`crate::host`, wasm32 only) makes one ABI call per method;
//! the worker logic in this module's siblings is plain Rust, tested natively against a mock
//! that enforces the strictest rules of the hosts the filter runs on:
//!
//! - the tick period may only be set from the root context (nginx's ngx_wasm_module traps
//!   otherwise), and every call adds a timer there (0 does not cancel one): set it once;
//! - a request may only be resumed or answered from its own callbacks (ngx_wasm_module
//!   ignores `proxy_set_effective_context` and resumes whichever request is current);
//! - header names arrive in whatever case the client wrote them (Envoy lower-cases them);
//! - a compare-and-swap write with token 0 on an existing key fails on ngx_wasm_module and
//!   overwrites on Envoy, so "token 0" is never used to mean "unconditionally".

use crate::Nanos;
use crate::engine::StoreError;

/// A context id as the host numbers them (the root context has its own).
pub type ContextId = u32;

/// The host, as seen from one callback (the context it runs in is the host's business: the
/// methods that act on a request name it, so that a host that cannot switch contexts is
/// caught in tests).
pub trait Host {
    /// The wall clock, nanoseconds since the Unix epoch (0 if the host cannot tell).
    fn now(&mut self) -> Nanos;

    /// Shared data: the value and its CAS token, `None` when absent.
    fn shared_get(&mut self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError>;
    /// Shared data: writes `value` if the entry's token is still `cas`. What `cas` 0 means
    /// differs by host (see the module doc): callers pass 0 only for a key they saw absent.
    fn shared_set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError>;

    /// Sends `out` (a JSON POST, or a GET without a body); the call's token, `None` if the host
    /// refused. The answer comes back to the context whose callback made the call.
    fn call(&mut self, out: &CallOut<'_>) -> Option<u32>;
    /// In a call-response callback: the body of the answer if its status is 200 (`None`
    /// also for a timeout or a failed connection, which have no headers).
    fn call_response(&mut self, num_headers: usize, body_size: usize) -> Option<Vec<u8>>;

    /// One request header's value (the name in lower case; hosts match it in any case).
    fn request_header(&mut self, name: &str) -> Option<Vec<u8>>;
    /// The whole request header map, serialized as the ABI hands it over
    /// ([`crate::header_map::HeaderPairs::parse`]).
    fn request_header_pairs(&mut self) -> Option<Vec<u8>>;
    /// A property (`["source", "address"]`, dynamic metadata) of the current request.
    fn property(&mut self, path: &[&str]) -> Option<Vec<u8>>;
    /// Adds a header to the response of the current request.
    fn add_response_header(&mut self, name: &str, value: &str);
    /// The response status of the current request (0 if unknown).
    fn response_status(&mut self) -> u16;

    /// Answers request `context` locally; false if the host refused.
    fn send_reply(
        &mut self,
        context: ContextId,
        status: u32,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> bool;
    /// Resumes paused request `context`; false if it is gone.
    fn resume(&mut self, context: ContextId) -> bool;
    /// Makes `context` the one later calls act on; true if the host knows that context.
    fn set_effective_context(&mut self, context: ContextId) -> bool;

    /// Sets the root context's tick period (once, at configure time).
    fn set_tick_period(&mut self, millis: u32) -> bool;

    /// Registers a wake-up for the root context (at configure time): a queue `name` (unique
    /// to this worker) whose readiness the host reports to the root soon after something is
    /// put in it. `None` when the host has none.
    fn register_wakeup(&mut self, name: &str) -> Option<u32>;
    /// From any callback: asks the host to call the root back (its wake-up callback) soon.
    fn wake_root(&mut self, wakeup: u32) -> bool;
    /// In the root's wake-up callback: empties the queue.
    fn take_wakeups(&mut self, wakeup: u32);

    /// Defines a counter; `None` when the host has no metrics.
    fn define_counter(&mut self, name: &str) -> Option<u32>;
    /// Adds to a counter.
    fn increment(&mut self, id: u32, delta: u64);
}

/// An HTTP call to the sidecar.
#[derive(Clone, Copy, Debug)]
pub struct CallOut<'a> {
    /// An Envoy cluster, or `host:port` on ngx_wasm_module.
    pub cluster: &'a str,
    /// Its `:authority`.
    pub authority: &'a str,
    /// `POST` (with a JSON body) or `GET` (`body` empty, none sent).
    pub method: &'a str,
    /// Path and query.
    pub path: &'a str,
    /// Sent as `Authorization: Bearer <token>` when set.
    pub token: Option<&'a str>,
    pub body: &'a [u8],
    pub timeout_ms: u64,
}

/// Shared data through a [`Host`], as the engine's [`crate::engine::SharedStore`].
pub struct Shared<'h, H: Host + ?Sized>(pub &'h mut H);

impl<H: Host + ?Sized> crate::engine::SharedStore for Shared<'_, H> {
    fn get(&mut self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        self.0.shared_get(key)
    }

    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        self.0.shared_set(key, value, cas)
    }
}
