"""The 429 contract, refusals that cost nothing, shadow rules, and the per-rule stats."""

from __future__ import annotations

import pytest

from harness import config, http, policy

QUOTA_EXCEEDED = "https://iana.org/assignments/http-problem-types#quota-exceeded"


def refused(start_envoy, *rules: dict, **top) -> http.Response:
    """Spend the rules' budget and return the first 429."""
    envoy = start_envoy(config.tollgate(policy.config(*rules, **top)))
    first = envoy.get("/api/x")
    assert first.status == 200, first
    resp = envoy.get("/api/x")
    assert resp.status == 429, resp
    return resp


def assert_retry_after(resp: http.Response, window: int) -> int:
    value = resp.header("retry-after")
    assert value is not None and value.isdigit(), resp
    assert 1 <= int(value) <= window, resp
    return int(value)


def test_429_json_body(start_envoy):
    resp = refused(start_envoy, policy.rule("api", "fixed_window", 1, "1h"))
    retry_after = assert_retry_after(resp, 3600)
    assert resp.header("content-type") == "application/json", resp
    body = resp.json()
    assert body["error"] == "rate_limit_exceeded", body
    assert isinstance(body["message"], str) and body["message"], body
    assert body["retryAfter"] == retry_after, body
    assert (body["rule"], body["limit"], body["window"]) == ("api", 1, 3600), body
    assert 1 <= body["reset"] <= 3600, body
    assert body["rules"] == [{"rule": "api", "limit": 1, "window": 3600, "reset": body["reset"]}], body
    # The refusal carries the RateLimit headers too.
    assert resp.header("ratelimit-remaining") == "0" and resp.header("ratelimit-limit") == "1", resp


def test_429_problem_json(start_envoy):
    resp = refused(start_envoy, policy.rule("api", "sliding_window_log", 1, "1m"), error_format="problem+json")
    retry_after = assert_retry_after(resp, 60)
    assert resp.header("content-type") == "application/problem+json", resp
    body = resp.json()
    assert body["type"] == QUOTA_EXCEEDED, body
    assert isinstance(body["title"], str) and body["title"], body
    assert body["violated-policies"] == ["api"], body
    # RFC 9457 members the filter always writes, and its extension member retryAfter.
    assert body["status"] == 429, body
    assert isinstance(body["detail"], str) and body["detail"], body
    assert body["retryAfter"] == retry_after, body


@pytest.mark.parametrize("error_format", ["json", "problem+json"])
def test_429_names_the_rules_that_refused(start_envoy, error_format: str):
    # Two rules out of budget and one with room. After the first refusal the filter only
    # consults what it already knows about the other rules (refusing stays cheaper than
    # serving), so the body names at least one of the two and never the one with room.
    resp = refused(
        start_envoy,
        policy.rule("roomy", "fixed_window", 100, "1h"),
        policy.rule("per-minute", "token_bucket", 1, "1m"),
        policy.rule("per-hour", "sliding_window_log", 1, "1h"),
        error_format=error_format,
    )
    body = resp.json()
    names = body["violated-policies"] if error_format == "problem+json" else [r["rule"] for r in body["rules"]]
    assert names and set(names) <= {"per-hour", "per-minute"}, body
    assert len(names) == len(set(names)), body
    if error_format == "json":
        assert body["rule"] == names[0], body
        # Retry-After is when every named rule has room again: the longest wait.
        assert body["retryAfter"] == max(r["reset"] for r in body["rules"]), body
        assert resp.header("retry-after") == str(body["retryAfter"]), resp


def test_a_refused_request_consumes_nothing(start_envoy):
    cfg = policy.config(
        policy.rule("all", "fixed_window", 10, "1h"),
        policy.rule("b-only", "fixed_window", 2, "1h", match={"path_prefix": "/b"}),
    )
    envoy = start_envoy(config.tollgate(cfg))
    with envoy.client() as client:
        admitted = [client.get("/b") for _ in range(2)]
        assert http.statuses(admitted) == [200, 200]
        # Rule "b-only" refuses these; rule "all" has room and must not be charged for them.
        refusals = [client.get("/b") for _ in range(6)]
        assert http.statuses(refusals) == [429] * 6, [str(r) for r in refusals]
        assert {r.json()["rule"] for r in refusals} == {"b-only"}
        resp = client.get("/a")
    assert resp.status == 200, resp
    assert resp.header("ratelimit-remaining") == str(10 - 3), resp


def test_refusals_do_not_shorten_the_refusing_rules_own_recovery(start_envoy):
    # A sliding log that logged refusals would never let a persistent client back in.
    envoy = start_envoy(config.tollgate(policy.config(policy.rule("r", "sliding_window_log", 2, "1h"))))
    responses = http.burst(envoy.port, 12)
    assert http.statuses(responses) == [200, 200] + [429] * 10
    assert responses[-1].header("ratelimit-remaining") == "0"


def test_shadow_rule_counts_but_never_refuses(start_envoy):
    cfg = policy.config(
        policy.rule("enforced", "fixed_window", 100, "1h"),
        policy.rule("trial", "fixed_window", 2, "1h", shadow=True),
    )
    envoy = start_envoy(config.tollgate(cfg))
    responses = http.burst(envoy.port, 6)
    assert http.statuses(responses) == [200] * 6, [str(r) for r in responses]
    assert envoy.wait_tollgate_counter("trial", "shadow_refused", 4) == 4
    assert envoy.wait_tollgate_counter("trial", "allowed", 2) == 2
    assert envoy.tollgate_counter("trial", "refused") == 0
    assert envoy.wait_tollgate_counter("enforced", "allowed", 6) == 6


def test_per_rule_stats(start_envoy):
    envoy = start_envoy(config.tollgate(policy.config(policy.rule("api", "token_bucket", 60, "1h", burst=2))))
    assert http.statuses(http.burst(envoy.port, 5)) == [200, 200, 429, 429, 429]
    assert envoy.wait_tollgate_counter("api", "allowed", 2) == 2
    assert envoy.wait_tollgate_counter("api", "refused", 3) == 3
    names = set(envoy.stats("tollgate"))
    for kind in ("allowed", "refused", "shadow_refused", "queued"):
        assert any(n.endswith(f"tollgate.api.{kind}") for n in names), names
