//! The Proxy-Wasm glue: the only code that touches the proxy ABI (wasm32 only). The contexts
//! here forward each callback to the worker logic in [`crate::worker`], handing it
//! [`proxy::ProxyHost`], which makes one ABI call per [`crate::worker::host::Host`] method.

mod abi;
mod proxy;

use std::cell::RefCell;
use std::rc::Rc;

use log::error;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

use crate::worker::Worker;
use crate::worker::request::{self, Action as Next};
use crate::worker::strict::Stream;
use proxy::ProxyHost;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    std::panic::set_hook(Box::new(|info| {
        let _ = proxy_wasm::hostcalls::log(LogLevel::Critical, &format!("tollgate: panic: {info}"));
    }));
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

fn action(next: Next) -> Action {
    match next {
        Next::Continue => Action::Continue,
        Next::Pause => Action::Pause,
    }
}

/// The plugin's root context (one per worker VM).
#[derive(Default)]
struct Root {
    worker: Option<Rc<RefCell<Worker>>>,
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        if let Some(mut worker) = self.worker.as_ref().and_then(|w| w.try_borrow_mut().ok())
            && !request::on_batch_answer(
                &mut worker,
                &mut ProxyHost,
                token_id,
                num_headers,
                body_size,
            )
        {
            worker.on_root_call_response(&mut ProxyHost, token_id, num_headers, body_size);
        }
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = proxy_wasm::hostcalls::get_buffer(
            proxy_wasm::types::BufferType::PluginConfiguration,
            0,
            usize::MAX,
        )
        .ok()
        .flatten()
        .unwrap_or_default();
        match Worker::configure(&mut ProxyHost, &bytes) {
            Ok(worker) => {
                self.worker = Some(Rc::new(RefCell::new(worker)));
                true
            }
            Err(err) => {
                error!("invalid configuration: {err}");
                false
            }
        }
    }

    fn on_queue_ready(&mut self, _queue_id: u32) {
        if let Some(mut worker) = self.worker.as_ref().and_then(|w| w.try_borrow_mut().ok()) {
            request::on_wakeup(&mut worker, &mut ProxyHost);
        }
    }

    fn on_tick(&mut self) {
        if let Some(mut worker) = self.worker.as_ref().and_then(|w| w.try_borrow_mut().ok()) {
            let now = proxy::now();
            worker.tick(&mut ProxyHost, now);
            request::on_tick(&mut worker, &mut ProxyHost);
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let worker = self.worker.clone()?;
        Some(Box::new(Request {
            worker,
            stream: Rc::new(RefCell::new(Stream::new(context_id))),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// An HTTP context.
struct Request {
    worker: Rc<RefCell<Worker>>,
    stream: Rc<RefCell<Stream>>,
}

impl Context for Request {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        if let (Ok(mut worker), Ok(mut stream)) =
            (self.worker.try_borrow_mut(), self.stream.try_borrow_mut())
        {
            request::on_call_response(
                &mut worker,
                &mut stream,
                &mut ProxyHost,
                token_id,
                num_headers,
                body_size,
            );
        }
    }
}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        match self.worker.try_borrow_mut() {
            Ok(mut worker) => action(request::on_request_headers(
                &mut worker,
                &self.stream,
                &mut ProxyHost,
            )),
            Err(_) => Action::Continue,
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, _end_of_stream: bool) -> Action {
        if let Ok(mut stream) = self.stream.try_borrow_mut() {
            request::on_request_body(&mut stream, body_size);
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if let Ok(mut stream) = self.stream.try_borrow_mut() {
            request::on_response_headers(&mut stream, &mut ProxyHost);
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, _end_of_stream: bool) -> Action {
        if let Ok(mut stream) = self.stream.try_borrow_mut() {
            request::on_response_body(&mut stream, body_size);
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        if let (Ok(mut worker), Ok(mut stream)) =
            (self.worker.try_borrow_mut(), self.stream.try_borrow_mut())
        {
            request::on_log(&mut worker, &mut stream, &mut ProxyHost);
        }
    }
}
