//! One worker of the proxy, as plain Rust: configuration, the state every request context of
//! the worker shares, stats, `global` rules' sync with the sidecar, `strict` checks, usage
//! metering, and the tick that drives them. Everything it asks of the proxy goes through
//! [`host::Host`], so the whole of it runs natively against a mock host in tests; the
//! Proxy-Wasm glue (`crate::host`, wasm32 only) only forwards callbacks here.

pub mod batch;
pub mod facts;
pub mod follow;
pub mod gate;
pub mod host;
pub mod jwt;
pub mod keys;
#[cfg(test)]
pub mod mock;
pub mod request;
pub mod sidecar;
pub mod stats;
pub mod strict;
mod sync_out;
#[cfg(test)]
mod tests;
pub mod usage_out;

use core::hash::BuildHasher;

use log::{info, warn};

use crate::decision::{Decision, Needs};
use crate::engine::slots::create;
use crate::engine::{Limiter, SharedStore};
use crate::policy::{Policy, Scope};
use crate::sync::Sync;
use crate::{Nanos, SECOND};
use host::{Host, Shared};
use usage_out::UsageOut;

/// Keys of other keys this worker keeps leases and refusals for, at most.
const LOCAL_CACHE: usize = 16_384;
/// How often counters go to the host's stats.
const STATS_EVERY: Nanos = SECOND;
/// Logged at configure time on a host that cannot release a queued request.
pub const NO_QUEUE: &str = "rules[{index}].queue: this proxy cannot hold a request and release it later (nginx's ngx_wasm_module resumes only the request whose callback runs): leaky-bucket requests over the rate are refused instead of queued";
/// A context id no host hands out (ids count up from 1).
const NO_SUCH_CONTEXT: u32 = u32::MAX;

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
    last_flush: Nanos,
    /// Half the tick period (sends due within it go at this tick).
    half_tick: Nanos,
    /// `global` rules' sync (policies with a sidecar and at least one `global` rule).
    pub sync: Option<Sync>,
    next_sync: Nanos,
    /// The token of the sync call in flight.
    sync_call: Option<u32>,
    /// Whether `global` rules are cut to the node's share (logged when it changes).
    degraded: bool,
    /// `tollgate.sync.{batches,failures,dropped}`.
    sync_ids: [Option<u32>; 3],
    /// Usage on its way to the sidecar (policies with `usage` on).
    pub usage: Option<UsageOut>,
    /// `tollgate.usage.{batches,failures,dropped,log_dropped}`.
    usage_ids: [Option<u32>; 4],
    /// The registry followed (policies with `registry` on).
    pub follow: Option<follow::Follow>,
    /// `tollgate.registry.{updates,failures}`.
    follow_ids: [Option<u32>; 2],
    /// The totals reported to the sidecar (policies with a sidecar).
    pub report: Option<stats::StatsOut>,
    /// The configuration's own plans (the registry's are merged over them).
    static_plans: Vec<crate::policy::Plan>,
    /// Presented API keys, resolved.
    pub keys: keys::Keys,
    /// Whether the host switches contexts (`proxy_set_effective_context`) and leaves a paused
    /// request paused until the filter resumes it (Envoy). ngx_wasm_module does neither: it
    /// resumes whichever request is current, and resumes a request by itself once its last
    /// call is answered.
    pub host_switches_contexts: bool,
    /// `strict` requests waiting to go to the sidecar in batches (hosts that switch contexts
    /// and can wake the root up; elsewhere each request makes its own call).
    pub batcher: Option<batch::Batcher>,
}

