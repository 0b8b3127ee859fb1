#!/usr/bin/env python3
"""How far `global` rules overshoot under bursts, and how fast one hot node gets its limit.

Three Envoys (two workers each) and one sidecar (counters in a throw-away Redis, or in
memory), one `global` rule of LIMIT an hour per tenant, synced every 200 ms. Four burst
shapes, each on its own tenant (a fresh bucket), each bounded in time and count:

- `one-node`:   all load on node 0, as fast as 4 keep-alive connections go, for 1.5 s;
- `even`:       the same on every node at once;
- `hot+trickle`: node 0 at full speed while nodes 1 and 2 send 5 req/s each, for 3 s;
- `fresh-key`:  32 connections per node released by one barrier, LIMIT requests per node.

For each: admitted against the limit, and `t95`, the time from the shape's first answer to
the answer that brought the tenant's admissions to 95 % of the limit (for `one-node` and
`hot+trickle` that is the hot node's climb). Every admission of a shape falls in one window.

    .venv/bin/python bench/bursts.py                       # fixed_window and token_bucket
    .venv/bin/python bench/bursts.py --wasm /path/to/older/tollgate_filter.wasm   # compare

Imports only the end-to-end harness (tests/harness) and the standard library.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from harness import config, paths  # noqa: E402
from harness.bursts import Hit, fire, paced, wait_synced  # noqa: E402
from harness.envoy import Envoy  # noqa: E402
from harness.redis import RedisServer  # noqa: E402
from harness.sidecar import SidecarProcess  # noqa: E402

SHAPES = ["one-node", "even", "hot+trickle", "fresh-key"]


def filter_config(algorithm: str, limit: int) -> dict:
    tenants = {f"key-{shape}": {"id": f"t-{shape}", "plan": "pro"} for shape in SHAPES}
    return {
        "tenants": tenants,
        "failure_mode": "open",
        "sidecar": {"cluster": "tollgate_sidecar", "authority": "tollgate-sidecar", "timeout_ms": 200,
                    "sync_interval_ms": 200},
        "rules": [{"name": f"bursts-{algorithm}", "key": ["tenant"], "algorithm": algorithm, "limit": limit,
                   "window": "1h", "scope": "global"}],
    }


def run_shape(shape: str, envoys: list[Envoy], limit: int) -> list[Hit]:
    headers = {"x-api-key": f"key-{shape}"}
    if shape == "one-node":
        return fire(envoys, [100_000, 0, 0], headers, max_seconds=1.5)
    if shape == "even":
        return fire(envoys, [100_000] * 3, headers, max_seconds=1.5)
    if shape == "fresh-key":
        return fire(envoys, [limit] * 3, headers, connections=32, max_seconds=10)
    trickles: list[list[Hit]] = [[], []]
    threads = [threading.Thread(target=lambda i=i: trickles[i].extend(paced(envoys[i + 1], i + 1, 5, 3.0, headers)))
               for i in range(2)]
    for thread in threads:
        thread.start()
    hot = fire(envoys, [100_000, 0, 0], headers, max_seconds=3.0)
    for thread in threads:
        thread.join(timeout=30)
    return hot + trickles[0] + trickles[1]


def summarize(shape: str, algorithm: str, hits: list[Hit], limit: int) -> dict:
    other = {h.status for h in hits} - {200, 429}
    if other:
        raise SystemExit(f"{shape}/{algorithm}: unexpected answers {sorted(other)}")
    first = min(h.done_at for h in hits)
    admitted = sorted(h.done_at for h in hits if h.status == 200)
    need = -(-limit * 95 // 100)
    t95 = admitted[need - 1] - first if len(admitted) >= need else None
    return {"shape": shape, "algorithm": algorithm, "requests": len(hits), "admitted": len(admitted),
            "limit": limit, "t95": t95, "per_node": [sum(1 for h in hits if h.node == n and h.status == 200)
                                                     for n in range(3)]}


def measure(algorithm: str, opts, workdir: Path, redis_url: str | None) -> list[dict]:
    sidecar = SidecarProcess(workdir / f"sidecar-{algorithm}", redis_url=redis_url)
    envoys: list[Envoy] = []
    try:
        sidecar.start()
        bootstrap = config.tollgate(filter_config(algorithm, opts.limit), wasm=opts.wasm, sidecar_port=sidecar.port)
        for i in range(3):
            envoys.append(Envoy(bootstrap, workdir / f"{algorithm}-node{i}", concurrency=2, name=f"node{i}").start())
        wait_synced(sidecar.metrics, envoys)
        results = []
        for shape in SHAPES:
            result = summarize(shape, algorithm, run_shape(shape, envoys, opts.limit), opts.limit)
            print(f"  {algorithm:13} {shape:12} {result['admitted']:5} admitted of {result['requests']:6} "
                  f"(per node {result['per_node']})", flush=True)
            results.append(result)
        return results
    finally:
        for envoy in envoys:
            envoy.stop()
        sidecar.stop()


def table(results: list[dict]) -> str:
    lines = ["| shape | algorithm | requests | admitted / limit | overshoot | t95 (s) |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    for r in results:
        over = (r["admitted"] - r["limit"]) / r["limit"] * 100
        t95 = f"{r['t95']:.2f}" if r["t95"] is not None else "never"
        lines.append(f"| {r['shape']} | {r['algorithm']} | {r['requests']} | {r['admitted']} / {r['limit']} "
                     f"| {over:+.1f} % | {t95} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--algorithms", default="fixed_window,token_bucket", help="comma-separated")
    parser.add_argument("--limit", type=int, default=300, help="per tenant per hour (300)")
    parser.add_argument("--store", choices=["redis", "memory"], default="redis", help="the sidecar's counters")
    parser.add_argument("--wasm", type=Path, default=paths.FILTER_WASM, help="the filter to measure")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tollgate-bursts-") as tmp:
        workdir = Path(tmp)
        redis = RedisServer.throw_away(workdir / "redis") if opts.store == "redis" else None
        try:
            results = []
            for algorithm in opts.algorithms.split(","):
                results += measure(algorithm, opts, workdir, redis.url if redis else None)
        finally:
            if redis:
                redis.stop()
    print()
    print(f"3 nodes × 2 workers, sync 200 ms, {opts.store} sidecar, filter {opts.wasm}")
    print(table(results))
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"\n({started})")


if __name__ == "__main__":
    main()
