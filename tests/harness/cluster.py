"""Several Envoys (the "nodes") with one filter configuration, and load spread over them.

Every node gets the byte-identical filter configuration: the filter seeds its bucket keys
from the configuration bytes, so two nodes whose JSON differed by one space would count the
same tenant in different buckets. Each node has its own ports (Envoy binds port 0) and its
own `--base-id`; the `tollgate_sidecar` cluster of node i points at `sidecar_ports[i]`.

Load is bounded twice: at most `max_requests` requests and at most `max_seconds`, whichever
comes first; request i goes to node i mod N (round robin) from any of `threads` threads, each
with a keep-alive connection per node.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from . import config, http
from .envoy import Envoy

StartEnvoy = Callable[..., Envoy]


@dataclass
class Shot:
    """One request of a load run: which node, what came back (status 0: no HTTP answer)."""

    index: int
    node: int
    status: int
    body: bytes
    sent_at: float
    done_at: float
    error: str = ""

    def json(self):
        return json.loads(self.body)

    def __str__(self) -> str:
        what = self.error or self.body[:200].decode(errors="replace")
        return f"#{self.index} node{self.node} {self.status} {what}"


def live(envoy: Envoy) -> bool:
    """The Envoy process still runs and its admin's /ready answers LIVE."""
    if envoy.proc is None or envoy.proc.poll() is not None:
        return False
    try:
        return envoy.admin("/ready").strip() == "LIVE"
    except OSError:  # URLError and HTTPError (503 while not live) are OSErrors
        return False


class Cluster:
    """N running Envoys sharing one filter configuration text."""

    def __init__(self, envoys: Sequence[Envoy], filter_json: str):
        self.envoys = list(envoys)
        self.filter_json = filter_json

    def __len__(self) -> int:
        return len(self.envoys)

    def alive(self) -> list[bool]:
        """Per node: the process runs and its admin /ready still says LIVE."""
        return [live(envoy) for envoy in self.envoys]

    def get(self, node: int, path: str = "/", headers: Mapping[str, str] | None = None) -> http.Response:
        return self.envoys[node % len(self.envoys)].get(path, headers)

    def counter(self, rule: str, kind: str) -> int:
        """`tollgate.<rule>.<kind>` summed over every node."""
        return sum(envoy.tollgate_counter(rule, kind) for envoy in self.envoys)

    def spread(
        self,
        count: int,
        *,
        headers: Mapping[str, str] | None = None,
        path: str = "/",
        threads: int = 6,
        max_seconds: float = 60.0,
    ) -> list[Shot]:
        """`count` requests round-robin over the nodes from `threads` threads; all of them, in order.

        Fails if they do not all complete within `max_seconds`.
        """
        load = Load(self, headers=headers, path=path, threads=threads, max_requests=count, max_seconds=max_seconds)
        shots = load.start().join()
        assert len(shots) == count, f"only {len(shots)} of {count} requests completed within {max_seconds:.0f}s"
        return shots


class Load:
    """Background load over a `Cluster`: `start()`, watch `shots()`, `stop()` → every `Shot` in index order."""

    def __init__(
        self,
        cluster: Cluster,
        *,
        headers: Mapping[str, str] | None = None,
        path: str = "/",
        threads: int = 4,
        max_requests: int = 300,
        max_seconds: float = 60.0,
        pause: float = 0.0,
    ):
        self.cluster = cluster
        self.headers = dict(headers or {})
        self.path = path
        self.threads = threads
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.pause = pause  # between one thread's requests, to stretch a bounded count over time
        self._next = itertools.count()
        self._lock = threading.Lock()
        self._shots: list[Shot] = []
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        self._deadline = 0.0

    def start(self) -> "Load":
        self._deadline = time.monotonic() + self.max_seconds
        self._workers = [threading.Thread(target=self._run, daemon=True) for _ in range(self.threads)]
        for worker in self._workers:
            worker.start()
        return self

    def _take(self) -> int | None:
        with self._lock:
            if self._stop.is_set() or time.monotonic() >= self._deadline:
                return None
            index = next(self._next)
            return index if index < self.max_requests else None

    def _run(self) -> None:
        clients: dict[int, http.Client] = {}
        try:
            while (index := self._take()) is not None:
                node = index % len(self.cluster)
                client = clients.get(node) or clients.setdefault(node, self.cluster.envoys[node].client())
                sent_at = time.monotonic()
                try:
                    resp = client.get(self.path, self.headers)
                    shot = Shot(index, node, resp.status, resp.body, resp.sent_at, resp.done_at)
                except Exception as e:  # noqa: BLE001 - OSError, http.client's errors: recorded, asserted on
                    client.close()
                    clients.pop(node, None)
                    shot = Shot(index, node, 0, b"", sent_at, time.monotonic(), f"{type(e).__name__}: {e}")
                with self._lock:
                    self._shots.append(shot)
                if self.pause:
                    self._stop.wait(self.pause)
        finally:
            for client in clients.values():
                client.close()

    def shots(self) -> list[Shot]:
        """A snapshot of what has completed so far."""
        with self._lock:
            return list(self._shots)

    def wait_for(self, ok: Callable[[list[Shot]], bool], timeout: float, what: str) -> list[Shot]:
        """Poll the completed shots until `ok(shots)`; fails if the load ends or time runs out first."""
        deadline = time.monotonic() + timeout
        while True:
            shots = self.shots()
            if ok(shots):
                return shots
            if not any(w.is_alive() for w in self._workers):
                raise AssertionError(f"load ended ({len(shots)} requests) before {what}")
            if time.monotonic() >= deadline:
                raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; {len(shots)} requests so far")
            time.sleep(0.02)

    def stop(self) -> list[Shot]:
        self._stop.set()
        return self.join()

    def join(self) -> list[Shot]:
        """Wait for every thread (each ends at its count, the deadline or `stop`); the shots by index."""
        for worker in self._workers:
            worker.join(timeout=self.max_seconds + 30)
        assert not any(w.is_alive() for w in self._workers), "load threads did not finish"
        return sorted(self.shots(), key=lambda s: s.index)


def start_cluster(
    start_envoy: StartEnvoy,
    filter_config: dict,
    *,
    nodes: int = 3,
    sidecar_ports: Sequence[int],
    concurrency: int = 1,
) -> Cluster:
    """`nodes` Envoys with one filter configuration text; node i's sidecar at `sidecar_ports[i % len]`."""
    assert sidecar_ports, "at least one sidecar port"
    filter_json = json.dumps(filter_config, sort_keys=True, separators=(",", ":"))
    envoys = [
        start_envoy(
            config.tollgate(filter_json, sidecar_port=sidecar_ports[i % len(sidecar_ports)]),
            concurrency=concurrency,
            name=f"node{i}",
        )
        for i in range(nodes)
    ]
    return Cluster(envoys, filter_json)
