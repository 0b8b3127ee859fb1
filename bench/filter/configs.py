"""The five Envoy configurations `bench/filter/run` compares (a–e), and those only
`bench/filter/instructions.py` measures (u, l, g, L), as Envoy bootstraps.

Every configuration is the same listener and the same direct-response route (no upstream, so
only Envoy and the filter under test are measured); they differ only in the HTTP filter placed
in front of the router. Listener and admin bind port 0: tests.harness's Envoy reads the ports.
"""

import json

from bench.common import fixture
from tests.harness import config as envoy_config
from tests.harness.paths import SHARED_FIXTURE

# What every load request carries: the path the endpoint rule matches and a configured API key.
REQUEST_PATH = "/api/items"
API_KEY = "key-bench-0001"
API_KEY_HEADER = "x-api-key"

# Numbers far above anything one Envoy worker can serve (≈ 60k req/s), so (d) never refuses.
HUGE = 100_000_000


def tollgate_serving():
    """(d) A realistic local configuration that never refuses: per-IP, per-tenant (plan) and one
    endpoint rule, all matching every load request, RateLimit headers (draft-6) on."""
    return {
        "headers": "draft-6",
        # As envoy/envoy.yaml: Envoy appends the peer to X-Forwarded-For (use_remote_address),
        # and the filter trusts that one hop.
        "identity": {"api_key_header": API_KEY_HEADER, "client_ip": {"xff_trusted_hops": 1}},
        "plans": {"bench": {"requests_per_minute": HUGE}},
        "tenants": {API_KEY: {"id": "t-bench", "plan": "bench"}},
        "rules": [
            {"name": "per-ip", "key": ["client_ip"], "algorithm": "token_bucket",
             "limit": HUGE, "window": "1m", "scope": "local"},
            {"name": "per-tenant", "key": ["tenant"], "algorithm": "token_bucket",
             "limit": "plan", "window": "1m", "scope": "local"},
            {"name": "items", "key": ["tenant", "path"], "match": {"path_prefix": "/api/items"},
             "algorithm": "fixed_window", "limit": HUGE, "window": "1m", "scope": "local"},
        ],
    }


def tollgate_refusing():
    """(e) The same rules, but the tenant's window admits one request a day: the first request
    (the start-up probe) is admitted, every later one is refused with 429."""
    config = tollgate_serving()
    config["rules"][1] = {"name": "per-tenant", "key": ["tenant"], "algorithm": "fixed_window",
                          "limit": 1, "window": "1d", "scope": "local"}
    return config


def tollgate_metering(request_log=False):
    """(u) (d) with usage metering on: a sidecar is configured (usage is on by default then) and
    every request is metered. What is measured is the per-request cost of metering, so no batch
    goes out during the run: the interval is the longest allowed (60 s; a callgrind run sends
    its 400 requests within seconds of start-up), and the sidecar cluster points at a closed
    port anyway. (At the default 1 s interval a callgrind run, ~100x slower than Envoy, would
    charge one batch per ~150 requests instead of one per thousands at real rates.)
    `request_log`: also keep the detailed request log (`usage.request_log`)."""
    config = tollgate_serving()
    config["sidecar"] = {"cluster": envoy_config.SIDECAR_CLUSTER, "timeout_ms": 100}
    config["usage"] = {"interval_ms": 60_000}
    if request_log:
        config["usage"]["request_log"] = True
    return config


def wasm_filter(root_id, wasm_path, configuration):
    """A Proxy-Wasm filter from `wasm_path` with `configuration` (a dict, sent as JSON, or text)."""
    return envoy_config.wasm_filter(configuration, wasm=wasm_path, root_id=root_id)


def _native_local_ratelimit():
    hundred = {"default_value": {"numerator": 100, "denominator": "HUNDRED"}}
    return {
        "name": "envoy.filters.http.local_ratelimit",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
            "stat_prefix": "bench_local_rate_limit",
            "token_bucket": {"max_tokens": 1_000_000_000, "tokens_per_fill": 1_000_000_000,
                             "fill_interval": "1s"},
            "filter_enabled": dict(hundred, runtime_key="bench_local_rate_limit_enabled"),
            "filter_enforced": dict(hundred, runtime_key="bench_local_rate_limit_enforced"),
        },
    }


# name → (one-line description, expected status of the load requests)
CONFIGS = {
    "a": ("no filter", 200),
    "b": ("native local_ratelimit, never refuses", 200),
    "c": ("do-nothing Rust wasm filter", 200),
    "d": ("Tollgate, 3 local rules, never refuses", 200),
    "e": ("Tollgate, refusing every request", 429),
}


def tollgate_fixture(all_local):
    """(g)/(L): the shared fixture as `bench/sidecar` part 3 runs it (never refusing; its
    per-tenant rule `global`, or every rule `local`), usage batches held for the run (60 s)."""
    config = fixture.never_refusing(SHARED_FIXTURE, all_local=all_local)
    config["usage"] = {"interval_ms": 60_000}
    return config


def api_key(name):
    """The `x-api-key` the load of configuration `name` carries."""
    return "key-ent-0001" if name in ("g", "L") else API_KEY


def http_filters(name, noop_wasm, tollgate_wasm):
    """The filter chain for configuration `name` in front of the router."""
    tollgate = {"d": tollgate_serving, "e": tollgate_refusing, "u": tollgate_metering,
                "l": lambda: tollgate_metering(True), "g": lambda: tollgate_fixture(False),
                "L": lambda: tollgate_fixture(True)}
    if name == "a":
        return []
    if name == "b":
        return [_native_local_ratelimit()]
    if name == "c":
        return [wasm_filter("noop", noop_wasm, "")]
    return [wasm_filter("tollgate", tollgate_wasm, json.dumps(tollgate[name]()))]


def bootstrap(name, noop_wasm, tollgate_wasm, filters=None):
    """A complete Envoy bootstrap for configuration `name` (or the chain `filters` instead);
    the sidecar cluster of (u), (l), (g), (L) points at a closed port (9): no sidecar answers."""
    return envoy_config.bootstrap(
        http_filters=filters if filters is not None else http_filters(name, noop_wasm, tollgate_wasm),
        routes=[envoy_config.direct(body="ok\n")],
        codec="HTTP1",
    )
