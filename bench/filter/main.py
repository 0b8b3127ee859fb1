"""Tollgate's filter benchmark: five Envoy configurations measured interleaved. Run it with
`bench/filter/run`, which installs the tools, builds the filters and finds Envoy first; see
bench/README.md."""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: the repository root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.common import measure as readings  # noqa: E402
from bench.common.measure import FAILURES, BenchError  # noqa: E402
from bench.filter import configs, envoys, load, report  # noqa: E402
from tests.harness.paths import NOOP_WASM, FILTER_WASM, REPO  # noqa: E402

ROOT = str(REPO)


def parse_args(argv):
    p = argparse.ArgumentParser(prog="bench/filter/run", description=__doc__)
    p.add_argument("--runs", type=int, default=3, help="interleaved rounds over all configurations (3)")
    p.add_argument("--duration", type=int, default=5, help="seconds of each measurement (5)")
    p.add_argument("--warmup", type=int, default=1, help="seconds of load before each measurement (1)")
    p.add_argument("--rate", type=int, default=5000, help="open-loop offered rate for latency, req/s (5000)")
    p.add_argument("--connections", type=int, default=32, help="connections of both load tools (32)")
    p.add_argument("--configs", default="abcde", help="which configurations, in order (abcde)")
    p.add_argument("--envoy", default=os.environ.get("ENVOY_BIN", os.path.join(ROOT, ".venv", "bin", "envoy")),
                   help="the Envoy binary (ENVOY_BIN, else .venv/bin/envoy)")
    p.add_argument("--wrk", default="wrk", help="the closed-loop load tool (wrk)")
    p.add_argument("--oha", default="oha", help="the open-loop load tool (oha)")
    p.add_argument("--noop-wasm", default=str(NOOP_WASM),
                   help="the do-nothing filter of (c)")
    p.add_argument("--tollgate-wasm", default=str(FILTER_WASM),
                   help="the Tollgate filter of (d) and (e)")
    p.add_argument("--envoy-core", type=int, default=0, help="the core Envoy is pinned to (0)")
    p.add_argument("--load-core", type=int, default=1, help="the core wrk and oha are pinned to (1)")
    p.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    opts = p.parse_args(argv)
    unknown = set(opts.configs) - set(configs.CONFIGS)
    if unknown or not opts.configs:
        p.error(f"--configs takes letters from {''.join(configs.CONFIGS)}")
    if opts.runs < 1 or opts.duration < 1 or opts.warmup < 0 or opts.rate < 1:
        p.error("--runs, --duration and --rate must be positive, --warmup at least 0")
    opts.header = f"{configs.API_KEY_HEADER}: {configs.API_KEY}"
    return opts


def check_statuses(name, run, counts, wrk, latency):
    """A run whose responses are not what the configuration promises is an error, not a figure."""
    expected = configs.CONFIGS[name][1]
    where = f"({name}) run {run}"
    if wrk["socket_errors"]:
        raise BenchError(f"{where}: wrk saw {wrk['socket_errors']} socket errors")
    if latency["errors"]:
        raise BenchError(f"{where}: oha saw errors {latency['errors']}")
    total = counts["completed"]
    if total < wrk["requests"]:
        raise BenchError(f"{where}: Envoy completed {total} requests, wrk counted {wrk['requests']}")
    oha_total = sum(latency["statuses"].values())
    if expected == 200:
        if counts["2xx"] != total or wrk["non_2xx"]:
            raise BenchError(f"{where}: expected only 200, Envoy counted {counts}")
        if set(latency["statuses"]) != {200}:
            raise BenchError(f"{where}: expected only 200, oha saw {latency['statuses']}")
    else:
        # Refusing: all but (at most) a handful of the requests must be 429.
        if counts["4xx"] < 0.999 * total or counts["5xx"]:
            raise BenchError(f"{where}: expected ~all 429, Envoy counted {counts}")
        if latency["statuses"].get(429, 0) < 0.999 * oha_total:
            raise BenchError(f"{where}: expected ~all 429, oha saw {latency['statuses']}")


