"""The load tools of `bench/filter/run` and what the figures need from them.

Closed loop: wrk (as many requests as Envoy can take on 32 connections) gives req/s, and the
Envoy process's CPU time over the same span gives µs per request. Open loop: oha sends a fixed
rate whatever the answers' speed, and with --latency-correction times each request from when it
was due rather than from when it was sent (no coordinated omission), which gives p50/p99.
"""

import json

from bench.common.measure import BenchError
from tests.harness import load_tools


def wrk(opts, url, seconds):
    """Closed loop for `seconds` on opts.connections connections, pinned to opts.load_core:
    requests, req/s and wrk's own CPU seconds (tests.harness.load_tools.wrk)."""
    return load_tools.wrk(url, seconds, connections=opts.connections, headers=[opts.header],
                          core=opts.load_core, binary=opts.wrk)


def oha(opts, url):
    """Open loop at opts.rate req/s for opts.duration s: returns p50/p99 in µs and the statuses."""
    cmd = ["taskset", "-c", str(opts.load_core), opts.oha, "--no-tui", "--output-format", "json",
           "--worker-threads", "1",
           "-z", f"{opts.duration}s", "-c", str(opts.connections), "-q", str(opts.rate),
           "--latency-correction", "--wait-ongoing-requests-after-deadline", "-H", opts.header, url]
    out = load_tools.run(cmd, timeout=opts.duration + 60)
    try:
        result = json.loads(out)
        percentiles = result["latencyPercentiles"]
        statuses = {int(k): v for k, v in result["statusCodeDistribution"].items()}
        errors = result.get("errorDistribution", {})
        achieved = result["summary"]["requestsPerSec"]
    except (ValueError, KeyError, TypeError) as e:
        raise BenchError(f"cannot read oha's JSON ({e}):\n{out[:2000]}") from e
    return {
        "p50_us": percentiles["p50"] * 1e6,
        "p99_us": percentiles["p99"] * 1e6,
        "statuses": statuses,
        "errors": errors,
        "achieved_rps": achieved,
    }
