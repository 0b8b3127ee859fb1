"""The load tools of `bench/filter/run` and what the figures need from them.

Closed loop: wrk (as many requests as Envoy can take on 32 connections) gives req/s, and the
Envoy process's CPU time over the same span gives µs per request. Open loop: oha sends a fixed
rate whatever the answers' speed, and with --latency-correction times each request from when it
was due rather than from when it was sent (no coordinated omission), which gives p50/p99.
"""

from tests.harness import load_tools


def wrk(opts, url, seconds):
    """Closed loop for `seconds` on opts.connections connections, pinned to opts.load_core:
    requests, req/s and wrk's own CPU seconds (tests.harness.load_tools.wrk)."""
    return load_tools.wrk(url, seconds, connections=opts.connections, headers=[opts.header],
                          core=opts.load_core, binary=opts.wrk)


def oha(opts, url):
    """Open loop at opts.rate req/s for opts.duration s, pinned to opts.load_core: p50/p99 in
    µs and the statuses (tests.harness.load_tools.oha)."""
    return load_tools.oha(url, opts.duration, rate=opts.rate, connections=opts.connections,
                          headers=[opts.header], core=opts.load_core, binary=opts.oha)
