//! Sending `global` rules' admissions to the sidecar and folding its totals back.

use log::{info, warn};

use super::{
    Worker,
    host::{Host, Shared},
    sidecar,
};
use crate::Nanos;
use crate::protocol::{SYNC_PATH, SyncResponse};
use crate::sync::refill_lag;

impl Worker {
    /// The share `global` rules are cut to at `now` (1: the whole limit), for the decision.
    pub fn global_share(&self, now: Nanos) -> u64 {
        match (&self.sync, &self.policy.sidecar) {
            (Some(sync), Some(sidecar)) => sync.share(sidecar, now),
            _ => 1,
        }
    }

    /// Sends the next batch of `global` admissions (or a heartbeat) unless one is out.
    pub(super) fn send_sync(&mut self, host: &mut impl Host, now: Nanos) {
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
        self.sync_call = serde_json::to_vec(&batch)
            .ok()
            .and_then(|body| sidecar::call(host, sidecar, SYNC_PATH, &body, sidecar.timeout_ms));
        if self.sync_call.is_none() {
            sync.failed();
        }
    }

    /// The sidecar's answer to the sync call `token`; folds the totals into the node's buckets.
    pub(super) fn sync_answered(
        &mut self,
        host: &mut impl Host,
        token: u32,
        num_headers: usize,
        body_size: usize,
        now: Nanos,
    ) {
        if self.sync_call != Some(token) {
            return;
        }
        self.sync_call = None;
        let (Some(sync), Some(config)) = (self.sync.as_mut(), self.policy.sidecar.as_ref()) else {
            return;
        };
        let Some(response) = sidecar::read_response::<SyncResponse>(host, num_headers, body_size)
        else {
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
            let _ = self
                .limiter
                .fold(&mut Shared(&mut *host), &fold.ask, target, now);
            if let Some(allowance) = fold.allowance {
                self.limiter.allow(fold.ask.key, allowance, now);
            }
        }
        if self.degraded {
            self.degraded = false;
            info!("the sidecar answers again: global rules use their whole limits");
        }
    }
}
