"""The multi-node proof with real processes: three Envoys, one filter configuration, `strict`
rules decided by the sidecar on a real Redis (or its in-process store).

- exactness: load spread round robin over three nodes admits exactly the limit, for several
  algorithms and stores, and the sidecar's `tollgate_decisions_total` agrees;
- `kill -9` of the sidecar under load: `failure_mode` decides (open: 200s, closed: 503 with a
  JSON error), no Envoy crashes, and after a restart on the same port strict decisions resume
  by themselves — with Redis, permits admitted before the kill still count;
- a Redis restart under load: /readyz is 503 while Redis is down and 200 again by itself,
  strict checks succeed again without restarting the sidecar.

Every load is bounded in count and in time; every process is ours and stopped by PID.
"""

from __future__ import annotations

import time

import pytest

from harness import policy
from harness.cluster import Cluster, Load, Shot
from harness.redis import RedisServer, unique_name
from harness.sidecar import SidecarProcess
from harness.wait import clear_of_window_edge, until

NODES = 3
FREE = {"x-api-key": "key-free-0001"}  # the tenant whose counts the tests check exactly
BUSY = {"x-api-key": "key-pro-0001"}  # the tenant that keeps the nodes busy (a limit never reached)
BUSY_LIMIT = 10_000  # the most sliding_window_log accepts; more than any load here sends

# Generous for a debug sidecar on a loaded 2-core machine: an exactness test must never see a
# timeout turn into failure_mode. Kill/restart tests see refused connections, not timeouts.
SIDECAR_TIMEOUT_MS = 5_000


def sidecar_config(timeout_ms: int = SIDECAR_TIMEOUT_MS) -> dict:
    return {"cluster": "tollgate_sidecar", "authority": "tollgate-sidecar", "timeout_ms": timeout_ms, "sync_interval_ms": 200}


def strict_config(rule: dict, failure_mode: str, timeout_ms: int = SIDECAR_TIMEOUT_MS) -> dict:
    return policy.config(rule, tenants=policy.TENANTS, sidecar=sidecar_config(timeout_ms), failure_mode=failure_mode)


def tenant_rule(name: str, algorithm: str, free_limit: int, window: str = "1d") -> dict:
    """A strict per-tenant rule: `free_limit` for free tenants, far more for pro ones."""
    limit = {"plan": {"free": free_limit, "pro": BUSY_LIMIT}, "default": 1}
    return policy.rule(name, algorithm, limit, window, key=["tenant"], scope="strict")


def statuses(shots: list[Shot]) -> list[int]:
    return [s.status for s in shots]


def described(shots: list[Shot], limit: int = 40) -> str:
    return "\n".join(str(s) for s in shots[:limit])


def assert_unavailable(shot: Shot, rule: str) -> None:
    """A failure_mode closed answer: 503 with a JSON body naming the error and the rule."""
    assert shot.status == 503, shot
    body = shot.json()
    assert body["error"] == "rate_limit_unavailable", shot
    assert body["rule"] == rule, shot


def count_admitted(cluster: Cluster, n: int, headers: dict, rule: str) -> int:
    """`n` requests one after another, round robin; each is 200 or a 429 from `rule`. The 200s."""
    admitted = 0
    for i in range(n):
        resp = cluster.get(i, "/", headers)
        assert resp.status in (200, 429), resp
        if resp.status == 429:
            assert resp.json()["rule"] == rule, resp
        admitted += resp.status == 200
    return admitted


# -- stores -------------------------------------------------------------------------------------

# "redis": one sidecar on Redis; "memory": one sidecar with in-process counters;
# "redis-per-node": one sidecar per node, all on the same Redis (the deployment DESIGN.md draws).
STORES = ["redis", "memory", "redis-per-node"]


def start_sidecars(store: str, request: pytest.FixtureRequest, start_sidecar) -> list[SidecarProcess]:
    """The sidecars for `store`; Redis is asked for only when the store needs it (no skip otherwise)."""
    if store == "memory":
        return [start_sidecar()]
    redis: RedisServer = request.getfixturevalue("redis_server")
    count = NODES if store == "redis-per-node" else 1
    return [start_sidecar(redis_url=redis.url) for _ in range(count)]


def decisions(sidecars: list[SidecarProcess], rule: str, outcome: str) -> int:
    return sum(s.decisions(rule, outcome) for s in sidecars)


