"""The sidecar's benchmarks, baselines in the same run: (1) strict decisions/s of the sidecar
with Redis and in memory, beside redis-benchmark of the same Redis commands; (2) one Envoy
worker with a strict rule vs the same rule local vs no filter; (3) the shipped fixture (a
global rule) vs the same all local; (4) global overshoot by sync interval and node count;
(5) global rules under burst shapes on three nodes of two workers (per-worker allowances).
Run it with `bench/sidecar/run`, which installs the tools and builds first; see bench/README.md."""

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

if __package__ in (None, ""):  # run as a file: the repository root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.common.measure import FAILURES  # noqa: E402
from bench.sidecar import bursts, decisions, latency, one_worker, overshoot, report  # noqa: E402
from bench.sidecar.services import Services  # noqa: E402
from tests.harness.paths import FILTER_WASM, REPO, SHARED_FIXTURE  # noqa: E402

ROOT = str(REPO)


@dataclass
class Part:
    """One part of the benchmark: what `--parts` digits select it, its heading, how it runs
    (`run(opts, services, log)` → its results) and its figures (`figures(results, opts)` →
    Markdown rows and target lines). `every_run`: its results also go in the "Every run" table."""

    digits: str
    heading: Callable
    run: Callable
    figures: Callable
    every_run: bool = False


# The parts, in the order they run. Adding one: a module with its run(…) and figures(…), and a
# line here (its digit then works in --parts). Parts 2 and 3 share one interleaved loop.
PARTS = [
    Part("1", lambda o: f"1. Strict decisions/s, sidecar alone (`POST /v1/check`; many keys = {o.keys:,} buckets)",
         decisions.run_part, lambda results, opts: report.part1(results), every_run=True),
    Part("23", lambda o: f"2–3. One Envoy worker (core {o.envoy_core}), wrk on core {o.load_core}, sidecar and "
                         "Redis unpinned",
         one_worker.run_part, lambda results, opts: report.part23(results), every_run=True),
    Part("4", lambda o: "4. `global` overshoot", overshoot.run_part, report.part4),
    Part("5", lambda o: "5. `global` under bursts (per-worker allowances)", bursts.run_part, bursts.figures),
    Part("6", lambda o: f"6. Strict latency, open loop: one Envoy worker (core {o.envoy_core}), oha on core "
                        f"{o.load_core}", latency.run_part, report.part6),
]
ALL_PARTS = "".join(part.digits for part in PARTS)


def _ints(text):
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv):
    p = argparse.ArgumentParser(prog="bench/sidecar/run", description=__doc__)
    p.add_argument("--parts", default=ALL_PARTS, help=f"which parts ({ALL_PARTS})")
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
    p.add_argument("--bursts-algorithms", type=lambda t: [a for a in t.split(",") if a.strip()],
                   default=["fixed_window", "token_bucket"], help="part 5: algorithms (fixed_window,token_bucket)")
    p.add_argument("--bursts-limit", type=int, default=300, help="part 5: the global rule's limit an hour (300)")
    p.add_argument("--bursts-store", choices=["redis", "memory"], default="redis",
                   help="part 5: the sidecar's counters (redis)")
    p.add_argument("--latency-rates", type=_ints, default=[500, latency.TARGET_RATE],
                   help="part 6: open-loop rates, req/s (500,2000)")
    p.add_argument("--latency-seconds", type=int, default=10, help="part 6: seconds of each oha run (10)")
    p.add_argument("--oha", default="oha", help="part 6: the open-loop load tool")
    p.add_argument("--envoy", default=os.environ.get("ENVOY_BIN", os.path.join(ROOT, ".venv", "bin", "envoy")))
    p.add_argument("--wrk", default="wrk")
    p.add_argument("--redis-server", default="redis-server")
    p.add_argument("--redis-benchmark", default="redis-benchmark")
    p.add_argument("--sidecar-bin", default=os.path.join(ROOT, "target", "release", "tollgate-sidecar"))
    p.add_argument("--tollgate-wasm", default=str(FILTER_WASM))
    p.add_argument("--fixture", default=str(SHARED_FIXTURE),
                   help="part 3's configuration (filter/tests/fixtures/filter-config.json)")
    p.add_argument("--envoy-core", type=int, default=0, help="parts 2–3 and 6: Envoy's core (0)")
    p.add_argument("--load-core", type=int, default=1, help="parts 2–3 and 6: wrk's and oha's core (1)")
    p.add_argument("--label", default="", help="a line printed above the figures (e.g. SMOKE RUN …)")
    p.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    opts = p.parse_args(argv)
    if set(opts.parts) - set(ALL_PARTS) or not opts.parts:
        p.error(f"--parts takes digits from {ALL_PARTS}")
    if min(opts.runs, opts.duration, opts.keys, opts.paths, opts.overshoot_rate, opts.overshoot_seconds,
           opts.bursts_limit, opts.latency_seconds, *opts.latency_rates) < 1:
        p.error("counts and durations must be positive")
    return opts


def main(argv):
    opts = parse_args(argv)
    needed = [opts.sidecar_bin] + [opts.envoy, opts.tollgate_wasm] * bool(set(opts.parts) & set("23456")) \
        + [opts.fixture] * ("3" in opts.parts)
    for path in needed:
        if not os.path.exists(path):
            sys.exit(f"bench/sidecar: {path} is missing (bench/sidecar/run builds the sidecar and the filter and "
                     "installs Envoy; part 3 reads filter/tests/fixtures/filter-config.json)")

    def log(text):
        print(f"bench/sidecar: {text}", file=sys.stderr, flush=True)

    started_at, sections = time.monotonic(), []
    with tempfile.TemporaryDirectory(prefix="tollgate-bench-sidecar-") as workdir:
        services = Services(opts, workdir)
        try:
            for part in PARTS:
                if not set(part.digits) & set(opts.parts):
                    continue
                results = part.run(opts, services, log)
                services.stop_all()  # the next part starts on a quiet machine, its own processes fresh
                rows, targets = part.figures(results, opts)
                sections.append((part.heading(opts), rows, targets, results if part.every_run else []))
        except FAILURES as e:
            sys.exit(f"bench/sidecar: FAILED: {e}")
        finally:
            services.stop_all()
    figures = report.figures(opts, sections, time.monotonic() - started_at)
    print(figures)
    if not opts.no_write:
        report.rewrite_benchmarks_md(os.path.join(ROOT, "BENCHMARKS.md"), figures)
        log("figures written to BENCHMARKS.md")


if __name__ == "__main__":
    main(sys.argv[1:])
