#!/usr/bin/env python3
"""The usage log's benchmark: (1) usage records/s ingested by the release sidecar on Redis with
the usage log on and off, side by side in the same run (interleaved rounds, the median of each);
(2) the replay rate after Redis lost its data: records ingested with flushing held off, Redis
emptied (FLUSHALL, as a restart without persistence), and the sidecar's own "usage log
replayed" line read for the records and seconds of the replay.

Load: the Rust load generator `sidecar/examples/usage_load.rs` (every answer checked, Redis's
totals checked before and after). Build first:

    cargo build --release -p tollgate-sidecar --bin tollgate-sidecar --example usage_load
    .venv/bin/python bench/usage/wal.py                 # 3 rounds x 5 s per mode, 1,000,000-record replay
    .venv/bin/python bench/usage/wal.py --runs 1 --seconds 2 --replay-records 200000   # a quick look

It starts its own redis-server (no persistence) and sidecars on free loopback ports, each with
its own working directory (SQLite usage database, usage log) under a temporary directory, and
stops them by PID. Prints one JSON line per measurement and a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.harness.redis import RedisServer  # noqa: E402
from tests.harness.sidecar import free_port, parse_prometheus  # noqa: E402
from tests.harness.wait import until  # noqa: E402

RELEASE = ROOT / "target" / "release"
REPLAYED = re.compile(r"usage log replayed.*?records=(\d+).*?seconds=([0-9.e-]+)")


def parse_args(argv):
    p = argparse.ArgumentParser(prog="bench/usage/wal.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=3, help="interleaved rounds per mode; medians reported (3)")
    p.add_argument("--seconds", type=float, default=5, help="seconds of each ingest measurement (5)")
    p.add_argument("--connections", type=int, default=16, help="load connections = senders (16)")
    p.add_argument("--records", type=int, default=1000, help="records per batch (1000)")
    p.add_argument("--tenants", type=int, default=100, help="tenants in the key space (100)")
    p.add_argument("--endpoints", type=int, default=20, help="endpoints per tenant (20)")
    p.add_argument("--replay-records", type=int, default=1_000_000, help="records ingested, then replayed (1000000)")
    p.add_argument("--sidecar-bin", default=str(RELEASE / "tollgate-sidecar"))
    p.add_argument("--load-bin", default=str(RELEASE / "examples" / "usage_load"))
    opts = p.parse_args(argv)
    if min(opts.runs, opts.seconds, opts.connections, opts.records, opts.tenants, opts.endpoints,
           opts.replay_records) <= 0:
        p.error("counts and durations must be positive")
    for binary in (opts.sidecar_bin, opts.load_bin):
        if not os.access(binary, os.X_OK):
            p.error(f"{binary} is missing: cargo build --release -p tollgate-sidecar --bin tollgate-sidecar "
                    "--example usage_load")
    return opts


class Sidecar:
    """A release sidecar on Redis in its own directory; stopped by PID."""

    def __init__(self, opts, workdir: Path, redis_url: str, *, log_on: bool, flush_interval: str = "1h"):
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir, self.port = workdir, free_port()
        self.log_path = workdir / "sidecar.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_")}
        env.update(TOLLGATE_LISTEN=f"127.0.0.1:{self.port}", TOLLGATE_REDIS_URL=redis_url,
                   TOLLGATE_DATABASE_URL=f"sqlite://{workdir}/usage.db?mode=rwc",
                   TOLLGATE_FLUSH_INTERVAL=flush_interval, TOLLGATE_USAGE_LOG="on" if log_on else "off",
                   RUST_LOG="info")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([opts.sidecar_bin], cwd=workdir, env=env, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        until(self.ready, bool, 60, f"sidecar on port {self.port} ({self.log_path})")

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"sidecar exited: {self.log_path.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as resp:
            return parse_prometheus(resp.read().decode())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def load(opts, sidecar: Sidecar, redis: RedisServer, sender_base: int, *, seconds: float,
         max_batches: int = 1_000_000, connections: int | None = None) -> dict:
    cmd = [opts.load_bin, "--url", f"http://127.0.0.1:{sidecar.port}", "--redis", redis.url,
           "--connections", str(connections or opts.connections), "--seconds", str(seconds),
           "--records", str(opts.records), "--tenants", str(opts.tenants), "--endpoints", str(opts.endpoints),
           "--sender-base", str(sender_base), "--max-batches", str(max_batches),
           "--cpu-pids", f"{sidecar.proc.pid},{redis.pid}"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 600)
    if done.returncode != 0:
        raise RuntimeError(f"usage_load failed: {done.stderr.strip()} (sidecar log: {sidecar.log_path})")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_ingest(opts, base: Path, redis: RedisServer) -> dict:
    sidecars = {"log on": Sidecar(opts, base / "on", redis.url, log_on=True),
                "log off": Sidecar(opts, base / "off", redis.url, log_on=False)}
    rates: dict[str, list[float]] = {mode: [] for mode in sidecars}
    try:
        for run in range(opts.runs):
            for n, (mode, sidecar) in enumerate(sidecars.items()):
                r = load(opts, sidecar, redis, sender_base=1_000_000 * (run + 1) + 100_000 * n, seconds=opts.seconds)
                rate = r["applied"] / r["seconds"]
                rates[mode].append(rate)
                print(json.dumps({"measure": "ingest", "mode": mode, "run": run, "records_per_s": round(rate),
                                  "records": r["applied"], "seconds": r["seconds"]}), flush=True)
    finally:
        for sidecar in sidecars.values():
            sidecar.stop()
    return {mode: statistics.median(values) for mode, values in rates.items()}


def measure_replay(opts, base: Path, redis: RedisServer) -> dict:
    """Records in with no flush, FLUSHALL, the replay's own figures from its log line."""
    sidecar = Sidecar(opts, base / "replay", redis.url, log_on=True)
    try:
        batches = -(-opts.replay_records // opts.records)
        r = load(opts, sidecar, redis, sender_base=50_000_000, seconds=3600, max_batches=batches)
        if r["applied"] != batches * opts.records:
            raise RuntimeError(f"ingesting {batches * opts.records} records: {r}")
        replays = sidecar.metrics().get("tollgate_usage_log_replays_total", 0)
        subprocess.run(["redis-cli", "-p", str(redis.port), "FLUSHALL"], check=True, capture_output=True, timeout=60)
        until(lambda: sidecar.metrics().get("tollgate_usage_log_replays_total", 0), lambda n: n > replays, 600,
              "the replay after FLUSHALL")
        found = REPLAYED.findall(sidecar.log_path.read_text(errors="replace"))
        records, seconds = int(found[-1][0]), float(found[-1][1])
        if records != r["applied"]:
            raise RuntimeError(f"replayed {records} records, ingested {r['applied']}")
        figure = {"measure": "replay", "records": records, "seconds": round(seconds, 3),
                  "records_per_s": round(records / seconds)}
        print(json.dumps(figure), flush=True)
        return figure
    finally:
        sidecar.stop()


def main(argv) -> int:
    opts = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tollgate-usage-wal-bench-") as tmp:
        base = Path(tmp)
        redis = RedisServer.throw_away(base / "redis")
        try:
            ingest = measure_ingest(opts, base, redis)
            replay = measure_replay(opts, base, redis)
        finally:
            redis.kill()
    print(f"ingest, usage log on:  {ingest['log on']:>12,.0f} records/s (median of {opts.runs})")
    print(f"ingest, usage log off: {ingest['log off']:>12,.0f} records/s (median of {opts.runs})")
    print(f"replay after FLUSHALL: {replay['records_per_s']:>12,.0f} records/s "
          f"({replay['records']:,} records in {replay['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
