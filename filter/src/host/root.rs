//! The root context: configuration, the worker's shared state, stats and the tick that
//! releases queued requests.

use core::hash::BuildHasher;
use std::cell::RefCell;
use std::rc::Rc;

use log::{error, info};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;

use super::{abi, http::Request, now};
use crate::decision::{Decision, Needs};
use crate::engine::Limiter;
use crate::policy::Policy;
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
    /// When the next tick is due (0: none scheduled sooner than the stats tick).
    next_tick: Nanos,
    last_flush: Nanos,
}

impl Worker {
    fn new(policy: Policy, seed: u64) -> Self {
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
        Worker {
            needs: Needs::of(&policy),
            counters: vec![RuleCounters::default(); policy.rules.len()],
            limiter: Limiter::new(policy.state_slots, LOCAL_CACHE),
            decision: Decision::default(),
            metric_ids,
            queue: Vec::new(),
            next_tick: 0,
            last_flush: 0,
            seed,
            policy,
        }
    }

    /// Holds HTTP context `context_id` until `due`, ticking early enough to release it.
    pub fn enqueue(&mut self, due: Nanos, context_id: u32, now: Nanos) {
        self.queue.push((due, context_id));
        if self.next_tick == 0 || due < self.next_tick {
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
        match self.queue.iter().map(|&(due, _)| due).min() {
            Some(due) => {
                schedule(due.saturating_sub(now));
                self.next_tick = due;
            }
            None => {
                schedule(STATS_EVERY);
                self.next_tick = 0;
            }
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
    }
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

impl Context for Root {}

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
        // The configuration (which holds the tenants' keys) seeds the bucket hashes: the same on
        // every worker, unknown to clients.
        let seed = foldhash::quality::FixedState::with_seed(0x746f_6c6c_6761_7465).hash_one(&bytes);
        self.worker = Some(Rc::new(RefCell::new(Worker::new(policy, seed))));
        schedule(STATS_EVERY);
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
