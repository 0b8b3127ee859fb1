"""Usage survives what used to lose it, end to end with a real Envoy: Redis restarted (no
persistence) between ingestion and the flush, the in-memory default killed -9 mid-traffic, and
a usage log too small for the traffic (batches refused, then resent by the filter). Each ends
with api_usage_daily holding every request sent, equal to Envoy's own downstream counters."""

from __future__ import annotations

import sqlite3
import subprocess
import threading
import time
from pathlib import Path

from harness import config, policy
from harness.sidecar import SidecarProcess, sidecar_bin
from harness.wait import until

FREE = {"x-api-key": "key-free-0001"}  # t-free
ROUTES = [config.direct("/api/reports", 200, "r" * 100), config.direct("/", 200, "ok")]


def usage_config() -> dict:
    return policy.config(
        policy.rule("per-tenant", "fixed_window", 100000, "1h", key=["tenant"]),
        tenants=policy.TENANTS,
        sidecar={"cluster": "tollgate_sidecar", "authority": "tollgate-sidecar", "timeout_ms": 1000,
                 "sync_interval_ms": 200},
        usage={"interval_ms": 200},
    )


def total(db: Path) -> int:
    try:
        with sqlite3.connect(db) as conn:
            return conn.execute("SELECT COALESCE(SUM(requests), 0) FROM api_usage_daily").fetchone()[0]
    except sqlite3.Error:
        return 0


def envoy_requests(envoy) -> int:
    return sum(envoy.stats(r"^http\.ingress\.downstream_rq_[2345]xx$").values())


def send(client, n: int, path: str) -> int:
    for _ in range(n):
        assert client.get(path, FREE).status == 200
    return n


def settled(db: Path, sent: int, flush=lambda: None) -> None:
    """Polls until `sent` requests are in, then keeps looking for 2 s: never more."""
    def counted() -> int:
        flush()
        return total(db)

    until(counted, lambda n: n >= sent, 60, f"{sent} requests flushed")
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:  # more batches, resends and flushes: still exactly once
        assert counted() == sent
        time.sleep(0.25)


def delivered(sidecar: SidecarProcess) -> None:
    """Waits until the filter's batches stop arriving (unchanged for 1 s, five batch intervals):
    every request sent so far is acknowledged."""
    applied = lambda: sidecar.metric("tollgate_usage_batches_total", outcome="applied")  # noqa: E731
    seen = {"value": -1.0, "since": time.monotonic()}

    def quiet() -> bool:
        now, value = time.monotonic(), applied()
        if value != seen["value"]:
            seen.update(value=value, since=now)
        return value > 0 and now - seen["since"] >= 1.0

    until(quiet, bool, 20, "usage batches delivered")


