"""The sidecar's benchmarks, baselines in the same run: (1) strict decisions/s of the sidecar
with Redis and in memory, beside redis-benchmark of the same Redis commands; (2) one Envoy
worker with a strict rule vs the same rule local vs no filter; (3) the shipped fixture (a
global rule) vs the same all local; (4) global overshoot by sync interval and node count.
Run it with `bench/sidecar`, which installs the tools and builds first; see bench/README.md."""

import argparse
import os
import sys
import tempfile
import time

import overshoot
import services
import sidecar_decisions
import sidecar_envoy
import sidecar_report
from load import BenchError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WASM = os.path.join(ROOT, "target", "wasm32-wasip1", "release", "tollgate_filter.wasm")


def _ints(text):
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv):
    p = argparse.ArgumentParser(prog="bench/sidecar", description=__doc__)
    p.add_argument("--parts", default="1234", help="which parts, in order (1234)")
    p.add_argument("--runs", type=int, default=3, help="interleaved rounds of parts 1–3 (3)")
    p.add_argument("--duration", type=int, default=5, help="seconds of each wrk measurement (5)")
    p.add_argument("--warmup", type=int, default=1, help="seconds of load before each measurement (1)")
    p.add_argument("--connections", type=int, default=32, help="wrk connections (32)")
    p.add_argument("--keys", type=int, default=100_000, help="part 1: distinct buckets of the many-keys cases (100000)")
    p.add_argument("--paths", type=int, default=10_000, help="part 2: distinct paths, one bucket each (10000)")
    p.add_argument("--redis-requests", type=int, default=100_000, help="part 1: commands per redis-benchmark run (100000)")
    p.add_argument("--redis-clients", type=int, default=50, help="part 1: redis-benchmark connections (50)")
    p.add_argument("--intervals", type=_ints, default=[50, 200, 1000], help="part 4: sync intervals, ms (50,200,1000)")
    p.add_argument("--nodes", type=_ints, default=[1, 3], help="part 4: node counts (1,3)")
    p.add_argument("--overshoot-rate", type=int, default=100, help="part 4: offered req/s over all nodes (100)")
    p.add_argument("--overshoot-seconds", type=int, default=12, help="part 4: seconds of load per row (12)")
    p.add_argument("--overshoot-limit", type=int, default=600, help="part 4: the global rule's limit (600)")
    p.add_argument("--overshoot-window", default="1m", help="part 4: its window, longer than the load (1m)")
    p.add_argument("--overshoot-algorithm", default="sliding_window_log",
                   choices=["sliding_window_log", "fixed_window"], help="part 4: its algorithm (sliding_window_log)")
    p.add_argument("--envoy", default=os.environ.get("ENVOY_BIN", os.path.join(ROOT, ".venv", "bin", "envoy")))
    p.add_argument("--wrk", default="wrk")
    p.add_argument("--redis-server", default="redis-server")
    p.add_argument("--redis-benchmark", default="redis-benchmark")
    p.add_argument("--sidecar-bin", default=os.path.join(ROOT, "target", "release", "tollgate-sidecar"))
    p.add_argument("--tollgate-wasm", default=WASM)
    p.add_argument("--fixture", default=os.path.join(ROOT, "filter", "tests", "fixtures", "filter-config.json"),
                   help="part 3's configuration (filter/tests/fixtures/filter-config.json)")
    p.add_argument("--envoy-core", type=int, default=0, help="parts 2–3: Envoy's core (0)")
    p.add_argument("--load-core", type=int, default=1, help="parts 2–3: wrk's core (1)")
    p.add_argument("--label", default="", help="a line printed above the figures (e.g. SMOKE RUN …)")
    p.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    opts = p.parse_args(argv)
    if set(opts.parts) - set("1234") or not opts.parts:
        p.error("--parts takes digits from 1234")
    if min(opts.runs, opts.duration, opts.keys, opts.paths, opts.overshoot_rate, opts.overshoot_seconds) < 1:
        p.error("counts and durations must be positive")
    return opts


def main(argv):
    opts = parse_args(argv)
    needed = [opts.sidecar_bin] + [opts.envoy, opts.tollgate_wasm] * bool(set(opts.parts) & set("234")) \
        + [opts.fixture] * ("3" in opts.parts)
    for path in needed:
        if not os.path.exists(path):
            sys.exit(f"bench/sidecar: {path} is missing (bench/sidecar builds the sidecar and the filter and "
                     "installs Envoy; part 3 reads filter/tests/fixtures/filter-config.json)")

    def log(text):
        print(f"bench/sidecar: {text}", file=sys.stderr, flush=True)

    started_at, started, parts = time.monotonic(), [], {}
    with tempfile.TemporaryDirectory(prefix="tollgate-bench-sidecar-") as workdir:
        try:
            if set(opts.parts) & set("123"):
                redis = services.Redis(workdir, opts.redis_server)
                started.append(redis)
                with_redis = services.Sidecar("redis", opts.sidecar_bin, workdir, redis)
                started.append(with_redis)
            if "1" in opts.parts:
                in_memory = services.Sidecar("memory", opts.sidecar_bin, workdir)
                started.append(in_memory)
                parts[1] = sidecar_decisions.run_part(
                    opts, {"redis": with_redis, "memory": in_memory}, redis, workdir, log)
                in_memory.stop()
            names = "".join(n for n, (_, part) in sidecar_envoy.CONFIGS.items() if str(part) in opts.parts)
            if names:
                results = sidecar_envoy.run_part(opts, names, with_redis, redis, workdir, started, log)
                for part in (2, 3):
                    parts[part] = [r for r in results if sidecar_envoy.CONFIGS[r["config"]][1] == part]
            services.stop_all(started)
            if "4" in opts.parts:
                parts[4] = overshoot.run_part(opts, workdir, started, log)
        except BenchError as e:
            sys.exit(f"bench/sidecar: FAILED: {e}")
        finally:
            services.stop_all(started)
    figures = sidecar_report.figures(opts, parts, time.monotonic() - started_at)
    print(figures)
    if not opts.no_write:
        sidecar_report.rewrite_benchmarks_md(os.path.join(ROOT, "BENCHMARKS.md"), figures)
        log("figures written to BENCHMARKS.md")


if __name__ == "__main__":
    main(sys.argv[1:])
