"""The filter's own counters reach the sidecar's /metrics: every worker reports its totals since
it started (POST /v1/stats, every 10 s) and the sidecar counts the difference from that worker's
previous report, so hosts that show proxy stats nowhere (nginx) still have them, and a repeated
report counts nothing twice."""

from __future__ import annotations

from harness import config, http, policy
from harness.wait import until

KEY = {"x-api-key": "key-pro-0001"}


def test_the_filter_counters_reach_the_sidecar_metrics_once(start_envoy, sidecar):
    rule = policy.rule("per-tenant", "fixed_window", 5, "1h", key=["tenant"])
    settings = policy.config(
        rule,
        tenants=policy.TENANTS,
        sidecar={"cluster": "tollgate_sidecar", "authority": "tollgate-sidecar", "timeout_ms": 200},
    )
    envoy = start_envoy(config.tollgate(settings, sidecar_port=sidecar.port))
    statuses = http.statuses(http.burst(envoy.port, 8, headers=KEY))
    assert statuses == [200] * 5 + [429] * 3, statuses
    envoy.wait_tollgate_counter("per-tenant", "refused", 3)

    def reported(outcome: str) -> float:
        return sidecar.metric("tollgate_filter_decisions_total", rule="per-tenant", outcome=outcome)

    # Reports go every 10 s per worker: two rounds at most.
    until(lambda: (reported("allowed"), reported("refused")), lambda v: v == (5, 3), 25,
          "the filter's decisions on the sidecar's /metrics")
    assert envoy.tollgate_counter("per-tenant", "allowed") == 5
    # Later reports carry the same totals and the new refusal: only that one is added.
    assert http.statuses(http.burst(envoy.port, 1, headers=KEY)) == [429]
    until(lambda: reported("refused"), lambda v: v == 4, 25, "the next report")
    assert reported("allowed") == 5
    assert sidecar.metric("tollgate_errors_total") == 0, "every report was accepted"
