//! A mock [`Host`] for the worker's tests, enforcing the strictest rules of the hosts the
//! filter runs on (see [`super::host`]); every broken rule is recorded in
//! [`MockHost::violations`] rather than panicking, so a test can name what went wrong.
//!
//! [`Node`] drives one worker the way a proxy would: it enters a context, runs a callback,
//! and routes call answers to the context that made the call.

// Test support: a broken precondition of a test (a refused configuration, an unknown call)
// is a panic with its reason.
#![allow(clippy::panic)]

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use super::Worker;
use super::host::{CallOut, ContextId, Host};
use super::request::{self, Action};
use super::strict::Stream;
use crate::Nanos;
use crate::engine::testing::MemStore;
use crate::engine::{SharedStore, StoreError};

/// The root context's id.
pub const ROOT: ContextId = 1;

/// A call the worker made.
#[derive(Clone, Debug)]
pub struct Call {
    pub token: u32,
    /// The context that made it (its answer goes there).
    pub context: ContextId,
    pub cluster: String,
    pub method: String,
    pub path: String,
    /// The `Authorization` header sent, if any.
    pub authorization: Option<String>,
    pub body: Vec<u8>,
    pub timeout_ms: u64,
}

/// A local reply: status, headers, body.
pub type Reply = (u32, Vec<(String, String)>, Vec<u8>);

/// What the host did for one request.
#[derive(Clone, Debug, Default)]
pub struct RequestLog {
    pub resumed: u32,
    pub reply: Option<Reply>,
    pub response_headers: Vec<(String, String)>,
}

/// The mock host.
pub struct MockHost {
    pub now: Nanos,
    /// The context whose callback runs.
    pub current: ContextId,
    /// Envoy's leniency: `set_effective_context` switches to a known context, and a request
    /// may then be resumed or answered from another context's callback.
    pub lenient: bool,
    pub effective: Option<ContextId>,
    /// The request whose call-response callback runs (ngx_wasm_module resumes that request
    /// itself once the callback returns, unless it was answered: a resume from the filter
    /// there is redundant, and this mock holds the filter to the host's own protocol).
    pub answering: Option<ContextId>,
    /// Requests alive (created and not yet logged).
    pub alive: Vec<ContextId>,
    pub store: MemStore,
    /// Tick period calls (millis) and the timers they armed (ngx_wasm_module: one per
    /// non-zero call, 0 cancels nothing).
    pub tick_periods: Vec<u32>,
    pub timers: u32,
    pub calls: Vec<Call>,
    pub next_token: u32,
    /// The answer the current call-response callback reads: (status, body).
    pub answer: Option<(u16, Vec<u8>)>,
    /// Request headers by context, names as the client wrote them.
    pub headers: HashMap<ContextId, Vec<(String, String)>>,
    pub properties: HashMap<(ContextId, String), Vec<u8>>,
    pub response_status: HashMap<ContextId, u16>,
    pub requests: HashMap<ContextId, RequestLog>,
    pub counters: Vec<(String, u64)>,
    /// Wake-up queues registered (by name) and wake-ups asked for, not yet delivered.
    pub wakeup_queues: Vec<String>,
    pub wakeups: u32,
    /// Every host rule the worker broke.
    pub violations: Vec<String>,
}

impl Default for MockHost {
    fn default() -> Self {
        MockHost {
            now: 1_000 * crate::SECOND,
            current: ROOT,
            lenient: false,
            effective: None,
            answering: None,
            alive: Vec::new(),
            store: MemStore::default(),
            tick_periods: Vec::new(),
            timers: 0,
            calls: Vec::new(),
            next_token: 100,
            answer: None,
            headers: HashMap::new(),
            properties: HashMap::new(),
            response_status: HashMap::new(),
            requests: HashMap::new(),
            counters: Vec::new(),
            wakeup_queues: Vec::new(),
            wakeups: 0,
            violations: Vec::new(),
        }
    }
}

impl MockHost {
    /// Enters `context`'s callback.
    pub fn enter(&mut self, context: ContextId) {
        self.current = context;
        self.effective = None;
    }

    /// Whether the current callback may act on request `context`.
    fn acts_on(&mut self, context: ContextId, what: &str) -> bool {
        let target = if self.lenient {
            self.effective.unwrap_or(self.current)
        } else {
            self.current
        };
        if target != context {
            self.violations.push(format!(
                "{what} request {context} from the callback of context {}",
                self.current
            ));
            return false;
        }
        self.alive.contains(&context)
    }
}

