//! The root context: configuration, the worker's shared state, stats, `global` rules' sync
//! with the sidecar, and the tick that drives them and releases queued requests.

use core::hash::BuildHasher;
use std::cell::RefCell;
use std::rc::Rc;

use log::{error, info, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;

use super::sidecar::{self, Calls, Stream};
use super::store::HostShared;
use super::usage::UsageOut;
use super::{abi, http, http::Request, now};
use crate::decision::{Decision, Needs};
use crate::engine::{Limiter, SharedStore};
use crate::policy::{Policy, Scope};
use crate::protocol::{SYNC_PATH, SyncResponse};
use crate::sync::{Sync, refill_lag};
use crate::{Nanos, SECOND};

/// Keys of other keys this worker keeps leases and refusals for, at most.
const LOCAL_CACHE: usize = 16_384;
/// How often counters go to the host's stats.
const STATS_EVERY: Nanos = SECOND;

/// Per-rule counters not yet sent to the host.
#[derive(Clone, Copy, Debug, Default)]
pub struct RuleCounters {
    pub allowed: u64,
    pub refused: u64,
    pub shadow_refused: u64,
    pub queued: u64,
    /// `strict` checks the sidecar did not answer (failure_mode decided).
    pub sidecar_failures: u64,
}

/// Everything one worker's contexts share.
pub struct Worker {
    pub policy: Policy,
    pub needs: Needs,
    pub seed: u64,
    pub limiter: Limiter,
    pub decision: Decision,
    pub counters: Vec<RuleCounters>,
    metric_ids: Vec<[Option<u32>; 5]>,
    /// Paused requests: (release time, HTTP context id).
    pub queue: Vec<(Nanos, u32)>,
    /// When the next tick is due.
    next_tick: Nanos,
    last_flush: Nanos,
    /// `global` rules' sync (policies with a sidecar and at least one `global` rule).
    pub sync: Option<Sync>,
    next_sync: Nanos,
    /// The token of the sync call in flight.
    sync_call: Option<u32>,
    /// Whether `global` rules are cut to the node's share (logged when it changes).
    degraded: bool,
    /// `tollgate.sync.{batches,failures,dropped}`.
    sync_ids: [Option<u32>; 3],
    /// `strict` checks queued and calls out.
    pub calls: Calls,
    /// Usage on its way to the sidecar (policies with `usage` on).
    pub usage: Option<UsageOut>,
    /// `tollgate.usage.{batches,failures,dropped,log_dropped}`.
    usage_ids: [Option<u32>; 4],
    /// Requests waiting for `strict` answers, by HTTP context.
    pub waiting: hashbrown::HashMap<u32, Rc<RefCell<Stream>>>,
}

impl Worker {
    fn new(policy: Policy, seed: u64, now: Nanos) -> Self {
        let metric_ids = policy
            .rules
            .iter()
            .map(|rule| {
                [
                    "allowed",
                    "refused",
                    "shadow_refused",
                    "queued",
                    "sidecar_failures",
                ]
                .map(|what| abi::define_counter(&format!("tollgate.{}.{}", rule.name, what)))
            })
            .collect();
        let syncs =
            policy.sidecar.is_some() && policy.rules.iter().any(|rule| rule.scope == Scope::Global);
        let sync_ids = if syncs {
            ["batches", "failures", "dropped"]
                .map(|what| abi::define_counter(&format!("tollgate.sync.{what}")))
        } else {
            [None; 3]
        };
        let usage_ids = match policy.usage {
            Some(usage) => ["batches", "failures", "dropped", "log_dropped"].map(|what| {
                (what != "log_dropped" || usage.request_log)
                    .then(|| abi::define_counter(&format!("tollgate.usage.{what}")))
                    .flatten()
            }),
            None => [None; 4],
        };
        Worker {
            usage: policy.usage.map(|u| {
                UsageOut::new(random(now ^ 1), u.interval_ms, u.request_log, &policy, now)
            }),
            usage_ids,
            sync: syncs.then(|| Sync::new(random(now), node_id(now), now)),
            next_sync: now,
            sync_call: None,
            degraded: false,
            sync_ids,
            calls: Calls::default(),
            waiting: hashbrown::HashMap::new(),
            needs: Needs::of(&policy),
            counters: vec![RuleCounters::default(); policy.rules.len()],
            limiter: Limiter::new(policy.state_slots, LOCAL_CACHE),
            decision: Decision::default(),
            metric_ids,
            queue: Vec::new(),
            next_tick: now,
            last_flush: now,
            seed,
            policy,
        }
    }

    /// Ticks within a millisecond (queued strict checks wait for the root context).
    pub fn wake_soon(&mut self, now: Nanos) {
        let due = now.saturating_add(1_000_000);
        if due < self.next_tick {
            schedule(1_000_000);
            self.next_tick = due;
        }
    }

    /// Holds HTTP context `context_id` until `due`, ticking early enough to release it.
    pub fn enqueue(&mut self, due: Nanos, context_id: u32, now: Nanos) {
        self.queue.push((due, context_id));
        if due < self.next_tick {
            schedule(due.saturating_sub(now));
            self.next_tick = due;
        }
    }

    fn tick(&mut self, now: Nanos) {
        let mut index = 0;
        while index < self.queue.len() {
            match self.queue.get(index) {
                Some(&(due, context_id)) if due <= now => {
                    self.queue.swap_remove(index);
                    abi::resume_request(context_id);
                }
                _ => index += 1,
            }
        }
        if now.saturating_sub(self.last_flush) >= STATS_EVERY {
            self.flush_stats();
            self.last_flush = now;
        }
        if self.calls.queued() {
            http::flush_checks(self, now);
        }
        if self.sync.is_some() && now >= self.next_sync {
            self.send_sync(now);
        }
        if let (Some(usage), Some(sidecar)) = (self.usage.as_mut(), self.policy.sidecar.as_ref())
            && usage.due(now)
        {
            usage.send(sidecar, now);
        }
        let mut next = self.last_flush.saturating_add(STATS_EVERY);
        if self.sync.is_some() {
            next = next.min(self.next_sync);
        }
        if let Some(usage) = &self.usage {
            next = next.min(usage.next_send);
        }
        if let Some(due) = self.queue.iter().map(|&(due, _)| due).min() {
            next = next.min(due);
        }
        schedule(next.saturating_sub(now));
        self.next_tick = next;
    }

    /// The share `global` rules are cut to at `now` (1: the whole limit), for the decision.
    pub fn global_share(&self, now: Nanos) -> u64 {
        match (&self.sync, &self.policy.sidecar) {
            (Some(sync), Some(sidecar)) => sync.share(sidecar, now),
            _ => 1,
        }
    }

    /// Sends the next batch of `global` admissions (or a heartbeat) unless one is out.
    fn send_sync(&mut self, now: Nanos) {
        let (Some(sync), Some(sidecar)) = (self.sync.as_mut(), self.policy.sidecar.as_ref()) else {
            return;
        };
        self.next_sync = now.saturating_add(sidecar.sync_interval_ms.saturating_mul(1_000_000));
        let share = sync.share(sidecar, now);
        if (share > 1) != self.degraded {
            self.degraded = share > 1;
            if self.degraded {
                warn!(
                    "the sidecar does not answer: global rules limit this node to 1/{share} of their limits"
                );
            } else {
                info!("the sidecar answers again: global rules use their whole limits");
            }
        }
        let Some(batch) = sync.next_batch(&self.policy, now) else {
            return;
        };
        self.sync_call = serde_json::to_vec(&batch).ok().and_then(|body| {
            sidecar::call(
                sidecar,
                SYNC_PATH,
                &body,
                std::time::Duration::from_millis(sidecar.timeout_ms),
            )
        });
        if self.sync_call.is_none() {
            sync.failed();
        }
    }

    /// The sidecar's answer to the sync call `token`; folds the totals into the node's buckets.
    fn sync_answered(&mut self, token: u32, num_headers: usize, body_size: usize, now: Nanos) {
        if self.sync_call != Some(token) {
            return;
        }
        self.sync_call = None;
        let (Some(sync), Some(config)) = (self.sync.as_mut(), self.policy.sidecar.as_ref()) else {
            return;
        };
        let Some(response) = sidecar::read_response::<SyncResponse>(num_headers, body_size) else {
            sync.failed();
            return;
        };
        let was_shared = sync.share(config, now) > 1;
        let folds = sync.answered(&response, now);
        if was_shared && sync.share(config, now) == 1 {
            // Refusals decided under the node's share would outlive it (until their retry time).
            self.limiter.forget_refusals();
        }
        let interval = config.sync_interval_ms.saturating_mul(1_000_000);
        self.limiter.allowances.set_nodes(sync.nodes(config));
        for fold in folds {
            let target = fold.target.saturating_add(refill_lag(&fold.ask, interval));
            let _ = self.limiter.fold(&mut HostShared, &fold.ask, target, now);
            if let Some(allowance) = fold.allowance {
                self.limiter.allow(fold.ask.key, allowance, now);
            }
        }
        if self.degraded {
            self.degraded = false;
            info!("the sidecar answers again: global rules use their whole limits");
        }
    }

    fn flush_stats(&mut self) {
        for (counters, ids) in self.counters.iter_mut().zip(&self.metric_ids) {
            let values = [
                counters.allowed,
                counters.refused,
                counters.shadow_refused,
                counters.queued,
                counters.sidecar_failures,
            ];
            for (value, id) in values.into_iter().zip(ids) {
                if let (Some(id), true) = (id, value > 0) {
                    abi::increment(*id, value);
                }
            }
            *counters = RuleCounters::default();
        }
        if let Some(sync) = self.sync.as_mut() {
            let values = [sync.stats.batches, sync.stats.failures, sync.stats.dropped];
            for (value, id) in values.into_iter().zip(self.sync_ids) {
                if let (Some(id), true) = (id, value > 0) {
                    abi::increment(id, value);
                }
            }
            if sync.stats.dropped > 0 {
                warn!(
                    "{} global admissions could not be kept for the sidecar (too many keys while it was gone)",
                    sync.stats.dropped
                );
            }
            sync.stats = Default::default();
        }
        if let Some(usage) = self.usage.as_mut() {
            let stats = usage.stats;
            let values = [
                stats.batches,
                stats.failures,
                stats.dropped,
                stats.log_dropped,
            ];
            for (value, id) in values.into_iter().zip(self.usage_ids) {
                if let (Some(id), true) = (id, value > 0) {
                    abi::increment(id, value);
                }
            }
            if stats.dropped > 0 {
                warn!(
                    "{} requests could not be metered: the usage buffer was full (sidecar gone too long?) or their tenant id is not a usable label",
                    stats.dropped
                );
            }
            if stats.log_dropped > 0 {
                warn!(
                    "{} requests could not be kept for the request log: its buffer was full (sidecar gone too long?)",
                    stats.log_dropped
                );
            }
            usage.stats = Default::default();
        }
    }
}

/// A random number (the host's entropy through the standard library's hasher keys).
fn random(salt: u64) -> u64 {
    std::hash::RandomState::new().hash_one(salt)
}

/// This node's id, the same for every worker: the first worker to start creates it in shared
/// data (with a compare-and-swap, so two workers starting together agree).
fn node_id(now: Nanos) -> u64 {
    const NAME: &str = "tg/node";
    let mut store = HostShared;
    for _ in 0..8 {
        match store.get(NAME) {
            Ok(Some((bytes, cas))) => {
                if let Ok(id) = <[u8; 8]>::try_from(bytes.as_slice()) {
                    return u64::from_le_bytes(id);
                }
                let id = random(now).max(1);
                if store.set(NAME, &id.to_le_bytes(), cas).is_ok() {
                    return id;
                }
            }
            Ok(None) => {
                // Create the entry empty to get a token, then claim it (one claim wins).
                let _ = store.set(NAME, &[], 0);
            }
            Err(_) => break,
        }
    }
    random(now).max(1)
}

/// (Re-)arms the tick `delay` from now: hosts keep a running timer's old period until it
/// fires, so the period is cleared first to make the new one take effect at once.
fn schedule(delay: Nanos) {
    let millis = delay.div_ceil(1_000_000).clamp(1, 60_000);
    let _ = hostcalls::set_tick_period(std::time::Duration::ZERO);
    let _ = hostcalls::set_tick_period(std::time::Duration::from_millis(millis));
}

/// The plugin's root context (one per worker VM).
#[derive(Default)]
pub struct Root {
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
        let Some(mut worker) = self.worker.as_ref().and_then(|w| w.try_borrow_mut().ok()) else {
            return;
        };
        let now = now();
        if let Some(usage) = worker.usage.as_mut()
            && usage.answered(token_id, num_headers, body_size)
        {
            return;
        }
        if worker.sync_call == Some(token_id) {
            worker.sync_answered(token_id, num_headers, body_size, now);
            return;
        }
        if http::answer_call(&mut worker, token_id, num_headers, body_size, now) {
            http::flush_checks(&mut worker, now);
        }
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = hostcalls::get_buffer(
            proxy_wasm::types::BufferType::PluginConfiguration,
            0,
            usize::MAX,
        )
        .ok()
        .flatten()
        .unwrap_or_default();
        let policy = match Policy::from_json(&bytes) {
            Ok(policy) => policy,
            Err(err) => {
                error!("invalid configuration: {err}");
                return false;
            }
        };
        info!("configured {} rules", policy.rules.len());
        let seed = policy.seed;
        let now = now();
        let mut worker = Worker::new(policy, seed, now);
        let first = worker.next_sync.min(now.saturating_add(STATS_EVERY));
        worker.next_tick = first;
        self.worker = Some(Rc::new(RefCell::new(worker)));
        schedule(first.saturating_sub(now));
        true
    }

    fn on_tick(&mut self) {
        if let Some(mut worker) = self.worker.as_ref().and_then(|w| w.try_borrow_mut().ok()) {
            worker.tick(now());
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let worker = self.worker.clone()?;
        Some(Box::new(Request::new(context_id, worker)))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
