"""Burst shapes against several Envoys: every node fired at as fast as keep-alive connections
allow, for the `global` allocation's end-to-end test (tests/test_global_bursts.py) and part 5
of the sidecar bench (bench/sidecar/bursts.py).

Every load is bounded in count and in time. Results are `Hit`s: which node, the status and
when it came back (monotonic seconds).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Mapping, Sequence

from .envoy import Envoy
from .wait import until


@dataclass(frozen=True)
class Hit:
    node: int
    status: int
    done_at: float


def fire(
    envoys: Sequence[Envoy],
    counts: Sequence[int],
    headers: Mapping[str, str],
    *,
    connections: int = 4,
    max_seconds: float = 60.0,
) -> list[Hit]:
    """`counts[i]` requests at node i, all nodes at once, each over `connections` keep-alive
    connections as fast as they answer (Envoy spreads connections over its workers)."""
    hits: list[Hit] = []
    lock = threading.Lock()
    start = threading.Barrier(sum(connections for c in counts if c) or 1)
    deadline = time.monotonic() + max_seconds

    def run(node: int, left: list[int]) -> None:
        client = envoys[node].client()
        try:
            start.wait(timeout=30)
            while time.monotonic() < deadline:
                with lock:
                    if left[0] <= 0:
                        return
                    left[0] -= 1
                status = client.get("/", headers).status
                with lock:
                    hits.append(Hit(node, status, time.monotonic()))
        finally:
            client.close()

    threads = []
    for node, count in enumerate(counts):
        if count:
            left = [count]
            threads += [threading.Thread(target=run, args=(node, left)) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max_seconds + 30)
    assert not any(t.is_alive() for t in threads), "burst threads did not finish"
    return hits


def paced(envoy: Envoy, node: int, rate: float, seconds: float, headers: Mapping[str, str]) -> list[Hit]:
    """`rate` requests a second at one node for `seconds` (bounded), on one connection."""
    hits: list[Hit] = []
    client = envoy.client()
    try:
        begin = time.monotonic()
        for i in range(int(rate * seconds)):
            delay = begin + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            hits.append(Hit(node, client.get("/", headers).status, time.monotonic()))
    finally:
        client.close()
    return hits


def sidecar_nodes(metrics_text: str) -> float:
    """The sidecar's `tollgate_nodes` gauge."""
    for line in metrics_text.splitlines():
        if line.startswith("tollgate_nodes "):
            return float(line.split()[1])
    return 0.0


def wait_synced(metrics, envoys: Sequence[Envoy], timeout: float = 20.0) -> None:
    """Until the sidecar (`metrics()`: its Prometheus text) counts every node and every node's
    workers have had answers since (so they know the node count their starter shares use)."""
    until(lambda: sidecar_nodes(metrics()), lambda n: n >= len(envoys), timeout, f"{len(envoys)} nodes synced")
    marks = [envoy.tollgate_counter("sync", "batches") for envoy in envoys]
    for envoy, mark in zip(envoys, marks):
        # Flushed once a second; two more batches per worker is past any answer before the mark.
        envoy.wait_tollgate_counter("sync", "batches", mark + 8, timeout)
