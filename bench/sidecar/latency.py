"""Part 6 of `bench/sidecar`: the latency of a `strict` rule under an open-loop load.

One Envoy worker (pinned to --envoy-core) per configuration of part 2 — (a) no filter, (l) one
rule `local`, (s) the same rule `strict`, decided by the release sidecar on Redis — and oha
(pinned to --load-core) sending a fixed rate whatever the answers: each request is timed from
when it was due, so requests that queue behind a slow one count their wait. The paths are drawn
at random from /k/0 … /k/9999 (one bucket each, as in part 2). Rates (--latency-rates) and
configurations are interleaved, --runs times; every answer must be 200, and with (s) every
request one sidecar decision.

(a) is the floor (oha + Envoy), (l) what a local decision adds, (s) what the call to the sidecar
adds. The target (issue 10): (s) p99 ≤ 2 ms at 2,000 req/s.
"""

from bench.common.measure import BenchError
from bench.sidecar import one_worker
from tests.harness import load_tools

NAMES = "als"
TARGET_RATE = 2_000
TARGET_P99_US = 2_000
PATHS_REGEX = "/k/[0-9]{1,4}"


def measure(opts, envoy, sidecar, rate, run):
    """One oha run at `rate` against `envoy`: its percentiles, checked."""
    decided0 = sidecar.decisions(outcome="admitted")
    calls0 = one_worker.sidecar_traffic(envoy)[0]
    r = load_tools.oha(f"http://127.0.0.1:{envoy.port}{PATHS_REGEX}", opts.latency_seconds, rate=rate,
                       connections=opts.connections, core=opts.load_core, binary=opts.oha,
                       rand_regex_url=True)
    answered = sum(r["statuses"].values())
    where = f"({envoy.config}) {rate} req/s run {run}"
    if r["errors"] or set(r["statuses"]) != {200}:
        raise BenchError(f"{where}: expected only 200; oha saw {r['statuses']}, errors {r['errors']}\n"
                         f"{envoy.log_tail()}")
    decided = sidecar.decisions(outcome="admitted") - decided0
    calls = one_worker.sidecar_traffic(envoy)[0] - calls0
    if envoy.config == "s" and decided < answered:
        raise BenchError(f"{where}: {answered} answers but only {decided} sidecar decisions")
    return {"config": envoy.config, "rate": rate, "run": run, "answered": answered,
            "calls_per_request": calls / answered if answered else 0.0, **r}


def run_part(opts, services, log):
    sidecar = services.sidecar("redis")
    envoys = one_worker.start(opts, NAMES, sidecar, services)
    results = []
    for run in range(1, opts.runs + 1):
        for rate in opts.latency_rates:
            for envoy in envoys:
                r = measure(opts, envoy, sidecar, rate, run)
                results.append(r)
                log(f"part 6 run {run} ({envoy.config}) {rate:,} req/s: p50 {r['p50_us']:.0f} µs, "
                    f"p99 {r['p99_us']:.0f} µs, max {r['max_us']:.0f} µs, {r['achieved_rps']:,.0f} req/s, "
                    f"{r['calls_per_request']:.3f} sidecar calls per request")
    return results
