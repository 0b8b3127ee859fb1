"""`global` rules: each node decides locally and syncs its admissions with the sidecar every
sync_interval_ms; several Envoys hold one limit together, within rate × interval × nodes; with the
sidecar gone each node keeps to its share, and the outage's admissions reach the sidecar once it is
back."""

from __future__ import annotations

import threading
import time

import pytest

from harness import config, http, policy
from harness.redis import unique_name
from harness.sidecar import SidecarProcess, free_port
from harness.wait import until

KEY = {"x-api-key": "key-pro-0001"}


def global_config(rule: dict, **sidecar) -> dict:
    return policy.config(
        rule,
        tenants=policy.TENANTS,
        failure_mode="open",
        sidecar={"cluster": "tollgate_sidecar", "authority": "tollgate-sidecar", "timeout_ms": 200,
                 "sync_interval_ms": 200, **sidecar},
    )


def paced_by_node(envoys, per_node_rate: float, seconds: float) -> list[list[int]]:
    """Requests for the tenant at `per_node_rate`/s on every node for `seconds` (bounded): each
    node's statuses."""
    by_node: list[list[int]] = [[] for _ in envoys]

    def node(envoy, statuses: list[int]) -> None:
        client = envoy.client()
        start = time.monotonic()
        count = int(per_node_rate * seconds)
        for i in range(count):
            delay = start + i / per_node_rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # pacing the load, not waiting for a state
            statuses.append(client.get("/", KEY).status)

    threads = [threading.Thread(target=node, args=(e, s)) for e, s in zip(envoys, by_node)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 60)
    return by_node


def paced(envoys, per_node_rate: float, seconds: float) -> list[int]:
    """As `paced_by_node`, every node's statuses together."""
    return [status for statuses in paced_by_node(envoys, per_node_rate, seconds) for status in statuses]


def sync_failures(envoy) -> int:
    return envoy.tollgate_counter("sync", "failures")


def wait_until_stale(envoy, failures_before: int = 0) -> None:
    """Polls the node's failed syncs until its sidecar has been silent past stale_after (three
    intervals and a timeout, 800 ms here): a sync is tried every 200 ms, one at a time, so six
    failures since the last answered sync span more than four intervals after it."""
    want = failures_before + 6
    envoy.wait_tollgate_counter("sync", "failures", want, timeout=15)


@pytest.fixture(params=["memory", "redis"])
def global_sidecar(request, start_sidecar) -> SidecarProcess:
    """One sidecar for every node: in-process counters, or counters in a real Redis."""
    if request.param == "memory":
        return start_sidecar()
    return start_sidecar(redis_url=request.getfixturevalue("redis_server").url)


def test_three_nodes_hold_one_global_limit(start_envoy, global_sidecar):
    # 600 a minute for the tenant across three Envoys, loaded at 3 × 20 req/s for 14 s (840
    # requests): the nodes together admit the limit and overshoot by at most what the other nodes
    # admit in one sync interval (3 nodes × 20/s × 0.2 s ≈ 12; the issue allows 5 %, 30).
    name = unique_name("per-tenant")  # an external Redis may hold an earlier run's bucket
    rule = policy.rule(name, "sliding_window_log", 600, "1m", key=["tenant"], scope="global")
    bootstrap = config.tollgate(global_config(rule), sidecar_port=global_sidecar.port)
    envoys = [start_envoy(bootstrap, name=f"node{i}") for i in range(3)]
    statuses = paced(envoys, 20, 14)
    admitted = statuses.count(200)
    assert len(statuses) == 840
    assert statuses.count(200) + statuses.count(429) == 840, statuses
    assert 600 <= admitted <= 630, admitted
    for envoy in envoys:
        envoy.wait_tollgate_counter("sync", "batches", 1)
        assert envoy.tollgate_counter("sync", "dropped") == 0
    # Every admission reached the sidecar exactly once (hits beyond the limit are counted too).
    until(lambda: metric(global_sidecar, "tollgate_sync_hits_total"), lambda v: v >= admitted, 10, "all hits synced")
    assert metric(global_sidecar, "tollgate_sync_hits_total") == admitted


