"""Memory under a key flood: Envoy's RSS before and after clients rotate through distinct keys.

Shared data in Proxy-Wasm hosts has no delete, so one entry per client key would grow Envoy
without bound. Tollgate keeps its buckets in a fixed table of `state_slots` shared-data slots;
this measures that the bound holds: two floods of N distinct client IPs (via a trusted
X-Forwarded-For) and N distinct API keys each, with Envoy's VmRSS read before, after the
first flood and after the second. A bounded design grows during the first flood (the table
and V8 warm up) and stays flat during the second.

Run from the repository root after scripts/setup: `.venv/bin/python bench/flood.py
[--keys 1000000]`. Loopback only; each wrk run is bounded in time (30 s) and the floods in count.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(__file__))
from envoys import free_ports  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

POLICY = {
    "identity": {"api_key_header": "x-api-key", "client_ip": {"xff_trusted_hops": 1}},
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


def bootstrap(port, admin_port, wasm):
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {"listeners": [{
            "name": "flood",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": "ingress",
                    "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                        {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok"}}}]}]},
                    "http_filters": [
                        {"name": "envoy.filters.http.wasm", "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
                            "config": {"name": "tollgate", "root_id": "tollgate",
                                       "vm_config": {"vm_id": "tollgate", "runtime": "envoy.wasm.runtime.v8",
                                                     "code": {"local": {"filename": wasm}}},
                                       "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                                         "value": json.dumps(POLICY)}}}},
                        {"name": "envoy.filters.http.router", "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
                    ]}}]}]}]},
    }


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def flood(port, keys, offset, script, seconds):
    env = dict(os.environ, FLOOD_OFFSET=str(offset))
    # wrk has no request-count limit: bound it by time, then check how many keys were sent.
    out = subprocess.run(["wrk", "-t2", "-c32", f"-d{seconds}s", "-s", script, f"http://127.0.0.1:{port}/"],
                         env=env, capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if "requests in" in line:
            return int(line.split()[0])
    raise RuntimeError(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000, help="distinct keys per flood (at least)")
    parser.add_argument("--envoy", default=os.environ.get("ENVOY_BIN", os.path.join(ROOT, ".venv/bin/envoy")))
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk is missing: apt-get install -y wrk")
    wasm = os.path.join(ROOT, "target/wasm32-wasip1/release/tollgate_filter.wasm")
    work = tempfile.mkdtemp(prefix="tollgate-flood-")
    port, admin = free_ports(2)
    with open(os.path.join(work, "envoy.json"), "w") as f:
        json.dump(bootstrap(port, admin, wasm), f)
    with open(os.path.join(work, "flood.lua"), "w") as f:
        f.write(LUA)
    envoy = subprocess.Popen([args.envoy, "-c", os.path.join(work, "envoy.json"), "--concurrency", "2",
                              "--use-dynamic-base-id", "-l", "warning", "--log-path", os.path.join(work, "envoy.log")])
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{admin}/ready", timeout=1).status == 200:
                    break
            except OSError:
                if time.monotonic() > deadline or envoy.poll() is not None:
                    sys.exit(f"Envoy did not start; see {work}/envoy.log")
                time.sleep(0.1)
        urllib.request.urlopen(f"http://127.0.0.1:{port}/warm").read()
        before = rss_mib(envoy.pid)
        rows = [("before", 0, before)]
        sent = 0
        for name in ("after flood 1", "after flood 2"):
            target = sent + args.keys
            while sent < target:
                sent += flood(port, args.keys, sent, os.path.join(work, "flood.lua"), seconds=30)
            rows.append((name, sent, rss_mib(envoy.pid)))
        print(f"| moment | distinct client IPs (and API keys) so far | Envoy RSS |")
        print(f"| --- | --- | --- |")
        for name, keys, rss in rows:
            print(f"| {name} | {keys:,} | {rss:.1f} MiB |")
        growth_2 = rows[2][2] - rows[1][2]
        print(f"\nsecond flood grew RSS by {growth_2:+.1f} MiB "
              f"({growth_2 * 1024 * 1024 / max(1, rows[2][1] - rows[1][1]):.2f} B per new key)")
    finally:
        envoy.terminate()
        envoy.wait(timeout=10)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
