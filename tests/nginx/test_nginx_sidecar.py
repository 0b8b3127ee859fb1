"""Tollgate on nginx with the real sidecar (target/debug/tollgate-sidecar), reached as host:port:
strict rules exact across both workers, global rules synced, usage counted once into
api_usage_daily (SQLite), and 1,000 concurrent strict requests answered without a reset."""

from __future__ import annotations

import asyncio
import datetime
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor

from harness import http, policy
from harness.sidecar import SidecarProcess, free_port
from harness.wait import until
from test_usage import rows  # api_usage_daily as the Envoy usage test reads it

FREE = {"X-Api-Key": "key-free-0001"}  # t-free
PRO = {"x-api-key": "key-pro-0001"}  # t-pro


def sidecar_config(port: int, **extra) -> dict:
    return {"cluster": f"127.0.0.1:{port}", "authority": "tollgate-sidecar", "timeout_ms": 1000, **extra}


def strict_config(port: int, limit: int, **sidecar) -> dict:
    return policy.config(policy.rule("s", "fixed_window", limit, "1h", scope="strict"),
                         sidecar=sidecar_config(port, **sidecar), failure_mode="closed")


def test_strict_admits_exactly_the_limit(start_nginx, demo_api, sidecar):
    nginx = start_nginx(strict_config(sidecar.port, 3), upstream_port=demo_api.port)
    responses = http.burst(nginx.port, 6, "/api/x")
    assert http.statuses(responses) == [200] * 3 + [429] * 3, [str(r) for r in responses]
    assert responses[-1].json()["rule"] == "s", responses[-1]
    assert sidecar.decisions() == 6


def test_strict_on_one_keep_alive_connection(start_nginx, demo_api, sidecar):
    # ngx_wasm_module resumes a request itself once its call is answered: the filter must not
    # resume it again (that re-ran the request's first step: a second check, "ResponseHeaders
    # returned PAUSE", and a dead worker after a few requests on one connection).
    nginx = start_nginx(strict_config(sidecar.port, 3), upstream_port=demo_api.port, workers=1)
    with nginx.client() as client:
        statuses = [client.get("/api/x").status for _ in range(12)]
    assert statuses == [200] * 3 + [429] * 9, statuses
    assert sidecar.decisions() == 12, "one check per request"
    assert nginx.worker_crashes() == []
    assert "local response expected" not in nginx.log()


def test_the_filter_counters_reach_the_sidecar_metrics(start_nginx, demo_api, sidecar):
    # nginx shows Proxy-Wasm metrics nowhere: each worker reports them to the sidecar.
    cfg = policy.config(policy.rule("per-ip", "fixed_window", 4, "1h"), sidecar=sidecar_config(sidecar.port))
    nginx = start_nginx(cfg, upstream_port=demo_api.port, workers=1)
    assert http.statuses(http.burst(nginx.port, 6, "/api/x")) == [200] * 4 + [429] * 2

    def reported(outcome: str) -> float:
        return sidecar.metric("tollgate_filter_decisions_total", rule="per-ip", outcome=outcome)

    until(lambda: (reported("allowed"), reported("refused")), lambda v: v == (4, 2), 25,
          "the filter's counters on the sidecar's /metrics")


def admitted_at_once(nginx, requests: int, threads: int) -> dict[int, int]:
    """`requests` fresh-connection GETs from `threads` threads at once: {status: count}."""
    with ThreadPoolExecutor(max_workers=threads) as pool:
        responses = list(pool.map(lambda _: nginx.get("/api/x"), range(requests)))
    found = http.statuses(responses)
    return {status: found.count(status) for status in set(found)}


def test_strict_is_exact_across_two_workers(start_nginx, demo_api, sidecar):
    nginx = start_nginx(strict_config(sidecar.port, 3), upstream_port=demo_api.port)
    assert admitted_at_once(nginx, 16, threads=8) == {200: 3, 429: 13}
    assert sidecar.decisions() == 16
    served = nginx.wait_served(16)
    assert len(served) == 2, f"both workers must serve: {served}"


def test_concurrent_strict_checks_stay_exact_on_one_worker(start_nginx, demo_api, sidecar):
    # One worker, 48 requests at once, each waiting for its own strict answer: every request
    # gets its own decision, and exactly the limit is admitted.
    nginx = start_nginx(strict_config(sidecar.port, 20), upstream_port=demo_api.port, workers=1)
    assert admitted_at_once(nginx, 48, threads=48) == {200: 20, 429: 28}
    assert sidecar.decisions() == 48


def test_sidecar_gone_fails_open_or_closed(start_nginx, demo_api):
    # Nothing listens on the sidecar's port: the check fails at once, and failure_mode decides.
    gone = free_port()
    opened = start_nginx({**strict_config(gone, 1), "failure_mode": "open"}, upstream_port=demo_api.port)
    assert [opened.get("/api/x").status for _ in range(3)] == [200, 200, 200]
    closed = start_nginx(strict_config(gone, 1), upstream_port=demo_api.port)
    resp = closed.get("/api/x")
    assert resp.status == 503, resp
    assert resp.json()["error"] == "rate_limit_unavailable", resp


