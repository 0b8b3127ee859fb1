"""strict rules ask the sidecar per request: exact across workers, failure_mode when it is gone,
and no sidecar call when a local rule already refused."""

from __future__ import annotations

import socket
import time
from concurrent.futures import ThreadPoolExecutor

from harness import config, http, policy
from harness.sidecar import free_port


def sidecar_config(**extra) -> dict:
    return {"cluster": "tollgate_sidecar", "authority": "tollgate-sidecar", "timeout_ms": 500, **extra}


def strict_config(*rules: dict, failure_mode: str = "closed") -> dict:
    return policy.config(*rules, sidecar=sidecar_config(), failure_mode=failure_mode)


def test_strict_admits_exactly_the_limit(start_envoy, sidecar):
    cfg = strict_config(policy.rule("s", "fixed_window", 3, "1h", scope="strict"))
    envoy = start_envoy(config.tollgate(cfg, sidecar_port=sidecar.port))
    responses = http.burst(envoy.port, 6)
    assert http.statuses(responses) == [200] * 3 + [429] * 3, [str(r) for r in responses]
    refused = responses[-1]
    assert refused.json()["rule"] == "s", refused
    assert int(refused.header("retry-after")) >= 1, refused
    assert refused.ratelimit_headers(), refused
    assert sidecar.decisions() == 6
    envoy.wait_tollgate_counter("s", "allowed", 3)
    envoy.wait_tollgate_counter("s", "refused", 3)


def test_strict_is_exact_across_workers(start_envoy, sidecar):
    cfg = strict_config(policy.rule("s", "fixed_window", 3, "1h", scope="strict"))
    envoy = start_envoy(config.tollgate(cfg, sidecar_port=sidecar.port), concurrency=2)
    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(lambda _: envoy.get("/"), range(16)))
    statuses = http.statuses(responses)
    assert statuses.count(200) == 3, [str(r) for r in responses]
    assert statuses.count(429) == 13, [str(r) for r in responses]


def test_sidecar_gone_fails_open(start_envoy):
    cfg = strict_config(policy.rule("s", "fixed_window", 1, "1h", scope="strict"), failure_mode="open")
    envoy = start_envoy(config.tollgate(cfg, sidecar_port=free_port()))
    responses = http.burst(envoy.port, 4)
    assert http.statuses(responses) == [200] * 4, [str(r) for r in responses]
    envoy.wait_tollgate_counter("s", "sidecar_failures", 4)


def test_sidecar_gone_fails_closed(start_envoy):
    cfg = strict_config(policy.rule("s", "fixed_window", 100, "1h", scope="strict"), failure_mode="closed")
    envoy = start_envoy(config.tollgate(cfg, sidecar_port=free_port()))
    for resp in http.burst(envoy.port, 2):
        assert resp.status == 503, resp
        body = resp.json()
        assert body["error"] == "rate_limit_unavailable", body
        assert body["rule"] == "s", body


def test_local_refusal_makes_no_sidecar_call(start_envoy, sidecar):
    cfg = strict_config(
        policy.rule("local", "fixed_window", 1, "1h"),
        policy.rule("s", "fixed_window", 100, "1h", scope="strict", match={"path_prefix": "/strict"}),
    )
    envoy = start_envoy(config.tollgate(cfg, sidecar_port=sidecar.port))
    assert envoy.get("/").status == 200
    responses = http.burst(envoy.port, 3, path="/strict")
    assert http.statuses(responses) == [429] * 3, [str(r) for r in responses]
    assert responses[0].json()["rule"] == "local", responses[0]
    assert sidecar.decisions() == 0


def test_strict_refusal_refunds_the_local_rules(start_envoy, sidecar):
    cfg = strict_config(
        policy.rule("local", "fixed_window", 3, "1h"),
        policy.rule("s", "fixed_window", 1, "1h", scope="strict", match={"path_prefix": "/strict"}),
    )
    envoy = start_envoy(config.tollgate(cfg, sidecar_port=sidecar.port))
    statuses = http.statuses(http.burst(envoy.port, 3, path="/strict"))
    assert statuses == [200, 429, 429], statuses
    # The two strict refusals gave their local permits back: two more fit under "local".
    statuses = http.statuses(http.burst(envoy.port, 3, path="/"))
    assert statuses == [200, 200, 429], statuses


