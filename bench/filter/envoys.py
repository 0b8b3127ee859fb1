"""The benchmark's Envoys (one per configuration, one worker each, all pinned to one core),
started with tests.harness's launcher, and the hand-made probe of each before any load."""

import json
from pathlib import Path

from bench.common.measure import BenchError
from bench.filter import configs
from tests.harness.envoy import Envoy


def start(name, opts, workdir):
    """Envoy serving configuration `name`, pinned to opts.envoy_core (taskset execs Envoy, so
    its PID is Envoy's: its /proc/PID/stat is what the bench reads). Not waited for yet."""
    bootstrap = configs.bootstrap(name, opts.noop_wasm, opts.tollgate_wasm)
    envoy = Envoy(bootstrap, Path(workdir), name=f"envoy-{name}", binary=opts.envoy,
                  prefix=["taskset", "-c", str(opts.envoy_core)], log_level="warning")
    envoy.config = name
    return envoy.spawn()


def get(envoy):
    """One request as the load sends it."""
    return envoy.get(configs.REQUEST_PATH, {configs.API_KEY_HEADER: configs.API_KEY})


def probe(envoy):
    """Checks by hand that the configuration does what its name says before any load."""
    name = envoy.config
    resp = get(envoy)
    if name in "abc":
        if resp.status != 200:
            raise BenchError(f"({name}) answered {resp}, expected 200")
    elif name == "d":
        if resp.status != 200 or resp.header("RateLimit-Limit") is None:
            raise BenchError(f"(d) answered {resp}: expected 200 with RateLimit-Limit")
    elif name == "e":
        # The tenant's one request a day is this first one; from the second on, all are refused.
        if resp.status != 200:
            raise BenchError(f"(e) answered {resp} to the first request of the day, expected 200")
        resp = get(envoy)
        try:
            error = json.loads(resp.body).get("error")
        except ValueError:
            error = None
        if resp.status != 429 or resp.header("Retry-After") is None or error != "rate_limit_exceeded":
            raise BenchError(f"(e) answered {resp}: expected 429 with Retry-After and error rate_limit_exceeded")