def measure(envoy, opts, run):
    """One measurement of one configuration: closed loop for req/s and CPU, open loop for latency."""
    url = envoy.url(configs.REQUEST_PATH)
    if opts.warmup:
        load.wrk(opts, url, opts.warmup)
    before = readings.envoy_counters(envoy)
    cores = (opts.envoy_core, opts.load_core)
    wall0, cpu0, busy0 = time.monotonic(), readings.process_cpu_seconds(envoy.pid), readings.cores_busy_seconds(cores)
    closed = load.wrk(opts, url, opts.duration)
    wall1, cpu1, busy1 = time.monotonic(), readings.process_cpu_seconds(envoy.pid), readings.cores_busy_seconds(cores)
    counts = readings.counter_delta(before, readings.envoy_counters(envoy))
    latency = load.oha(opts, url)
    check_statuses(envoy.config, run, counts, closed, latency)
    wall, cpu = wall1 - wall0, cpu1 - cpu0
    return {
        "config": envoy.config,
        "run": run,
        "rps": closed["rps"],
        "cpu_us": cpu / counts["completed"] * 1e6,
        "envoy_cpu_pct": cpu / wall * 100,
        "wrk_cpu_pct": closed["cpu_seconds"] / wall * 100,
        # CPU that neither Envoy nor wrk used on their cores: the noise in this measurement.
        "others_envoy_core_pct": max(0.0, busy1[0] - busy0[0] - cpu) / wall * 100,
        "others_load_core_pct": max(0.0, busy1[1] - busy0[1] - closed["cpu_seconds"]) / wall * 100,
        "p50_us": latency["p50_us"],
        "p99_us": latency["p99_us"],
        "achieved_rps": latency["achieved_rps"],
        "statuses": latency["statuses"],
    }


def main(argv):
    opts = parse_args(argv)
    cores = os.cpu_count() or 1
    if max(opts.envoy_core, opts.load_core) >= cores or opts.envoy_core == opts.load_core:
        sys.exit(f"bench: needs two distinct cores (Envoy on {opts.envoy_core}, load on {opts.load_core}); "
                 f"this machine has {cores}")
    for path in [opts.envoy] + [opts.noop_wasm] * ("c" in opts.configs) \
            + [opts.tollgate_wasm] * bool(set("de") & set(opts.configs)):
        if not os.path.exists(path):
            sys.exit(f"bench: {path} is missing (bench/filter/run builds the filters and installs Envoy)")
    started = time.monotonic()
    results, running = [], []
    with tempfile.TemporaryDirectory(prefix="tollgate-bench-") as workdir:
        try:
            for name in opts.configs:
                running.append(envoys.start(name, opts, workdir))
            for envoy in running:
                envoy.wait_ready(60)
                envoys.probe(envoy)
                print(f"bench: ({envoy.config}) {configs.CONFIGS[envoy.config][0]}: Envoy pid {envoy.pid} "
                      f"on :{envoy.port}", file=sys.stderr)
            for run in range(1, opts.runs + 1):
                for envoy in running:
                    r = measure(envoy, opts, run)
                    results.append(r)
                    print(f"bench: run {run} ({envoy.config}) {r['rps']:.0f} req/s, {r['cpu_us']:.1f} µs/req, "
                          f"p50 {r['p50_us']:.0f} µs, p99 {r['p99_us']:.0f} µs, "
                          f"Envoy CPU {r['envoy_cpu_pct']:.0f}%, wrk {r['wrk_cpu_pct']:.0f}%, others on Envoy's/load core "
                          f"{r['others_envoy_core_pct']:.0f}%/{r['others_load_core_pct']:.0f}%", file=sys.stderr)
        except FAILURES as e:
            sys.exit(f"bench: FAILED: {e}")
        finally:
            for envoy in running:
                envoy.stop()
    figures = report.figures(opts, results, time.monotonic() - started)
    print(figures)
    if not opts.no_write:
        report.rewrite_benchmarks_md(os.path.join(ROOT, "BENCHMARKS.md"), figures)
        print("bench: figures written to BENCHMARKS.md", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
