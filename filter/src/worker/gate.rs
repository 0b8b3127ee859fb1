//! The registry's refusals, answered before any rate limit: `401`, `403`, and the monthly
//! quota's `429` with `Retry-After` until the period ends and a RateLimit policy named
//! `quota` (its limit the plan's `monthly_quota`, its window the period).

use super::Worker;
use super::host::Host;
use super::keys::Gate;
use super::strict::Stream;
use crate::headers::{self, RuleStatus};
use crate::reply::gate;
use crate::{Nanos, SECOND};

/// The name of the quota's RateLimit policy.
pub const QUOTA_POLICY: &str = "quota";

/// Answers the request with `gate`'s refusal.
pub fn refuse(worker: &Worker, host: &mut impl Host, stream: &mut Stream, gate: &Gate, now: Nanos) {
    let format = worker.policy.error_format;
    stream.headers.clear();
    match gate {
        Gate::InvalidKey => {
            let (content_type, body) = gate::invalid_api_key(format);
            stream.reply(host, 401, content_type, &body, None);
        }
        Gate::Suspended(tenant) => {
            let (content_type, body) = gate::tenant_suspended(format, tenant);
            stream.reply(host, 403, content_type, &body, None);
        }
        Gate::Quota(tenant, exhausted) => {
            let now_secs = now / SECOND;
            let retry_after = exhausted.period_end.saturating_sub(now_secs).max(1);
            if let Some(quota) = exhausted.quota {
                let status = RuleStatus {
                    name: QUOTA_POLICY,
                    limit: quota,
                    remaining: 0,
                    reset_secs: retry_after,
                    window_secs: exhausted.period_end.saturating_sub(exhausted.period_start),
                    partition: 0,
                };
                headers::render(
                    worker.policy.headers,
                    &[status],
                    now_secs,
                    &mut stream.headers,
                );
            }
            let (content_type, body) = gate::quota_exceeded(
                format,
                tenant,
                exhausted.quota,
                retry_after,
                exhausted.period_end,
            );
            stream.reply(host, 429, content_type, &body, Some(retry_after));
        }
    }
}