def test_without_the_sidecar_each_node_keeps_to_its_share(start_envoy):
    # The sidecar never answers: after three intervals and a timeout the node limits the rule to
    # limit / nodes (configured: 3), instead of giving every node the whole limit.
    rule = policy.rule("per-tenant", "fixed_window", 30, "1h", key=["tenant"], scope="global")
    envoy = start_envoy(config.tollgate(global_config(rule, nodes=3), sidecar_port=free_port()))
    wait_until_stale(envoy)
    statuses = http.statuses(http.burst(envoy.port, 30, headers=KEY))
    assert statuses == [200] * 10 + [429] * 20, statuses
    refused = http.get(envoy.port, "/", KEY)
    assert refused.header("ratelimit-limit") == "10", refused


def test_sync_resumes_and_keeps_the_outage_admissions(start_envoy, tmp_path):
    # Admissions while the sidecar is gone are kept and delivered once when it comes back; then
    # the node has the whole limit again, less what it admitted.
    port = free_port()
    rule = policy.rule("per-tenant", "fixed_window", 30, "1h", key=["tenant"], scope="global")
    envoy = start_envoy(config.tollgate(global_config(rule, nodes=3), sidecar_port=port))
    wait_until_stale(envoy)
    assert http.statuses(http.burst(envoy.port, 12, headers=KEY)) == [200] * 10 + [429] * 2
    workdir = tmp_path / "late-sidecar"
    workdir.mkdir()
    late = SidecarProcess(workdir)
    late.port = port
    try:
        late.start()
        until(lambda: metric(late, "tollgate_sync_hits_total"), lambda v: v >= 10, 15, "outage hits delivered")
        # Three more answered syncs: the retried batch must not count twice.
        envoy.wait_tollgate_counter("sync", "batches", envoy.tollgate_counter("sync", "batches") + 3)
        assert metric(late, "tollgate_sync_hits_total") == 10
        statuses = http.statuses(http.burst(envoy.port, 25, headers=KEY))
        assert statuses.count(200) == 20, statuses
    finally:
        late.stop()


def test_sidecar_killed_under_global_load(start_envoy, start_sidecar, redis_server):
    # kill -9 the sidecar while three nodes serve a global rule: they keep serving (200/429 only,
    # no Envoy dies), each node keeps to its share meanwhile (90 / 3 nodes = 30, counting what it
    # admitted before the outage), and after a restart on the same port the batches held during
    # the outage arrive (Redis keeps the bucket): the tenant's total over the whole run stays
    # within the limit plus one interval's overshoot per node.
    sidecar = start_sidecar(redis_url=redis_server.url)
    name = unique_name("per-tenant")
    rule = policy.rule(name, "fixed_window", 90, "1h", key=["tenant"], scope="global")
    bootstrap = config.tollgate(global_config(rule, nodes=3), sidecar_port=sidecar.port)
    envoys = [start_envoy(bootstrap, name=f"node{i}") for i in range(3)]
    before = paced_by_node(envoys, 10, 2)  # 20 requests a node, 60 in all: within the limit
    assert before == [[200] * 20] * 3, before
    failures = [sync_failures(envoy) for envoy in envoys]
    sidecar.kill9()
    for envoy, failed in zip(envoys, failures):
        wait_until_stale(envoy, failed)
    during = paced_by_node(envoys, 10, 2)
    for node, statuses in enumerate(during):
        assert set(statuses) <= {200, 429}, (node, statuses)
        # The node's share of the limit holds its admissions before the outage and during it.
        assert before[node].count(200) + statuses.count(200) <= 90 // 3, (node, statuses)
    for envoy in envoys:
        assert envoy.proc.poll() is None
    admitted_during = sum(statuses.count(200) for statuses in during)
    batches = [envoy.tollgate_counter("sync", "batches") for envoy in envoys]
    sidecar.restart()
    # Every node's held batch answered (it goes before anything newer), so the outage's
    # admissions are in the sidecar's count before more load comes.
    for envoy, answered in zip(envoys, batches):
        envoy.wait_tollgate_counter("sync", "batches", answered + 1, timeout=15)
    until(lambda: metric(sidecar, "tollgate_sync_hits_total"), lambda v: v >= admitted_during, 15,
          "outage hits delivered")
    after = paced(envoys, 10, 3)
    admitted = before_total(before) + admitted_during + after.count(200)
    assert 90 <= admitted <= 90 + 3 * 2, (admitted, admitted_during, after.count(200))


def before_total(by_node: list[list[int]]) -> int:
    return sum(statuses.count(200) for statuses in by_node)


def metric(sidecar: SidecarProcess, name: str) -> float:
    total = 0.0
    for line in sidecar.metrics().splitlines():
        if line.startswith(name) and (len(line) == len(name) or line[len(name)] in " {"):
            total += float(line.rsplit(" ", 1)[1])
    return total