# -- exactness ----------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["fixed_window", "token_bucket", "sliding_window_log"])
@pytest.mark.parametrize("store", STORES)
def test_strict_is_exact_across_three_nodes(store, algorithm, request, start_sidecar, start_cluster):
    limit, total = 60, 150
    # A 1d window: the token bucket refills one permit every 24 minutes, the fixed window is
    # kept clear of its edge, the sliding log remembers every admission for the whole test.
    rule = unique_name(f"strict-{algorithm}")
    clear_of_window_edge(86_400)
    sidecars = start_sidecars(store, request, start_sidecar)
    cluster = start_cluster(
        strict_config(tenant_rule(rule, algorithm, limit), failure_mode="closed"),
        nodes=NODES,
        sidecar_ports=[s.port for s in sidecars],
    )

    shots = cluster.spread(total, headers=FREE, threads=6, max_seconds=90)

    codes = statuses(shots)
    assert codes.count(200) == limit, described([s for s in shots if s.status not in (200, 429)] or shots)
    assert codes.count(429) == total - limit, described([s for s in shots if s.status != 429][limit:] or shots)
    for shot in shots:
        if shot.status == 429:
            assert shot.json()["rule"] == rule, shot
    # Every node took part in admitting and in refusing.
    assert {s.node for s in shots if s.status == 200} == set(range(NODES))
    assert {s.node for s in shots if s.status == 429} == set(range(NODES))
    # The sidecars decided every one of them, and counted them the same way.
    assert decisions(sidecars, rule, "admitted") == limit
    assert decisions(sidecars, rule, "refused") == total - limit
    # So did the filters (their counters flush about once a second).
    until(
        lambda: (cluster.counter(rule, "allowed"), cluster.counter(rule, "refused")),
        lambda seen: seen == (limit, total - limit),
        20,
        f"tollgate.{rule}.allowed/refused summed over the nodes == ({limit}, {total - limit})",
    )


# -- the sidecar killed under load --------------------------------------------------------------


def wait_decided_again(cluster: Cluster, sidecar: SidecarProcess, timeout: float = 30.0) -> None:
    """Each node, by itself, sends its strict checks to the restarted sidecar: a request to it
    is decided there (the new process's decision counter grows) and answered 200."""
    for node in range(len(cluster)):

        def probe(node: int = node) -> tuple[int, int]:
            before = sidecar.decisions()
            status = cluster.get(node, "/", BUSY).status
            return status, sidecar.decisions() - before

        until(probe, lambda seen: seen == (200, 1), timeout, f"node{node}'s request decided by the restarted sidecar")


@pytest.mark.parametrize("failure_mode", ["open", "closed"])
@pytest.mark.parametrize("store", ["redis", "memory"])
def test_sidecar_killed_under_load(store, failure_mode, request, start_sidecar, start_cluster):
    limit, before_kill = 10, 6
    rule = unique_name("strict-kill")
    clear_of_window_edge(86_400)
    (sidecar,) = start_sidecars(store, request, start_sidecar)
    cluster = start_cluster(
        strict_config(tenant_rule(rule, "fixed_window", limit), failure_mode, timeout_ms=2_000),
        nodes=NODES,
        sidecar_ports=[sidecar.port],
    )
    # The free tenant takes some of its permits before the kill, and then keeps quiet.
    assert count_admitted(cluster, before_kill, FREE, rule) == before_kill
    assert sidecar.decisions(rule, "admitted") == before_kill

    load = Load(cluster, headers=BUSY, threads=4, max_requests=3_000, max_seconds=60, pause=0.01).start()
    try:
        load.wait_for(lambda shots: len(shots) >= 20, 30, "20 requests before the kill")
        kill_started = time.monotonic()
        sidecar.kill9()
        killed = time.monotonic()
        load.wait_for(lambda shots: sum(s.sent_at > killed for s in shots) >= 30, 30, "30 requests after the kill")
    finally:
        shots = load.stop()

    assert all(s.status != 0 for s in shots), described([s for s in shots if s.status == 0])
    before = [s for s in shots if s.done_at < kill_started]
    after = [s for s in shots if s.sent_at > killed]
    assert len(before) >= 20 and len(after) >= 30, (len(before), len(after))
    assert statuses(before) == [200] * len(before), described([s for s in before if s.status != 200])
    if failure_mode == "open":
        # Open: every request goes on, across the kill too.
        assert statuses(shots) == [200] * len(shots), described([s for s in shots if s.status != 200])
        until(
            lambda: cluster.counter(rule, "sidecar_failures"),
            lambda n: n >= len(after),
            20,
            f"tollgate.{rule}.sidecar_failures >= {len(after)}",
        )
    else:
        # Closed: 503 naming the error once the sidecar is gone; nothing but 200 and 503 around it.
        for shot in after:
            assert_unavailable(shot, rule)
        for shot in shots:
            if shot.status != 200:
                assert_unavailable(shot, rule)
    assert cluster.alive() == [True] * NODES, [e.log_tail() for e in cluster.envoys]

    sidecar.restart()  # the same port: the nodes' clusters point at it
    wait_decided_again(cluster, sidecar)

    # The limit is enforced again. With Redis, the permits taken before the kill still count;
    # the in-process store died with the process, so the tenant starts afresh.
    left = limit - before_kill if store == "redis" else limit
    assert count_admitted(cluster, limit + 2, FREE, rule) == left
    assert sidecar.decisions(rule, "admitted") == left + NODES  # one probe per node was admitted too
    assert sidecar.decisions(rule, "refused") == limit + 2 - left
    refused = cluster.get(0, "/", FREE)
    assert refused.status == 429 and refused.json()["rule"] == rule, refused
    assert cluster.alive() == [True] * NODES


