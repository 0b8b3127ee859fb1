//! The Proxy-Wasm glue: the only code that calls the host. Thin on purpose — it gathers a
//! request's facts, hands them to [`crate::decision`], and turns the verdict into a local
//! reply, a pause or headers. Only ABI 0.2.1 calls that both Envoy and nginx's
//! ngx_wasm_module implement are required; metrics are optional (a host without them just has
//! no stats).

mod abi;
mod facts;
mod http;
mod jwt;
mod root;
mod sidecar;
mod store;
mod usage;

use proxy_wasm::traits::RootContext;
use proxy_wasm::types::LogLevel;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    std::panic::set_hook(Box::new(|info| {
        let _ = proxy_wasm::hostcalls::log(LogLevel::Critical, &format!("tollgate: panic: {info}"));
    }));
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(root::Root::default()) });
}}

/// The host's clock in nanoseconds since the Unix epoch (0 if it cannot tell).
fn now() -> crate::Nanos {
    proxy_wasm::hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
