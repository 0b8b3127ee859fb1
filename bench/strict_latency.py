#!/usr/bin/env python3
"""Open-loop latency of one `strict` rule: one Envoy worker (`--concurrency 1`), the sidecar on
a throw-away Redis, requests sent at a fixed rate whatever the answers (so a slow answer
cannot slow the load down and hide itself: latency counts from when a request was due).

Each filter build given with `--wasm NAME=PATH` runs in turn against the same sidecar and
Redis, in the same run, so the figures compare like with like. `--sidecar` runs another
sidecar build (the release one for figures: target/release/tollgate-sidecar); `--paths N` keys
the rule by path and spreads the load over N buckets (default: one bucket, the client's IP).
`bench/sidecar/run --parts 6` measures the shipped build the same way with oha. Bounded: `--seconds` per build
(plus a short warm-up), every request has a timeout.

    .venv/bin/python bench/strict_latency.py --wasm main=/tmp/main.wasm \
        --wasm new=target/wasm32-wasip1/release/tollgate_filter.wasm --rate 2000 --seconds 20

Prints one line per build: sent, answered (by status), errors, achieved rate, p50/p90/p99/max.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from harness import config, policy  # noqa: E402
from harness.envoy import Envoy  # noqa: E402
from harness.redis import RedisServer  # noqa: E402
from harness.sidecar import SidecarProcess  # noqa: E402

REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
PATHS = None  # with --paths N: /k/0 ... /k/N-1 in turn, one bucket each (the rule keyed by path)


def filter_config(key: str) -> dict:
    # A limit that never refuses: every request is one sidecar decision that writes.
    rule = policy.rule("strict", "fixed_window", 1_000_000_000_000, "1h", key=[key], scope="strict")
    sidecar = {"cluster": "tollgate_sidecar", "authority": "tollgate-sidecar", "timeout_ms": 1000}
    return policy.config(rule, sidecar=sidecar, failure_mode="open")


class Pool:
    """Keep-alive connections to Envoy; one request at a time on each."""

    def __init__(self, port: int, cap: int):
        self.port = port
        self.cap = cap
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.opened = 0

    async def get(self):
        if self.idle:
            return self.idle.pop()
        if self.opened >= self.cap:
            raise RuntimeError("connection cap reached")
        self.opened += 1
        return await asyncio.open_connection("127.0.0.1", self.port)

    def put(self, conn) -> None:
        self.idle.append(conn)


async def one(pool: Pool, timeout: float) -> int:
    conn = await pool.get()
    reader, writer = conn
    try:
        writer.write(REQUEST if not PATHS else b"GET /k/%d HTTP/1.1\r\nHost: bench\r\n\r\n" % next(PATHS))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        if length:
            await asyncio.wait_for(reader.readexactly(length), timeout)
    except BaseException:
        writer.close()
        pool.opened -= 1
        raise
    pool.put(conn)
    return status


async def run(port: int, rate: int, seconds: float, timeout: float) -> dict:
    pool = Pool(port, cap=512)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors = 0
    interval = 1.0 / rate
    total = int(rate * seconds)
    start = time.perf_counter() + 0.05
    tasks = []

    async def fire(due: float) -> None:
        nonlocal errors
        try:
            status = await one(pool, timeout)
        except Exception:
            errors += 1
            return
        latencies.append(time.perf_counter() - due)
        statuses[status] = statuses.get(status, 0) + 1

    for i in range(total):
        due = start + i * interval
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(fire(due)))
    await asyncio.wait_for(asyncio.gather(*tasks), timeout + 5)
    elapsed = time.perf_counter() - start
    for reader_writer in pool.idle:
        reader_writer[1].close()
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else float("nan")

    return {
        "sent": total, "statuses": statuses, "errors": errors, "rate": len(latencies) / elapsed,
        "p50": pct(0.50), "p90": pct(0.90), "p99": pct(0.99), "max": latencies[-1] * 1000 if latencies else float("nan"),
        "connections": pool.opened,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wasm", action="append", required=True, metavar="NAME=PATH", help="a filter build (repeatable)")
    parser.add_argument("--rate", type=int, default=2000, help="requests per second (default 2000)")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per build (default 20)")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load before measuring (default 3)")
    parser.add_argument("--rounds", type=int, default=1, help="alternate the builds this many times (default 1)")
    parser.add_argument("--timeout", type=float, default=5.0, help="per-request timeout, seconds")
    parser.add_argument("--sidecar", default=None, help="sidecar binary (default: the debug build the tests use)")
    parser.add_argument("--paths", type=int, default=0, help="key the rule by path and spread the load over N paths (default: one bucket, keyed by client IP)")
    args = parser.parse_args()
    if args.paths:
        global PATHS
        PATHS = itertools.cycle(range(args.paths))
    builds = [tuple(w.split("=", 1)) for w in args.wasm]
    with tempfile.TemporaryDirectory(prefix="strict-latency-") as tmp:
        work = Path(tmp)
        redis = RedisServer.throw_away(work / "redis")
        sidecar = SidecarProcess(work / "sidecar", redis_url=redis.url, binary=args.sidecar).start()
        try:
            print(f"open loop {args.rate} req/s, {args.seconds:g} s per build, one Envoy worker, sidecar on Redis")
            for round_ in range(args.rounds):
                for name, path in builds:
                    cfg = config.tollgate(filter_config("path" if args.paths else "client_ip"), wasm=Path(path), sidecar_port=sidecar.port)
                    envoy = Envoy(cfg, work / f"{name}-{round_}", concurrency=1, name=name).start()
                    try:
                        asyncio.run(run(envoy.port, args.rate, args.warmup, args.timeout))
                        r = asyncio.run(run(envoy.port, args.rate, args.seconds, args.timeout))
                        calls = {k.rsplit(".", 1)[1]: v for k, v in envoy.stats("cluster.tollgate_sidecar.upstream_").items()
                                 if k.endswith(("upstream_rq_total", "upstream_cx_total", "upstream_rq_pending_total"))}
                    finally:
                        envoy.stop()
                    print(f"{name:>8}: sent {r['sent']} answered {r['statuses']} errors {r['errors']} "
                          f"rate {r['rate']:.0f}/s p50 {r['p50']:.2f} ms p90 {r['p90']:.2f} ms "
                          f"p99 {r['p99']:.2f} ms max {r['max']:.1f} ms (connections {r['connections']}; to the sidecar {calls})",
                          flush=True)
        finally:
            sidecar.stop()
            redis.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
