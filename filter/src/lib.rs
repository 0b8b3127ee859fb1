//! Tollgate's rate-limit filter.
//!
//! The crate has two faces. Compiled for `wasm32-wasip1` it is a Proxy-Wasm HTTP filter: the
//! `host` module (wasm32 only) is the only code that touches the proxy ABI, one call per
//! method of [`worker::host::Host`]. Everything else is a plain library — algorithms, policy,
//! identity, header rendering, and the per-worker logic ([`worker`]: requests, strict checks,
//! sync, usage, the tick) — that the sidecar and the tests use directly, the worker logic
//! against a mock host. All of it takes the clock from its caller and never panics.
//!
//! ```
//! use tollgate_filter::algorithm::{Algorithm, Quota, State};
//!
//! // 10 requests a minute, burst of 10, fixed window.
//! let quota = Quota::new(10, 60_000_000_000, 10, 0);
//! let mut state = State::default();
//! let now = 1_000_000_000;
//! let admitted = (0..12)
//!     .filter(|_| Algorithm::FixedWindow.acquire(&quota, &mut state, now, 1, 1).granted == 1)
//!     .count();
//! assert_eq!(admitted, 10);
//! ```

pub mod algorithm;
pub mod decision;
pub mod engine;
pub mod header_map;
pub mod headers;
pub mod identity;
pub mod policy;
pub mod protocol;
pub mod registry;
pub mod reply;
pub mod sync;
pub mod usage;
pub mod worker;

#[cfg(all(target_arch = "wasm32", target_os = "wasi"))]
mod host;

/// Time in nanoseconds since the Unix epoch (or any fixed origin): the only clock the logic sees.
pub type Nanos = u64;

/// Nanoseconds in one second.
pub const SECOND: Nanos = 1_000_000_000;