impl Host for MockHost {
    fn now(&mut self) -> Nanos {
        self.now
    }

    fn shared_get(&mut self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        self.store.get(key)
    }

    fn shared_set(&mut self, key: &str, value: &[u8], cas: u32) -> Result<(), StoreError> {
        self.store.set(key, value, cas)
    }

    fn call(&mut self, out: &CallOut<'_>) -> Option<u32> {
        self.next_token += 1;
        self.calls.push(Call {
            token: self.next_token,
            context: self.current,
            cluster: out.cluster.to_owned(),
            method: out.method.to_owned(),
            path: out.path.to_owned(),
            authorization: out.token.map(|t| format!("Bearer {t}")),
            body: out.body.to_vec(),
            timeout_ms: out.timeout_ms,
        });
        Some(self.next_token)
    }

    fn call_response(&mut self, num_headers: usize, _body_size: usize) -> Option<Vec<u8>> {
        let (status, body) = self.answer.clone()?;
        (num_headers > 0 && status == 200).then_some(body)
    }

    fn request_header(&mut self, name: &str) -> Option<Vec<u8>> {
        self.headers
            .get(&self.current)?
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_bytes().to_vec())
    }

    fn request_header_pairs(&mut self) -> Option<Vec<u8>> {
        let pairs = self.headers.get(&self.current)?;
        let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
        for (name, value) in pairs {
            out.extend_from_slice(&(name.len() as u32).to_le_bytes());
            out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        }
        for (name, value) in pairs {
            out.extend_from_slice(name.as_bytes());
            out.push(0);
            out.extend_from_slice(value.as_bytes());
            out.push(0);
        }
        Some(out)
    }

    fn property(&mut self, path: &[&str]) -> Option<Vec<u8>> {
        self.properties
            .get(&(self.current, path.join(".")))
            .cloned()
    }

    fn add_response_header(&mut self, name: &str, value: &str) {
        let current = self.current;
        self.requests
            .entry(current)
            .or_default()
            .response_headers
            .push((name.to_owned(), value.to_owned()));
    }

    fn response_status(&mut self) -> u16 {
        self.response_status
            .get(&self.current)
            .copied()
            .unwrap_or(200)
    }

    fn send_reply(
        &mut self,
        context: ContextId,
        status: u32,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> bool {
        if !self.acts_on(context, "answered") {
            return false;
        }
        let headers = headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect();
        self.requests.entry(context).or_default().reply = Some((status, headers, body.to_vec()));
        true
    }

    fn resume(&mut self, context: ContextId) -> bool {
        if !self.acts_on(context, "resumed") {
            return false;
        }
        if !self.lenient && self.answering == Some(context) {
            self.violations.push(format!(
                "resumed request {context} from its own call answer: ngx_wasm_module resumes it \
                 itself after the callback"
            ));
            return false;
        }
        self.requests.entry(context).or_default().resumed += 1;
        true
    }

    fn set_effective_context(&mut self, context: ContextId) -> bool {
        if !self.lenient {
            // ngx_wasm_module: Ok whatever the id, and nothing changes.
            return true;
        }
        let known = context == ROOT || self.alive.contains(&context);
        if known {
            self.effective = Some(context);
        }
        known
    }

    fn set_tick_period(&mut self, millis: u32) -> bool {
        if self.current != ROOT {
            self.violations.push(format!(
                "set_tick_period({millis}) from the callback of context {}",
                self.current
            ));
            return false;
        }
        if !self.tick_periods.is_empty() {
            self.violations
                .push(format!("set_tick_period({millis}) after the first"));
        }
        self.tick_periods.push(millis);
        if millis > 0 {
            self.timers += 1;
        }
        true
    }

    fn register_wakeup(&mut self, name: &str) -> Option<u32> {
        if self.current != ROOT {
            self.violations.push(format!(
                "registered wake-up {name} outside the root context"
            ));
        }
        self.wakeup_queues.push(name.to_owned());
        u32::try_from(self.wakeup_queues.len()).ok()
    }

    fn wake_root(&mut self, wakeup: u32) -> bool {
        if wakeup == 0 || wakeup as usize > self.wakeup_queues.len() {
            self.violations.push(format!("woke unknown queue {wakeup}"));
            return false;
        }
        self.wakeups += 1;
        true
    }

    fn take_wakeups(&mut self, _wakeup: u32) {
        if self.current != ROOT {
            self.violations
                .push("took wake-ups outside the root context".to_owned());
        }
        self.wakeups = 0;
    }

    fn define_counter(&mut self, name: &str) -> Option<u32> {
        self.counters.push((name.to_owned(), 0));
        u32::try_from(self.counters.len() - 1).ok()
    }

    fn increment(&mut self, id: u32, delta: u64) {
        if let Some((_, value)) = self.counters.get_mut(id as usize) {
            *value += delta;
        }
    }
}

