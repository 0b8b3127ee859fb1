"""global and strict rules with the sidecar unreachable (strict: see test_strict.py for a running one).

`tollgate_sidecar` points at a loopback port where nothing listens.
"""

from __future__ import annotations

import pytest

from harness import config, http, policy

SIDECAR = {"cluster": "tollgate_sidecar", "authority": "tollgate-sidecar", "timeout_ms": 100, "sync_interval_ms": 200}


def test_global_limits_locally(start_envoy):
    cfg = policy.config(policy.rule("g", "fixed_window", 3, "1h", scope="global"), sidecar=SIDECAR)
    envoy = start_envoy(config.tollgate(cfg))
    responses = http.burst(envoy.port, 5)
    assert http.statuses(responses) == [200] * 3 + [429] * 2, [str(r) for r in responses]
    assert responses[-1].json()["rule"] == "g"


def test_strict_fails_open(start_envoy):
    cfg = policy.config(
        policy.rule("s", "sliding_window_log", 1, "1h", scope="strict"), sidecar=SIDECAR, failure_mode="open"
    )
    envoy = start_envoy(config.tollgate(cfg))
    responses = http.burst(envoy.port, 4)
    assert http.statuses(responses) == [200] * 4, [str(r) for r in responses]


@pytest.mark.parametrize(("error_format", "content_type"), [("json", "application/json"), ("problem+json", "application/problem+json")])
def test_strict_fails_closed(start_envoy, error_format: str, content_type: str):
    cfg = policy.config(
        policy.rule("s", "sliding_window_log", 100, "1h", scope="strict"),
        sidecar=SIDECAR,
        failure_mode="closed",
        error_format=error_format,
    )
    envoy = start_envoy(config.tollgate(cfg))
    for resp in http.burst(envoy.port, 2):
        assert resp.status == 503, resp
        assert resp.header("content-type") == content_type, resp
        body = resp.json()
        if error_format == "json":
            assert body["error"] == "rate_limit_unavailable", body
        else:
            assert body["status"] == 503, body
        assert body["rule"] == "s", body


def test_strict_rule_that_does_not_match_costs_nothing(start_envoy):
    cfg = policy.config(
        policy.rule("s", "sliding_window_log", 100, "1h", scope="strict", match={"path_prefix": "/reports"}),
        sidecar=SIDECAR,
        failure_mode="closed",
    )
    envoy = start_envoy(config.tollgate(cfg))
    assert envoy.get("/other").status == 200
    assert envoy.get("/reports/1").status == 503
