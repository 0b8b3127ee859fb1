"""`global` rules under bursts: between two syncs each worker spends only its allowance (its
share of the global remaining, granted by the sidecar in proportion to its demand), and a key
no node has synced yet starts from limit ÷ nodes, so bursts at full speed on every node stay
within the limit; a single hot node still gets nearly the whole limit within a second."""

from __future__ import annotations

import time

import pytest

from harness import config, policy
from harness.bursts import fire, wait_synced
from harness.redis import unique_name
from harness.sidecar import SidecarProcess

KEY = {"x-api-key": "key-pro-0001"}
LIMIT = 300


def bursts_config(name: str, algorithm: str) -> dict:
    rule = policy.rule(name, algorithm, LIMIT, "1h", key=["tenant"], scope="global")
    return policy.config(
        rule,
        tenants=policy.TENANTS,
        failure_mode="open",
        sidecar={"cluster": "tollgate_sidecar", "authority": "tollgate-sidecar", "timeout_ms": 200,
                 "sync_interval_ms": 200},
    )


def three_nodes(start_envoy, sidecar: SidecarProcess, algorithm: str):
    """Three Envoys of two workers each, synced with `sidecar` (they know there are three)."""
    bootstrap = config.tollgate(bursts_config(unique_name("per-tenant"), algorithm), sidecar_port=sidecar.port)
    envoys = [start_envoy(bootstrap, concurrency=2, name=f"node{i}") for i in range(3)]
    wait_synced(sidecar.metrics, envoys)
    return envoys


def synced_hits(sidecar: SidecarProcess) -> float:
    for line in sidecar.metrics().splitlines():
        if line.startswith("tollgate_sync_hits_total "):
            return float(line.split()[1])
    return 0.0


@pytest.mark.parametrize("algorithm", ["fixed_window", "token_bucket"])
def test_bursts_on_every_node_stay_within_the_limit(start_envoy, start_sidecar, redis_server, algorithm):
    # The scenario: 300 an hour for one tenant over three nodes; 300 requests at each
    # node at full speed, then three bursts of 60 per node half a second apart. Before, every
    # node could spend the whole limit between two syncs (856 admitted); now at most 5 % over.
    sidecar = start_sidecar(redis_url=redis_server.url)
    envoys = three_nodes(start_envoy, sidecar, algorithm)
    hits = fire(envoys, [300] * 3, KEY)
    for _ in range(3):
        time.sleep(0.5)  # the scenario's pause between bursts (load shape, not a wait)
        hits += fire(envoys, [60] * 3, KEY)
    statuses = [h.status for h in hits]
    assert len(statuses) == 3 * 300 + 3 * 3 * 60
    assert set(statuses) <= {200, 429}, sorted(set(statuses))
    admitted = statuses.count(200)
    assert LIMIT * 0.95 <= admitted <= LIMIT * 1.05, admitted
    # Both workers of every node served (the load reached every worker's allowance).
    for envoy in envoys:
        assert len(envoy.worker_connections()) == 2, envoy.worker_connections()
    # Every admission reached the sidecar exactly once.
    deadline = time.monotonic() + 10
    while synced_hits(sidecar) < admitted and time.monotonic() < deadline:
        time.sleep(0.05)
    assert synced_hits(sidecar) == admitted


def test_a_single_hot_node_gets_nearly_the_whole_limit_within_a_second(start_envoy, start_sidecar, redis_server):
    # All load on one node of three: it starts from a third of the limit (the others' thirds
    # stay reserved until they could have reported them, one interval and the timeout), then its
    # allowance grows to what the idle nodes leave: 95 % of the limit within a second.
    sidecar = start_sidecar(redis_url=redis_server.url)
    envoys = three_nodes(start_envoy, sidecar, "fixed_window")
    # As fast as four connections go, for 1.5 s (the count is only a bound).
    hits = fire(envoys, [50_000, 0, 0], KEY, max_seconds=1.5)
    admitted = sorted(h.done_at for h in hits if h.status == 200)
    assert LIMIT * 0.95 <= len(admitted) <= LIMIT, len(admitted)
    first = min(h.done_at for h in hits)
    took = admitted[int(LIMIT * 0.95) - 1] - first
    assert took <= 1.0, f"95 % of the limit took {took:.2f}s"