impl Worker {
    fn new(host: &mut impl Host, policy: Policy, seed: u64, now: Nanos) -> Self {
        let metric_ids = stats::rule_metric_ids(host, &policy);
        let syncs =
            policy.sidecar.is_some() && policy.rules.iter().any(|rule| rule.scope == Scope::Global);
        let sync_ids = if syncs {
            ["batches", "failures", "dropped"]
                .map(|what| host.define_counter(&format!("tollgate.sync.{what}")))
        } else {
            [None; 3]
        };
        let usage_ids = stats::usage_metric_ids(host, &policy);
        let follow_ids = match policy.registry {
            Some(_) => ["updates", "failures"]
                .map(|what| host.define_counter(&format!("tollgate.registry.{what}"))),
            None => [None; 2],
        };
        let mut needs = Needs::of(&policy);
        // A key is looked up for its tenant's state (suspended, quota) or to refuse it.
        needs.tenant |= policy.registry.is_some()
            || policy.unknown_key == crate::policy::UnknownKey::Reject
            || !policy.hashed_tenants.is_empty();
        Worker {
            follow: policy.registry.map(|r| follow::Follow::new(r, now)),
            follow_ids,
            static_plans: policy.plans.clone(),
            report: policy
                .sidecar
                .as_ref()
                .map(|_| stats::StatsOut::new(random(now ^ 2), &policy, now)),
            keys: keys::Keys::default(),
            host_switches_contexts: true,
            batcher: None,
            usage: policy.usage.map(|u| {
                UsageOut::new(random(now ^ 1), u.interval_ms, u.request_log, &policy, now)
            }),
            usage_ids,
            sync: syncs.then(|| Sync::new(random(now), node_id(host, now), now)),
            next_sync: now,
            sync_call: None,
            degraded: false,
            sync_ids,
            needs,
            counters: vec![RuleCounters::default(); policy.rules.len()],
            limiter: Limiter::new(policy.state_slots, LOCAL_CACHE),
            decision: Decision::default(),
            metric_ids,
            queue: Vec::new(),
            last_flush: now,
            half_tick: 0,
            seed,
            policy,
        }
    }

    /// The root context's tick.
    pub fn tick(&mut self, host: &mut impl Host, now: Nanos) {
        let mut index = 0;
        while index < self.queue.len() {
            match self.queue.get(index) {
                Some(&(due, context_id)) if due <= now => {
                    self.queue.swap_remove(index);
                    // Only on hosts that switch contexts (checked at configure time).
                    if host.set_effective_context(context_id) {
                        host.resume(context_id);
                    }
                }
                _ => index += 1,
            }
        }
        if now.saturating_sub(self.last_flush) >= STATS_EVERY {
            self.flush_stats(host);
            self.last_flush = now;
        }
        // Due within half a tick: a tick that lands just before the due time must not put
        // the send off by a whole period (the sync interval bounds the overshoot).
        let soon = now.saturating_add(self.half_tick);
        if self.sync.is_some() && soon >= self.next_sync {
            self.send_sync(host, now);
        }
        if let (Some(usage), Some(sidecar)) = (self.usage.as_mut(), self.policy.sidecar.as_ref())
            && usage.due(soon)
        {
            usage.send(host, sidecar, now);
        }
        if let (Some(follow), Some(sidecar)) = (self.follow.as_mut(), self.policy.sidecar.as_ref())
            && follow.due(soon)
        {
            follow.send(host, sidecar, now);
        }
        if let (Some(report), Some(sidecar)) = (self.report.as_mut(), self.policy.sidecar.as_ref())
        {
            report.send(host, sidecar, soon);
        }
    }

    /// The registry changed: its plans merged over the configuration's, keys resolved again,
    /// and refusals remembered under the old plans dropped (a refusal under a plan of 5 per
    /// minute would otherwise outlive an upgrade until its retry time, 12 s later).
    fn registry_changed(&mut self) {
        let Some(follow) = self.follow.as_ref() else {
            return;
        };
        self.policy.plans = follow::merged_plans(&self.static_plans, &follow.table);
        if let Some(usage) = self.usage.as_mut() {
            usage.set_plans(&self.policy.plans);
        }
        self.keys.clear();
        self.limiter.forget_refusals();
    }
}

/// A random number (the host's entropy through the standard library's hasher keys).
fn random(salt: u64) -> u64 {
    std::hash::RandomState::new().hash_one(salt)
}