def test_a_strict_refusal_refunds_the_other_strict_rules(start_envoy, sidecar):
    # Two strict rules on one request: "narrow" refuses, so "wide"'s permit, taken in the same
    # call, goes back on the sidecar (the checks travel as one group).
    cfg = strict_config(
        policy.rule("wide", "fixed_window", 4, "1h", scope="strict"),
        policy.rule("narrow", "fixed_window", 1, "1h", scope="strict", match={"path_prefix": "/narrow"}),
    )
    envoy = start_envoy(config.tollgate(cfg, sidecar_port=sidecar.port))
    statuses = http.statuses(http.burst(envoy.port, 3, path="/narrow"))
    assert statuses == [200, 429, 429], statuses
    # Only the first request spent a permit of "wide": three more fit.
    statuses = http.statuses(http.burst(envoy.port, 4, path="/"))
    assert statuses == [200, 200, 200, 429], statuses
    assert sidecar.decisions(rule="wide", outcome="refunded") == 2, sidecar.metrics()


def test_sidecar_that_never_answers_times_out(start_envoy):
    # A socket that accepts connections (the kernel's backlog) but never answers.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        cfg = policy.config(
            policy.rule("s", "fixed_window", 100, "1h", scope="strict"),
            sidecar=sidecar_config(timeout_ms=200),
            failure_mode="closed",
        )
        envoy = start_envoy(config.tollgate(cfg, sidecar_port=silent.getsockname()[1]))
        started = time.monotonic()
        resp = envoy.get("/")
        elapsed = time.monotonic() - started
    assert resp.status == 503, resp
    assert resp.json()["error"] == "rate_limit_unavailable", resp
    assert 0.15 <= elapsed < 2.0, elapsed


def test_concurrent_checks_travel_in_batches_and_stay_exact(start_envoy, sidecar):
    # One worker, 48 requests at once. On Envoy the worker's strict requests wait for the root
    # context, which sends them many per call (at most four calls out): exactly the limit is
    # admitted, every request gets its own answer (each resumed or answered through its own
    # context), the sidecar decided each request once, and fewer calls than requests went out.
    # (Usage metering is off so that every call on the sidecar cluster is a check. On nginx,
    # which cannot resume one request from another's callback, each request makes its own
    # call: the mock-host tests and the nginx suite show that path.)
    cfg = strict_config(policy.rule("s", "fixed_window", 20, "1h", scope="strict"))
    cfg["usage"] = {"enabled": False}
    envoy = start_envoy(config.tollgate(cfg, sidecar_port=sidecar.port))
    clients = [envoy.client() for _ in range(48)]
    for client in clients:
        client.conn.connect()  # every connection open first, so the 48 requests arrive together
    try:
        with ThreadPoolExecutor(max_workers=48) as pool:
            responses = list(pool.map(lambda client: client.get("/"), clients))
    finally:
        for client in clients:
            client.close()
    statuses = http.statuses(responses)
    assert statuses.count(200) == 20, [str(r) for r in responses]
    assert statuses.count(429) == 28, [str(r) for r in responses]
    assert sidecar.decisions() == 48
    assert sidecar.metric("tollgate_errors_total") == 0
    calls = envoy.stats(r"^cluster\.tollgate_sidecar\.upstream_rq_total$")["cluster.tollgate_sidecar.upstream_rq_total"]
    assert 1 <= calls < 48, f"{calls} calls to the sidecar for 48 checks at once: batches expected"


def test_queued_checks_never_wait_past_the_timeout(start_envoy):
    # A silent sidecar and eight requests at once on one worker, each with its own call: each
    # request gets its 503 once ITS timeout_ms is up, never later.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        cfg = policy.config(
            policy.rule("s", "fixed_window", 100, "1h", scope="strict"),
            sidecar=sidecar_config(timeout_ms=500),
            failure_mode="closed",
        )
        envoy = start_envoy(config.tollgate(cfg, sidecar_port=silent.getsockname()[1]))

        def timed(_):
            started = time.monotonic()
            resp = envoy.get("/")
            return resp.status, time.monotonic() - started

        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(timed, range(8)))
    assert [status for status, _ in results] == [503] * 8, results
    # Twice the timeout would be 1.0 s.
    assert max(elapsed for _, elapsed in results) < 0.85, results
