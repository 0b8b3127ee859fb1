"""The five Envoy configurations the benchmark compares, as Envoy bootstrap JSON.

Every configuration is the same listener and the same direct-response route (no upstream, so
only Envoy and the filter under test are measured); they differ only in the HTTP filter placed
in front of the router.
"""

import json
import os

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
    config["sidecar"] = {"cluster": SIDECAR_CLUSTER, "timeout_ms": 100}
    config["usage"] = {"interval_ms": 60_000}
    if request_log:
        config["usage"]["request_log"] = True
    return config


SIDECAR_CLUSTER = "tollgate_sidecar"


def _wasm_filter(name, root_id, wasm_path, configuration):
    return {
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": name,
                "root_id": root_id,
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": configuration,
                },
                "vm_config": {
                    "vm_id": name,
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": wasm_path}},
                },
            },
        },
    }


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
    from sidecar_configs import fixture_never_refusing  # noqa: PLC0415 (bench/ on sys.path)
    fixture = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "filter", "tests",
                           "fixtures", "filter-config.json")
    config = fixture_never_refusing(fixture, all_local=all_local)
    config["usage"] = {"interval_ms": 60_000}
    return config


def api_key(name):
    """The `x-api-key` the load of configuration `name` carries."""
    return "key-ent-0001" if name in ("g", "L") else API_KEY


def http_filters(name, noop_wasm, tollgate_wasm):
    """The filter chain for configuration `name` (a–e), router last."""
    chain = {
        "a": [],
        "b": [_native_local_ratelimit()],
        "c": [_wasm_filter("noop", "noop", noop_wasm, "")],
        "d": [_wasm_filter("tollgate", "tollgate", tollgate_wasm, json.dumps(tollgate_serving()))],
        "e": [_wasm_filter("tollgate", "tollgate", tollgate_wasm, json.dumps(tollgate_refusing()))],
        "u": [_wasm_filter("tollgate", "tollgate", tollgate_wasm, json.dumps(tollgate_metering()))],
        "l": [_wasm_filter("tollgate", "tollgate", tollgate_wasm, json.dumps(tollgate_metering(True)))],
        "g": [_wasm_filter("tollgate", "tollgate", tollgate_wasm, json.dumps(tollgate_fixture(False)))],
        "L": [_wasm_filter("tollgate", "tollgate", tollgate_wasm, json.dumps(tollgate_fixture(True)))],
    }[name]
    router = {
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
    }
    return chain + [router]


def bootstrap(name, port, admin_port, noop_wasm, tollgate_wasm):
    """A complete Envoy bootstrap for configuration `name` on loopback `port`."""
    def address(p):
        return {"socket_address": {"address": "127.0.0.1", "port_value": p}}

    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "ingress",
        "codec_type": "HTTP1",
        "use_remote_address": True,
        "route_config": {
            "name": "bench",
            "virtual_hosts": [{
                "name": "bench",
                "domains": ["*"],
                "routes": [{
                    "match": {"prefix": "/"},
                    "direct_response": {"status": 200, "body": {"inline_string": "ok\n"}},
                }],
            }],
        },
        "http_filters": http_filters(name, noop_wasm, tollgate_wasm),
    }
    clusters = []
    if name in ("u", "l", "g", "L"):
        clusters.append({
            "name": SIDECAR_CLUSTER,
            "type": "STATIC",
            "connect_timeout": "0.1s",
            "load_assignment": {"cluster_name": SIDECAR_CLUSTER, "endpoints": [
                {"lb_endpoints": [{"endpoint": {"address": address(9)}}]}]},
        })
    return {
        "admin": {"address": address(admin_port)},
        "static_resources": {
            "clusters": clusters,
            "listeners": [{
                "name": "bench",
                "address": address(port),
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": hcm,
                }]}],
            }],
        },
    }