def test_a_redis_restart_between_ingestion_and_flush_loses_nothing(start_envoy, own_redis_server, tmp_path):
    # The scenario: Redis as installed (no persistence), 50 requests, Redis restarted,
    # 7 more, `tollgate-sidecar flush`. Without the usage log: 7 of 57.
    workdir = tmp_path / "sidecar"
    db = workdir / "usage.db"
    env = {"TOLLGATE_FLUSH_INTERVAL": "1h", "TOLLGATE_DATABASE_URL": f"sqlite://{db}?mode=rwc"}
    sidecar = SidecarProcess(workdir, redis_url=own_redis_server.url, env=env).start()
    try:
        envoy = start_envoy(config.tollgate(usage_config(), routes=ROUTES, sidecar_port=sidecar.port))
        client = envoy.client()
        sent = send(client, 50, "/api/reports/a")
        delivered(sidecar)  # in Redis, acknowledged, dropped by the filter
        own_redis_server.restart()
        sent += send(client, 7, "/api/reports/b")
        until(lambda: sidecar.metric("tollgate_usage_log_replays_total"), lambda n: n >= 2, 30,
              "the usage log replayed after the Redis restart")

        def cli_flush() -> None:
            subprocess.run([str(sidecar_bin()), "flush"], cwd=workdir, check=True, timeout=30,
                           env={"TOLLGATE_REDIS_URL": own_redis_server.url, "TOLLGATE_DATABASE_URL": f"sqlite://{db}"},
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        settled(db, sent, cli_flush)
        assert envoy_requests(envoy) == sent
        assert envoy.tollgate_counter("usage", "dropped") == 0
        assert sidecar.metric("tollgate_usage_log_replayed_records_total") >= 1
    finally:
        sidecar.stop()


def test_the_in_memory_default_killed_mid_traffic_loses_nothing(start_envoy, tmp_path):
    # No Redis: aggregates in the sidecar's memory, not flushed before the crash. kill -9 in
    # the middle of traffic, back on the same port: the log replays what was acknowledged,
    # the filter resends what was not; then 5 more and SIGTERM, which flushes.
    workdir = tmp_path / "sidecar"
    sidecar = SidecarProcess(workdir, env={"TOLLGATE_FLUSH_INTERVAL": "1h"}).start()
    try:
        envoy = start_envoy(config.tollgate(usage_config(), routes=ROUTES, sidecar_port=sidecar.port))
        client = envoy.client()
        sent = 0
        stop = threading.Event()
        errors: list[BaseException] = []

        def traffic() -> None:
            nonlocal sent
            try:
                deadline = time.monotonic() + 30
                while not stop.is_set() and time.monotonic() < deadline:
                    sent += send(client, 1, "/api/reports/a")
                    time.sleep(0.01)
            except BaseException as e:  # noqa: BLE001 (reported by the main thread)
                errors.append(e)

        worker = threading.Thread(target=traffic)
        worker.start()
        until(lambda: sidecar.metric("tollgate_usage_batches_total", outcome="applied"), lambda n: n >= 3, 20,
              "usage batches applied")
        sidecar.kill9()
        until(lambda: sent, lambda n: n >= 80, 20, "traffic while the sidecar is gone")
        sidecar.start()
        # What the dead sidecar had acknowledged came back from its log, not from the filter.
        assert sidecar.metric("tollgate_usage_log_replayed_records_total") > 0
        stop.set()
        worker.join(10)
        assert not errors, errors
        sent += send(client, 5, "/api/reports/b")
        delivered(sidecar)
        sidecar.stop()  # SIGTERM: flushes
        assert total(workdir / "tollgate.db") == sent
        assert envoy_requests(envoy) == sent
        assert envoy.tollgate_counter("usage", "dropped") == 0
    finally:
        sidecar.stop()


def test_a_full_usage_log_refuses_batches_and_the_resend_delivers_them(start_envoy, tmp_path):
    # A 4 KiB bound: the log fills between flushes, batches are refused (503), the filter keeps
    # them, and once a flush frees the log they get in — once. A batch of one record is about
    # 100 bytes in the log, five a second per worker: 20 s between flushes fill it.
    workdir = tmp_path / "sidecar"
    env = {"TOLLGATE_FLUSH_INTERVAL": "20s", "TOLLGATE_USAGE_LOG_MAX_BYTES": "4096"}
    sidecar = SidecarProcess(workdir, env=env).start()
    try:
        envoy = start_envoy(config.tollgate(usage_config(), routes=ROUTES, sidecar_port=sidecar.port))
        client = envoy.client()
        sent = 0
        deadline = time.monotonic() + 30
        refused = lambda: sidecar.metric("tollgate_errors_total", kind="usage_log_unavailable")  # noqa: E731
        while time.monotonic() < deadline and not refused():
            for n in range(20):
                sent += send(client, 1, f"/api/reports/{n}")
            time.sleep(0.05)
        assert refused() > 0, "the log never filled"
        assert 0 < sidecar.metric("tollgate_usage_log_bytes") <= 4096 + 1024  # + the flush's own frames
        settled(workdir / "tollgate.db", sent)
        assert envoy_requests(envoy) == sent
        assert envoy.tollgate_counter("usage", "dropped") == 0
    finally:
        sidecar.stop()
