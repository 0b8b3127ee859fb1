"""The usage pipeline's benchmark (usage issue), baselines in the same run: (1) usage records/s
ingested by the release sidecar on Redis (`POST /v1/usage`, driven by the Rust load generator
`sidecar/examples/usage_load.rs`), beside redis-benchmark of the Redis writes behind them; (2)
the time of `tollgate-sidecar flush` moving 100,000 dirty keys from Redis into PostgreSQL.
Run it with `bench/usage/run`, which installs the tools and builds first; see bench/README.md."""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: the repository root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.common.measure import FAILURES, BenchError, process_cpu_seconds  # noqa: E402
from bench.usage import report as usage_report  # noqa: E402
from tests.harness import load_tools  # noqa: E402
from tests.harness.paths import REPO  # noqa: E402
from tests.harness.postgres import Postgres  # noqa: E402
from tests.harness.redis import RedisServer  # noqa: E402
from tests.harness.sidecar import SidecarProcess  # noqa: E402
from tests.harness.wait import until  # noqa: E402

ROOT = str(REPO)
RELEASE = os.path.join(ROOT, "target", "release")
# Requests each generated record counts (usage_load.rs: REQUESTS).
REQUESTS_PER_RECORD = 3


def parse_args(argv):
    p = argparse.ArgumentParser(prog="bench/usage/run", description=__doc__)
    p.add_argument("--runs", type=int, default=3, help="interleaved ingest rounds; the median is reported (3)")
    p.add_argument("--seconds", type=float, default=5, help="seconds of each ingest measurement (5)")
    p.add_argument("--connections", type=int, default=16, help="load connections = senders (16)")
    p.add_argument("--records", type=int, default=1000, help="records per batch (1000)")
    p.add_argument("--tenants", type=int, default=100, help="case shared: tenants (100)")
    p.add_argument("--endpoints", type=int, default=20, help="case shared: endpoints per tenant (20)")
    p.add_argument("--wide-tenants", type=int, default=1000, help="case distinct: tenants (1000)")
    p.add_argument("--wide-endpoints", type=int, default=100, help="case distinct: endpoints per tenant (100)")
    p.add_argument("--flush-tenants", type=int, default=1000, help="flush: tenants (1000)")
    p.add_argument("--flush-endpoints", type=int, default=100, help="flush: endpoints per tenant (100)")
    p.add_argument("--flush-runs", type=int, default=3, help="flushes of the whole key space (3)")
    p.add_argument("--redis-requests", type=int, default=2_000_000, help="redis-benchmark commands (2000000)")
    p.add_argument("--redis-clients", type=int, default=50, help="redis-benchmark connections (50)")
    p.add_argument("--sidecar-bin", default=os.path.join(RELEASE, "tollgate-sidecar"))
    p.add_argument("--load-bin", default=os.path.join(RELEASE, "examples", "usage_load"))
    p.add_argument("--redis-benchmark", default="redis-benchmark")
    p.add_argument("--label", default="", help="a line printed above the figures (e.g. SMOKE RUN …)")
    p.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    opts = p.parse_args(argv)
    if min(opts.runs, opts.seconds, opts.connections, opts.records, opts.tenants, opts.endpoints,
           opts.wide_tenants, opts.wide_endpoints, opts.flush_tenants, opts.flush_endpoints, opts.flush_runs) <= 0:
        p.error("counts and durations must be positive")
    if opts.records > 1024:
        p.error("--records is at most 1024 (MAX_USAGE_RECORDS)")
    return opts


def load(opts, sidecar, redis, tenants, endpoints, sender_base, *, connections=None, seconds=None,
         max_batches=1_000_000):
    """One usage_load run (it checks every answer and Redis's totals itself): its JSON summary."""
    cmd = [opts.load_bin, "--url", f"http://127.0.0.1:{sidecar.port}", "--redis", redis.url,
           "--connections", str(connections or opts.connections), "--seconds", str(seconds or opts.seconds),
           "--records", str(opts.records), "--tenants", str(tenants), "--endpoints", str(endpoints),
           "--sender-base", str(sender_base), "--max-batches", str(max_batches),
           "--cpu-pids", f"{sidecar.pid},{redis.pid}"]
    timeout = (seconds or opts.seconds) + 120
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise BenchError(f"usage_load failed: {done.stderr.strip()} (sidecar log: {sidecar.log_path})")
    return json.loads(done.stdout.strip().splitlines()[-1])