/// One worker driven like a proxy drives it.
pub struct Node {
    pub host: MockHost,
    pub worker: Worker,
    pub streams: HashMap<ContextId, Rc<RefCell<Stream>>>,
}

impl Node {
    /// A worker configured with `config` (JSON) on `host`.
    pub fn new(mut host: MockHost, config: &str) -> Self {
        host.enter(ROOT);
        let worker = match Worker::configure(&mut host, config.as_bytes()) {
            Ok(worker) => worker,
            Err(err) => panic!("configuration refused: {err}"),
        };
        Node {
            host,
            worker,
            streams: HashMap::new(),
        }
    }

    /// A request in context `id` with `headers` (names in any case) reaches the filter.
    pub fn request(&mut self, id: ContextId, headers: &[(&str, &str)]) -> Action {
        self.host.alive.push(id);
        self.host.headers.insert(
            id,
            headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
        );
        let stream = Rc::new(RefCell::new(Stream::new(id)));
        self.streams.insert(id, Rc::clone(&stream));
        self.host.enter(id);
        request::on_request_headers(&mut self.worker, &stream, &mut self.host)
    }

    /// The host delivers the wake-ups asked for: the root's wake-up callback, once for
    /// however many (as a shared queue's readiness is reported); false if none was pending.
    pub fn wake(&mut self) -> bool {
        if self.host.wakeups == 0 {
            return false;
        }
        self.host.enter(ROOT);
        request::on_wakeup(&mut self.worker, &mut self.host);
        true
    }

    /// The root context's tick.
    pub fn tick(&mut self) {
        self.host.enter(ROOT);
        let now = self.host.now;
        self.worker.tick(&mut self.host, now);
        request::on_tick(&mut self.worker, &mut self.host);
    }

    /// Answers call `token` (taking it off the calls out) with `status` and `body`, in the context that made it.
    pub fn answer(&mut self, token: u32, status: u16, body: &str) {
        let Some(at) = self.host.calls.iter().position(|c| c.token == token) else {
            panic!("no call {token}");
        };
        let call = self.host.calls.remove(at);
        self.host.enter(call.context);
        self.host.answer = Some((status, body.as_bytes().to_vec()));
        let headers = usize::from(status != 0);
        if call.context == ROOT {
            if !request::on_batch_answer(
                &mut self.worker,
                &mut self.host,
                token,
                headers,
                body.len(),
            ) {
                self.worker
                    .on_root_call_response(&mut self.host, token, headers, body.len());
            }
        } else if let Some(stream) = self.streams.get(&call.context).cloned() {
            self.host.answering = Some(call.context);
            request::on_call_response(
                &mut self.worker,
                &mut stream.borrow_mut(),
                &mut self.host,
                token,
                headers,
                body.len(),
            );
            self.host.answering = None;
            // ngx_wasm_module: the last call of a request answered, the host resumes it
            // (unless the filter answered it).
            let waiting = self.host.calls.iter().any(|c| c.context == call.context);
            let log = self.host.requests.entry(call.context).or_default();
            if !self.host.lenient && !waiting && log.reply.is_none() {
                log.resumed += 1;
            }
        }
        self.host.answer = None;
    }

    /// The response (upstream's, status 200, or the filter's reply) and the end of request `id`.
    pub fn finish(&mut self, id: ContextId) {
        let Some(stream) = self.streams.remove(&id) else {
            return;
        };
        self.host.enter(id);
        request::on_response_headers(&mut stream.borrow_mut(), &mut self.host);
        request::on_log(&mut self.worker, &mut stream.borrow_mut(), &mut self.host);
        self.host.alive.retain(|&c| c != id);
    }

    /// What the host did for request `id`.
    pub fn log(&self, id: ContextId) -> RequestLog {
        self.host.requests.get(&id).cloned().unwrap_or_default()
    }

    /// Calls not answered yet, made after the `seen` first ones.
    pub fn calls_since(&self, seen: usize) -> Vec<Call> {
        self.host.calls.iter().skip(seen).cloned().collect()
    }
}
