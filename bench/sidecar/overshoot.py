"""Part 4 of `bench/sidecar`: how far `global` rules overshoot their limit across nodes.

For each node count N and sync interval I: a fresh in-memory sidecar, N Envoys (one worker
each, the nodes) with one `global` rule (default `sliding_window_log` 600 a minute) on one
tenant, synced every I ms, and an open-loop load of a fixed rate dealt round-robin over the
nodes for a bounded time shorter than the window. Every admission of the run falls in one
window, so admitted − limit is the overshoot (negative: the nodes refused below the limit).
The load must offer well over the limit (default 100 req/s × 12 s = 1,200 for 600) so that
the limit is reached mid-run, while syncs are in flight.
"""

import time

from bench.common.measure import BenchError
from bench.sidecar import configs as sidecar_configs
from bench.sidecar import load as sidecar_load


def measure(opts, nodes, interval_ms, services, log):
    sidecar = services.start_sidecar(f"overshoot-{nodes}-{interval_ms}")
    config = sidecar_configs.overshoot_rule(interval_ms, opts.overshoot_algorithm, opts.overshoot_limit,
                                            opts.overshoot_window)
    envoys = [services.spawn_envoy(f"overshoot-{nodes}-{interval_ms}-{i}",
                                   sidecar_configs.bootstrap(config, opts.tollgate_wasm, sidecar.port))
              for i in range(nodes)]
    for envoy in envoys:
        envoy.wait_ready(60)  # no probe request: it would take one of the limit's permits
    headers = {sidecar_configs.API_KEY_HEADER: sidecar_configs.BENCH_KEY}
    began = time.monotonic()
    counts = sidecar_load.paced([e.port for e in envoys], opts.overshoot_rate, opts.overshoot_seconds,
                                "/", headers)
    seconds = time.monotonic() - began
    for process in envoys + [sidecar]:
        process.stop()
    admitted = sum(c.get(200, 0) for c in counts)
    refused = sum(c.get(429, 0) for c in counts)
    other = {k: v for c in counts for k, v in c.items() if k not in (200, 429)}
    if other:
        raise BenchError(f"overshoot {nodes} nodes, {interval_ms} ms: unexpected answers {other}")
    limit = opts.overshoot_limit
    r = {"nodes": nodes, "interval_ms": interval_ms, "offered": admitted + refused, "admitted": admitted,
         "per_node": [c.get(200, 0) for c in counts], "seconds": seconds, "overshoot": admitted - limit,
         "overshoot_pct": (admitted - limit) / limit * 100}
    log(f"part 4 {nodes} node(s), sync {interval_ms} ms: {admitted} admitted of {r['offered']} "
        f"in {seconds:.1f} s (per node {r['per_node']}), overshoot {r['overshoot']:+d} = {r['overshoot_pct']:+.1f}% of {limit}")
    return r


def run_part(opts, services, log):
    offered = opts.overshoot_rate * opts.overshoot_seconds
    if offered <= opts.overshoot_limit:
        log(f"part 4: WARNING: {offered:.0f} requests offered for a limit of {opts.overshoot_limit}: "
            "the limit is never reached, so no overshoot can show")
    return [measure(opts, nodes, interval, services, log)
            for nodes in opts.nodes for interval in opts.intervals]