def writes_per_record(tenants, endpoints):
    """Redis writes one record of usage_load.rs makes when nothing merges: its non-zero
    counters (HINCRBY each) and the plan (HSET)."""
    keys = tenants * endpoints
    total = 0
    for k in range(keys):
        buckets = {1} | {k % 12}
        total += 4 + len(buckets) + (k % 10 == 0) + 1
    return total / keys


def redis_baseline(opts, redis):
    """redis-benchmark -P 16 of HINCRBY on 100,000 hashes: field increments/s."""
    cpu0 = process_cpu_seconds(redis.pid)
    rate = load_tools.redis_benchmark(redis.port, ["HINCRBY", "bench:{t}:__rand_int__", "requests", "3"],
                                      requests=opts.redis_requests, clients=opts.redis_clients, pipeline=16,
                                      keys=100_000, binary=opts.redis_benchmark)
    cpu = process_cpu_seconds(redis.pid) - cpu0
    return {"hincrby_rps": rate, "redis_us": cpu / opts.redis_requests * 1e6}


def redis_cli(redis, *args):
    done = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(redis.port), *args],
                          capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise BenchError(f"redis-cli {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def measure_ingest(opts, sidecar, redis, run):
    results = []
    cases = (("shared", opts.tenants, opts.endpoints), ("distinct", opts.wide_tenants, opts.wide_endpoints))
    for n, (case, tenants, endpoints) in enumerate(cases):
        r = load(opts, sidecar, redis, tenants, endpoints, sender_base=run * 1_000_000 + n * 100_000)
        cpu = r["cpu_seconds"]  # sidecar, Redis: during the load only (not its Redis checks)
        r.update(case=case, run=run, sidecar_us=cpu[0] / r["records"] * 1e6, redis_us=cpu[1] / r["records"] * 1e6,
                 load_us=r["own_cpu_seconds"] / r["records"] * 1e6)
        results.append(r)
    return results


def measure_flush(opts, sidecar, redis, postgres, run, log):
    """Empties Redis, ingests exactly flush_tenants × flush_endpoints distinct keys, then times
    `tollgate-sidecar flush` into PostgreSQL and checks api_usage_daily afterwards."""
    redis_cli(redis, "FLUSHALL")
    keys = opts.flush_tenants * opts.flush_endpoints
    batches = -(-keys // opts.records)
    filled = load(opts, sidecar, redis, opts.flush_tenants, opts.flush_endpoints, sender_base=9_000_000 + run * 10,
                  connections=1, seconds=600, max_batches=batches)
    if filled["applied"] != keys or filled["redis_requests_delta"] != keys * REQUESTS_PER_RECORD:
        raise BenchError(f"filling {keys} keys: {filled}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_")}
    env.update(TOLLGATE_REDIS_URL=redis.url, TOLLGATE_DATABASE_URL=postgres.url, RUST_LOG="info")
    started = time.monotonic()
    done = subprocess.run([opts.sidecar_bin, "flush"], env=env, capture_output=True, text=True, timeout=600)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise BenchError(f"tollgate-sidecar flush failed: {done.stderr.strip()[-2000:]}")
    (rows, requests), = postgres.query("SELECT count(*), coalesce(sum(requests), 0) FROM api_usage_daily")
    want_requests = keys * REQUESTS_PER_RECORD * run
    if int(rows) != keys or int(requests) != want_requests:
        raise BenchError(f"after flush {run}: api_usage_daily has {rows} rows, {requests} requests; "
                         f"expected {keys} rows, {want_requests} requests")
    left = redis_cli(redis, "SCARD", "usage:dirty-tenants")
    if left != "0":
        raise BenchError(f"after flush {run}: {left} tenants still dirty in Redis")
    log(f"flush {run}: {keys:,} keys in {seconds:.2f} s ({int(rows):,} rows, {int(requests):,} requests in all)")
    return {"run": run, "seconds": seconds, "keys": keys, "rows": int(rows)}


def main(argv):
    opts = parse_args(argv)
    for path in (opts.sidecar_bin, opts.load_bin):
        if not os.path.exists(path):
            sys.exit(f"bench/usage: {path} is missing (bench/usage/run builds it: cargo build --release "
                     "-p tollgate-sidecar --bin tollgate-sidecar --example usage_load)")

    def log(text):
        print(f"bench/usage: {text}", file=sys.stderr, flush=True)

    started_at, started = time.monotonic(), []
    ingest, baseline, flushes = [], [], []
    with tempfile.TemporaryDirectory(prefix="tollgate-bench-usage-") as workdir:
        try:
            redis = RedisServer.launch(Path(workdir) / "redis")
            started.append(redis)
            # The release build (the harness's default is target/debug's, for the tests).
            sidecar = SidecarProcess(Path(workdir) / "sidecar", redis_url=redis.url, binary=opts.sidecar_bin,
                                     env={"TOLLGATE_FLUSH_INTERVAL": "1h", "RUST_LOG": "warn"})
            started.append(sidecar)
            sidecar.start()
            until(sidecar.ready, lambda s: s == 200, 30, "sidecar /readyz")
            for run in range(1, opts.runs + 1):
                for r in measure_ingest(opts, sidecar, redis, run):
                    ingest.append(r)
                    log(f"run {run} {r['case']} ({r['keys']:,} keys): {r['records_per_s']:,.0f} records/s, "
                        f"sidecar {r['sidecar_us']:.2f} µs CPU/record, Redis {r['redis_us']:.2f}, "
                        f"load generator {r['load_us']:.2f}")
                b = dict(redis_baseline(opts, redis), run=run)
                baseline.append(b)
                log(f"run {run} redis-benchmark -P 16 HINCRBY: {b['hincrby_rps']:,.0f}/s")
            # The flush part empties Redis before each fill. A sidecar with its usage log (the
            # default, measured above) takes that for lost data: it refuses batches (503) and
            # replays its log into Redis. The fill only has to put exactly N keys there, so
            # it goes through a sidecar without the log; `flush` reads Redis either way.
            sidecar.stop()
            sidecar = SidecarProcess(Path(workdir) / "sidecar-fill", redis_url=redis.url, binary=opts.sidecar_bin,
                                     env={"TOLLGATE_FLUSH_INTERVAL": "1h", "TOLLGATE_USAGE_LOG": "off",
                                          "RUST_LOG": "warn"})
            started.append(sidecar)
            sidecar.start()
            until(sidecar.ready, lambda s: s == 200, 30, "sidecar (fill) /readyz")
            if os.getuid() == 0:
                os.chmod(workdir, 0o711)  # PostgreSQL runs as `postgres` in a directory below
            postgres = Postgres(workdir)
            started.append(postgres)
            for run in range(1, opts.flush_runs + 1):
                flushes.append(measure_flush(opts, sidecar, redis, postgres, run, log))
        except (*FAILURES, subprocess.TimeoutExpired) as e:
            sys.exit(f"bench/usage: FAILED: {e}")
        finally:
            for p in reversed(started):
                try:
                    p.stop()
                except Exception:  # noqa: BLE001 — keep stopping the rest
                    pass
    figures = usage_report.figures(opts, ingest, baseline, flushes, writes_per_record,
                                   time.monotonic() - started_at)
    print(figures)
    if not opts.no_write:
        usage_report.rewrite_benchmarks_md(os.path.join(ROOT, "BENCHMARKS.md"), figures)
        log("figures written to BENCHMARKS.md")


if __name__ == "__main__":
    main(sys.argv[1:])

