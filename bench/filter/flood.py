"""Memory under a key flood: Envoy's RSS before and after clients rotate through distinct keys.

Shared data in Proxy-Wasm hosts has no delete, so one entry per client key would grow Envoy
without bound. Tollgate keeps its buckets in a fixed table of `state_slots` shared-data slots;
this measures that the bound holds: two floods of N distinct client IPs (via a trusted
X-Forwarded-For) and N distinct API keys each, with Envoy's VmRSS read before, after the
first flood and after the second. A bounded design grows during the first flood (the table
and V8 warm up) and stays flat during the second.

Run from the repository root after scripts/setup: `.venv/bin/python bench/filter/flood.py
[--keys 1000000]`. Loopback only; each wrk run is bounded in time (--seconds, 30) and the floods in count.
"""

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a file: the repository root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.harness import config as envoy_config  # noqa: E402
from tests.harness import load_tools  # noqa: E402
from tests.harness.envoy import Envoy  # noqa: E402
from tests.harness.paths import FILTER_WASM, REPO  # noqa: E402

POLICY = {
    # Envoy appends the peer (use_remote_address); the flood's address is the hop before it.
    "identity": {"api_key_header": "x-api-key", "client_ip": {"xff_trusted_hops": 2}},
    "rules": [
        {"name": "per-ip", "key": ["client_ip"], "algorithm": "token_bucket", "limit": 600, "window": "1m", "burst": 50},
        {"name": "per-key", "key": ["api_key"], "algorithm": "sliding_window_counter", "limit": 100, "window": "1m"},
    ],
}

# Each request carries a fresh client address (the trusted proxy's entry, rightmost) and a fresh key.
LUA = """
local threads = 0
function setup(thread)
  thread:set("id", threads)
  threads = threads + 1
end
local n = 0
local offset = tonumber(os.getenv("FLOOD_OFFSET") or "0")
request = function()
  n = n + 1
  local i = offset + n * 2 + id
  local ip = string.format("10.%d.%d.%d", math.floor(i / 65536) % 256, math.floor(i / 256) % 256, i % 256)
  wrk.headers["X-Forwarded-For"] = "6.6.6.6, " .. ip
  wrk.headers["x-api-key"] = "flood-" .. i
  return wrk.format("GET", "/api/flood")
end
"""


def bootstrap(wasm):
    return envoy_config.bootstrap(http_filters=[envoy_config.wasm_filter(POLICY, wasm=wasm)],
                                  routes=[envoy_config.direct(body="ok")])


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def flood(url, offset, script, seconds):
    """wrk has no request-count limit: bounded by time; returns how many requests (keys) it sent."""
    return load_tools.wrk(url, seconds, connections=32, threads=2, script=script,
                          env={"FLOOD_OFFSET": str(offset)})["requests"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000, help="distinct keys per flood (at least)")
    parser.add_argument("--seconds", type=int, default=30, help="the longest one wrk run may take (30)")
    parser.add_argument("--envoy", default=os.environ.get("ENVOY_BIN", str(REPO / ".venv/bin/envoy")))
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is missing: apt-get install -y wrk")
    work = tempfile.mkdtemp(prefix="tollgate-flood-")
    script = os.path.join(work, "flood.lua")
    with open(script, "w") as f:
        f.write(LUA)
    envoy = Envoy(bootstrap(FILTER_WASM), Path(work), concurrency=2, binary=args.envoy, log_level="warning")
    try:
        envoy.start(60)
        envoy.get("/warm")
        before = rss_mib(envoy.pid)
        rows = [("before", 0, before)]
        sent = 0
        for name in ("after flood 1", "after flood 2"):
            target = sent + args.keys
            while sent < target:
                sent += flood(envoy.url("/"), sent, script, seconds=args.seconds)
            rows.append((name, sent, rss_mib(envoy.pid)))
        print(f"| moment | distinct client IPs (and API keys) so far | Envoy RSS |")
        print(f"| --- | --- | --- |")
        for name, keys, rss in rows:
            print(f"| {name} | {keys:,} | {rss:.1f} MiB |")
        growth_2 = rows[2][2] - rows[1][2]
        print(f"\nsecond flood grew RSS by {growth_2:+.1f} MiB "
              f"({growth_2 * 1024 * 1024 / max(1, rows[2][1] - rows[1][1]):.2f} B per new key)")
    finally:
        envoy.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