/// This node's id, the same for every worker: the first worker to start creates it in shared
/// data (with a compare-and-swap, so two workers starting together agree).
fn node_id(host: &mut impl Host, now: Nanos) -> u64 {
    const NAME: &str = "tg/node";
    let mut store = Shared(host);
    let mine = random(now).max(1);
    for _ in 0..8 {
        match store.get(NAME) {
            Ok(Some((bytes, _))) => {
                if let Ok(id) = <[u8; 8]>::try_from(bytes.as_slice()) {
                    return u64::from_le_bytes(id);
                }
                break;
            }
            Ok(None) => match create(&mut store, NAME, &mine.to_le_bytes()) {
                Ok(true) => return mine,
                Ok(false) => {}
                Err(_) => break,
            },
            Err(_) => break,
        }
    }
    mine
}

impl Worker {
    /// The worker configured from the plugin configuration `bytes` (root context, at
    /// configure time); the error names the field and the fix.
    pub fn configure(host: &mut impl Host, bytes: &[u8]) -> Result<Self, String> {
        let mut policy = Policy::from_json(bytes).map_err(|err| err.to_string())?;
        info!("configured {} rules", policy.rules.len());
        let seed = policy.seed;
        let now = host.now();
        // A host that accepts a context that does not exist does not switch contexts.
        let switches = !host.set_effective_context(NO_SUCH_CONTEXT);
        let queued = policy.rules.iter().position(|r| r.queue > 0);
        if let (Some(index), false) = (queued, switches) {
            // The tick could not resume a queued request (it would resume another one).
            warn!("{}", NO_QUEUE.replace("{index}", &index.to_string()));
            for rule in &mut policy.rules {
                rule.queue = 0;
            }
        }
        let mut worker = Worker::new(host, policy, seed, now);
        worker.host_switches_contexts = switches;
        let strict = worker.policy.sidecar.is_some()
            && worker.policy.rules.iter().any(|r| r.scope == Scope::Strict);
        if switches && strict {
            let name = format!("tollgate.wakeup.{:016x}", random(now ^ 3));
            worker.batcher = host.register_wakeup(&name).map(batch::Batcher::new);
        }
        // Set once: hosts differ on re-arming a timer (ngx_wasm_module adds one per call).
        let period = worker.tick_period();
        worker.half_tick = u64::from(period) * 1_000_000 / 2;
        host.set_tick_period(period);
        Ok(worker)
    }

    /// The tick period, in milliseconds: often enough for the stats, the sync and usage
    /// intervals and, with a leaky-bucket queue, a tenth of its rules' spacing.
    fn tick_period(&self) -> u32 {
        let mut period = STATS_EVERY;
        if let Some(sidecar) = self.policy.sidecar.as_ref().filter(|_| self.sync.is_some()) {
            period = period.min(sidecar.sync_interval_ms.saturating_mul(1_000_000));
        }
        if let Some(usage) = self.policy.usage {
            period = period.min(usage.interval_ms.saturating_mul(1_000_000));
        }
        if let Some(registry) = self.policy.registry {
            period = period.min(registry.interval_ms.saturating_mul(1_000_000));
        }
        for rule in self.policy.rules.iter().filter(|r| r.queue > 0) {
            // The spacing of the highest limit any plan gives the rule.
            let limit = (0..self.policy.plans.len())
                .map(Some)
                .chain([None])
                .map(|plan| crate::decision::quota(&self.policy, rule, plan).limit)
                .max()
                .unwrap_or(1);
            let spacing = rule.window / limit.max(1);
            period = period.min(spacing / 10);
        }
        u32::try_from(period / 1_000_000).unwrap_or(u32::MAX).max(1)
    }

    /// A call made by the root context answered: usage, sync or the registry.
    pub fn on_root_call_response(
        &mut self,
        host: &mut impl Host,
        token: u32,
        num_headers: usize,
        body_size: usize,
    ) {
        let now = host.now();
        if let Some(usage) = self.usage.as_mut()
            && usage.answered(host, token, num_headers, body_size)
        {
            return;
        }
        if self.report.as_mut().is_some_and(|r| r.answered(token)) {
            return;
        }
        if self.sync_call == Some(token) {
            self.sync_answered(host, token, num_headers, body_size, now);
        }
        if let Some(follow) = self.follow.as_mut().filter(|f| f.owns(token))
            && follow.answered(host, num_headers, body_size)
        {
            self.registry_changed();
        }
    }
}