# -- Redis restarted under load -----------------------------------------------------------------


def test_redis_restart_under_load(own_redis_server, start_sidecar, start_cluster):
    limit, before_restart = 10, 4
    rule = unique_name("strict-redis")
    clear_of_window_edge(86_400)
    redis = own_redis_server
    sidecar = start_sidecar(redis_url=redis.url)
    assert sidecar.ready() == 200
    cluster = start_cluster(
        strict_config(tenant_rule(rule, "fixed_window", limit), "closed", timeout_ms=3_000),
        nodes=NODES,
        sidecar_ports=[sidecar.port],
    )
    assert count_admitted(cluster, before_restart, FREE, rule) == before_restart
    sidecar_pid = sidecar.pid

    load = Load(cluster, headers=BUSY, threads=4, max_requests=5_000, max_seconds=90, pause=0.02).start()
    try:
        load.wait_for(lambda shots: len(shots) >= 20, 30, "20 requests before Redis stops")
        down_at = time.monotonic()
        redis.stop()
        until(sidecar.ready, lambda status: status == 503, 15, "/readyz 503 while Redis is down")
        not_ready = time.monotonic()
        load.wait_for(
            lambda shots: sum(s.sent_at > not_ready and s.status == 503 for s in shots) >= 10,
            30,
            "10 requests answered 503 while Redis is down",
        )
        redis.start()  # the same port, empty: it persisted nothing
        until(sidecar.ready, lambda status: status == 200, 30, "/readyz 200 again once Redis is back")
        ready_again = time.monotonic()
        load.wait_for(
            lambda shots: sum(s.sent_at > ready_again and s.status == 200 for s in shots) >= 20,
            30,
            "20 requests admitted after Redis came back",
        )
    finally:
        shots = load.stop()

    # The same sidecar process all along: it reconnected by itself.
    assert sidecar.running() and sidecar.pid == sidecar_pid and sidecar.starts == 1
    assert all(s.status != 0 for s in shots), described([s for s in shots if s.status == 0])
    before = [s for s in shots if s.done_at < down_at]
    assert statuses(before) == [200] * len(before), described([s for s in before if s.status != 200])
    for shot in shots:
        if shot.status != 200:
            assert_unavailable(shot, rule)
    # Once it answered again, strict checks kept succeeding.
    first_back = min(s.index for s in shots if s.sent_at > ready_again and s.status == 200)
    later = [s for s in shots if s.index > first_back and s.sent_at > ready_again]
    assert statuses(later) == [200] * len(later), described([s for s in later if s.status != 200])
    # Each 503 was the sidecar's own store_unavailable answer (it stayed up); /readyz's 503s count there too.
    unavailable = sum(s.status == 503 for s in shots)
    assert unavailable >= 10
    assert sidecar.metric("tollgate_errors_total", kind="store_unavailable") >= unavailable
    until(lambda: cluster.counter(rule, "sidecar_failures"), lambda n: n >= 10, 20, f"tollgate.{rule}.sidecar_failures >= 10")
    assert cluster.alive() == [True] * NODES

    # Redis came back empty (no persistence): the free tenant's earlier permits are forgotten
    # and it gets the whole limit again — exactly the limit, no more.
    assert count_admitted(cluster, limit + 2, FREE, rule) == limit
    assert sidecar.ready() == 200


# -- global rules -------------------------------------------------------------------------------
#
# Multi-node tests of `global` rules (three Envoys holding one limit through the sidecar, on
# Redis and in memory; the node share while the sidecar is gone; kill -9 under global load; the
# outage's admissions delivered once) are in test_global.py.