def test_global_rule_syncs_with_the_sidecar(start_nginx, demo_api, sidecar):
    cfg = policy.config(
        policy.rule("g", "fixed_window", 20, "1h", key=["tenant"], scope="global"),
        tenants=policy.TENANTS,
        sidecar=sidecar_config(sidecar.port, sync_interval_ms=200),
    )
    nginx = start_nginx(cfg, upstream_port=demo_api.port)
    statuses = [nginx.get("/api/x", PRO).status for _ in range(30)]
    assert statuses.count(200) == 20 and statuses.count(429) == 10, statuses
    until(lambda: sidecar.metric("tollgate_sync_hits_total"), lambda v: v >= 20, 15, "20 hits synced")
    batches = sidecar.metric("tollgate_sync_batches_total")
    until(lambda: sidecar.metric("tollgate_sync_batches_total"), lambda v: v >= batches + 2, 15, "two more syncs")
    assert sidecar.metric("tollgate_sync_hits_total") == 20  # each admission synced once
    assert sidecar.metric("tollgate_errors_total") == 0


def usage_rows(db: str) -> dict[tuple[str, str], dict]:
    """api_usage_daily by (tenant, endpoint); empty until the sidecar created it."""
    try:
        return rows(db)
    except sqlite3.Error:
        return {}


def test_usage_is_counted_once_into_api_usage_daily(start_nginx, demo_api, tmp_path):
    workdir = tmp_path / "sidecar"
    sidecar = SidecarProcess(workdir, env={"TOLLGATE_FLUSH_INTERVAL": "1s"}).start()
    try:
        cfg = policy.config(
            policy.rule("per-tenant", "fixed_window", 1000, "1h", key=["tenant"]),
            policy.rule("reports", "fixed_window", 1000, "1h", key=["tenant"], match={"path_prefix": "/api/reports"}),
            tenants=policy.TENANTS,
            sidecar=sidecar_config(sidecar.port),
            usage={"interval_ms": 200},
        )
        nginx = start_nginx(cfg, upstream_port=demo_api.port)
        out: dict[tuple[str, str], int] = {}

        def send(tenant: str, endpoint: str, method: str, path: str, headers: dict, body: bytes | None, want: int):
            resp = nginx.request(method, path, headers, body)
            assert resp.status == want, resp
            out[(tenant, endpoint)] = out.get((tenant, endpoint), 0) + len(resp.body)

        for _ in range(5):
            send("t-free", "GET reports", "GET", "/api/reports/daily", FREE, None, 200)
        for _ in range(3):
            send("t-free", "POST *", "POST", "/api/items", FREE, b"x" * 50, 200)
        for _ in range(2):
            send("t-pro", "GET *", "GET", "/api/x?status=404", PRO, None, 404)
        send("t-pro", "GET *", "GET", "/api/x?status=503", PRO, None, 503)
        assert nginx.get("/api/anonymous").status == 200  # no tenant: not metered

        expected = {
            ("t-free", "GET reports"): dict(plan="free", requests=5, bytes_in=0, errors_4xx=0, errors_5xx=0),
            ("t-free", "POST *"): dict(plan="free", requests=3, bytes_in=150, errors_4xx=0, errors_5xx=0),
            ("t-pro", "GET *"): dict(plan="pro", requests=3, bytes_in=0, errors_4xx=2, errors_5xx=1),
        }
        db = str(workdir / "tollgate.db")
        until(lambda: usage_rows(db), lambda r: sum(v["requests"] for v in r.values()) >= 11, 20, "usage flushed")
        # Two more flush intervals (1 s) watched: nothing may be counted twice.
        watch_until = time.monotonic() + 2.5
        while time.monotonic() < watch_until:
            found = usage_rows(db)
            assert sum(v["requests"] for v in found.values()) == 11, found
            time.sleep(0.1)
        today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
        assert set(found) == set(expected), found
        for key, want in expected.items():
            got = {k: found[key][k] for k in want}
            assert got == want, (key, got, want)
            assert found[key]["bytes_out"] == out[key], (key, found[key], out[key])
            assert found[key]["date"] == today
    finally:
        sidecar.stop()


async def one_request(port: int, timeout: float) -> str:
    """One request on its own connection: the status line's code, or what went wrong."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), timeout)
        writer.write(b"GET /api/burst HTTP/1.1\r\nHost: tollgate\r\nConnection: close\r\n\r\n")
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout)
        writer.close()
    except (OSError, asyncio.TimeoutError) as e:
        return type(e).__name__
    line = data.split(b"\r\n", 1)[0].split()
    return line[1].decode() if len(line) >= 2 else f"no status line: {data[:80]!r}"


async def all_at_once(port: int, n: int, timeout: float) -> list[str]:
    return await asyncio.gather(*(one_request(port, timeout) for _ in range(n)))


def test_a_thousand_concurrent_strict_requests_get_an_answer(start_nginx, demo_api, sidecar):
    # 1,000 connections at once, each with one request that waits for the sidecar: every one
    # gets an HTTP answer (no reset, no timeout) and exactly the limit is admitted.
    nginx = start_nginx(strict_config(sidecar.port, 300, timeout_ms=10_000), upstream_port=demo_api.port)
    outcomes = asyncio.run(all_at_once(nginx.port, 1000, timeout=60))
    counts = {o: outcomes.count(o) for o in set(outcomes)}
    print(f"1,000 concurrent strict requests: {counts}; per worker {nginx.served_by()}; "
          f"sidecar decisions {sidecar.decisions()}")
    assert set(counts) <= {"200", "429"}, counts
    assert counts.get("200") == 300, counts
    assert sidecar.decisions() == 1000
