"""Part 5 of `bench/sidecar`: `global` rules under bursts, and how fast one hot node gets its
limit.

Per algorithm (default `fixed_window` and `token_bucket`): one sidecar (counters in the bench's
Redis, or in memory with `--bursts-store memory`), three Envoys of two workers each (the
nodes), one `global` rule of `--bursts-limit` (300) an hour per tenant, synced every 200 ms.
Four burst shapes, each on its own tenant (a fresh bucket), each bounded in time and count:

- `one-node`:    all load on node 0, as fast as 4 keep-alive connections go, for 1.5 s;
- `even`:        the same on every node at once;
- `hot+trickle`: node 0 at full speed while nodes 1 and 2 send 5 req/s each, for 3 s;
- `fresh-key`:   32 connections per node released by one barrier, limit requests per node.

For each: admitted against the limit, and `t95`, the time from the shape's first answer to the
answer that brought the tenant's admissions to 95 % of the limit (for `one-node` and
`hot+trickle` the hot node's climb). Every admission of a shape falls in one window, so
admitted − limit is the overshoot. `--tollgate-wasm` measures another (e.g. an older) filter.
"""

import threading

from bench.common.measure import BenchError
from bench.sidecar import configs as sidecar_configs
from tests.harness.bursts import fire, paced, wait_synced

SHAPES = ["one-node", "even", "hot+trickle", "fresh-key"]
NODES = 3
WORKERS = 2  # per node: the allowances are per worker
# The targets (issue 14): every shape within 5 % of the limit, the hot node at 95 % in ≤ 1 s.
MAX_OVERSHOOT_PCT = 5.0
MAX_T95_S = 1.0


def run_shape(shape, envoys, limit):
    headers = {sidecar_configs.API_KEY_HEADER: f"key-{shape}"}
    if shape == "one-node":
        return fire(envoys, [100_000, 0, 0], headers, max_seconds=1.5)
    if shape == "even":
        return fire(envoys, [100_000] * NODES, headers, max_seconds=1.5)
    if shape == "fresh-key":
        return fire(envoys, [limit] * NODES, headers, connections=32, max_seconds=10)
    trickles = [[], []]
    threads = [threading.Thread(target=lambda i=i: trickles[i].extend(paced(envoys[i + 1], i + 1, 5, 3.0, headers)))
               for i in range(2)]
    for thread in threads:
        thread.start()
    hot = fire(envoys, [100_000, 0, 0], headers, max_seconds=3.0)
    for thread in threads:
        thread.join(timeout=30)
    return hot + trickles[0] + trickles[1]


def summarize(shape, algorithm, hits, limit):
    if not hits:
        raise BenchError(f"part 5 {shape}/{algorithm}: no answer")
    other = {h.status for h in hits} - {200, 429}
    if other:
        raise BenchError(f"part 5 {shape}/{algorithm}: unexpected answers {sorted(other)}")
    first = min(h.done_at for h in hits)
    admitted = sorted(h.done_at for h in hits if h.status == 200)
    need = -(-limit * 95 // 100)
    t95 = admitted[need - 1] - first if len(admitted) >= need else None
    return {"shape": shape, "algorithm": algorithm, "requests": len(hits), "admitted": len(admitted),
            "limit": limit, "t95": t95, "overshoot_pct": (len(admitted) - limit) / limit * 100,
            "per_node": [sum(1 for h in hits if h.node == n and h.status == 200) for n in range(NODES)]}


def measure(opts, algorithm, services, log):
    # A Redis of its own: the sidecar counts the nodes seen in the last 10 s, and the previous
    # algorithm's nodes, just stopped, would still count, shrinking every fresh bucket's
    # starter share (150 of 300 admitted in fresh-key; see BENCHMARKS.md).
    redis = services.fresh_redis(f"bursts-{algorithm}") if opts.bursts_store == "redis" else None
    sidecar = services.start_sidecar(f"bursts-{algorithm}", redis)
    bootstrap = sidecar_configs.bootstrap(sidecar_configs.bursts_rule(algorithm, opts.bursts_limit, SHAPES),
                                          opts.tollgate_wasm, sidecar.port)
    envoys = [services.spawn_envoy(f"bursts-{algorithm}-{i}", bootstrap, workers=WORKERS) for i in range(NODES)]
    for envoy in envoys:
        envoy.wait_ready(60)  # no probe request: it would take one of the limit's permits
    wait_synced(sidecar.metrics, envoys)
    results = []
    for shape in SHAPES:
        r = summarize(shape, algorithm, run_shape(shape, envoys, opts.bursts_limit), opts.bursts_limit)
        t95 = f"{r['t95']:.2f} s" if r["t95"] is not None else "never"
        log(f"part 5 {algorithm} {shape}: {r['admitted']} admitted of {r['requests']} (per node {r['per_node']}), "
            f"overshoot {r['overshoot_pct']:+.1f}%, t95 {t95}")
        results.append(r)
    for process in envoys + [sidecar]:
        process.stop()
    return results


def run_part(opts, services, log):
    return [r for algorithm in opts.bursts_algorithms for r in measure(opts, algorithm, services, log)]


def figures(results, opts):
    rows = ["| shape | algorithm | requests | admitted / limit | admitted per node | overshoot | t95 |",
            "| --- | --- | ---: | ---: | --- | ---: | ---: |"]
    for r in results:
        t95 = f"{r['t95']:.2f} s" if r["t95"] is not None else "never"
        rows.append(f"| {r['shape']} | {r['algorithm']} | {r['requests']:,} | {r['admitted']} / {r['limit']} "
                    f"| {' + '.join(str(n) for n in r['per_node'])} | {r['overshoot_pct']:+.1f}% | {t95} |")
    head = (f"{NODES} nodes × {WORKERS} Envoy workers, one `global` rule of {opts.bursts_limit} an hour per tenant "
            f"(one tenant per shape), sync 200 ms, a {opts.bursts_store} sidecar. `t95`: from the shape's first "
            "answer to the one that brought its admissions to 95 % of the limit.")
    worst = max(abs(r["overshoot_pct"]) for r in results)
    hot = [r["t95"] for r in results if r["shape"] in ("one-node", "hot+trickle")]
    hot_t95 = max((t if t is not None else float("inf")) for t in hot) if hot else None
    targets = [f"- {'met' if worst <= MAX_OVERSHOOT_PCT else 'MISSED'}: every burst shape within "
               f"{MAX_OVERSHOOT_PCT:.0f} % of the limit (worst {worst:.1f} %)"]
    if hot_t95 is not None:
        targets.append(f"- {'met' if hot_t95 <= MAX_T95_S else 'MISSED'}: a hot node at 95 % of the limit "
                       f"within {MAX_T95_S:.0f} s (slowest {hot_t95:.2f} s)")
    return [head, "", *rows], targets
