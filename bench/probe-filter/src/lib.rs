//! A Proxy-Wasm filter that makes one kind of host call on every request, chosen by its
//! plugin configuration, so that `bench/filter/instructions.py --probes` can measure what each call
//! costs Envoy against the do-nothing filter:
//!
//! | configuration | per request |
//! | --- | --- |
//! | `time` | `get_current_time` |
//! | `shared-absent` | `get_shared_data` of a key that does not exist |
//! | `add-header` | one `add_header_map_value` on the response |
//! | `add-4-headers` | four of them |
//! | `property` | `get_property(source.address)` |
//! | `get-header` | one `get_header_map_value` (`x-api-key`) |
//! | `get-map` | `get_header_map_pairs` of the request |
#![cfg(target_arch = "wasm32")]

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Probe::default()) });
}}

#[derive(Clone, Copy, Default)]
enum Call {
    #[default]
    Nothing,
    Time,
    SharedAbsent,
    AddHeader,
    Add4Headers,
    Property,
    GetHeader,
    GetMap,
}

#[derive(Default)]
struct Probe(Call);

impl Context for Probe {}

impl RootContext for Probe {
    fn on_configure(&mut self, _: usize) -> bool {
        let config = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX)
            .ok()
            .flatten()
            .unwrap_or_default();
        self.0 = match config.as_slice() {
            b"time" => Call::Time,
            b"shared-absent" => Call::SharedAbsent,
            b"add-header" => Call::AddHeader,
            b"add-4-headers" => Call::Add4Headers,
            b"property" => Call::Property,
            b"get-header" => Call::GetHeader,
            b"get-map" => Call::GetMap,
            _ => Call::Nothing,
        };
        true
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Probe(self.0)))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

impl HttpContext for Probe {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        match self.0 {
            Call::Time => drop(hostcalls::get_current_time()),
            Call::SharedAbsent => drop(hostcalls::get_shared_data("tollgate-probe-absent")),
            Call::Property => drop(hostcalls::get_property(vec!["source", "address"])),
            Call::GetHeader => drop(hostcalls::get_map_value(
                MapType::HttpRequestHeaders,
                "x-api-key",
            )),
            Call::GetMap => drop(hostcalls::get_map(MapType::HttpRequestHeaders)),
            _ => {}
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        let count = match self.0 {
            Call::AddHeader => 1,
            Call::Add4Headers => 4,
            _ => 0,
        };
        for name in ["x-probe-1", "x-probe-2", "x-probe-3", "x-probe-4"]
            .iter()
            .take(count)
        {
            let _ = hostcalls::add_map_value(MapType::HttpResponseHeaders, name, "100");
        }
        Action::Continue
    }
}
