"""The Envoy bootstraps and Tollgate configurations of `bench/sidecar` (parts 2–4).

Every Envoy is one listener with a `direct_response` route (no upstream), Tollgate (or nothing)
in front of the router, and a `tollgate_sidecar` cluster pointing at the sidecar under test.
"""

import copy
import json

from configs import _wasm_filter

SIDECAR_CLUSTER = "tollgate_sidecar"
# Far above anything these runs send, so no rule of parts 2 and 3 ever refuses.
HUGE = 1_000_000_000
# What part 3's and part 4's requests carry.
API_KEY_HEADER = "x-api-key"
ENTERPRISE_KEY = "key-ent-0001"  # a tenant of the shared fixture
BENCH_KEY = "key-bench-0001"  # part 4's one tenant


def sidecar_block(sync_interval_ms=200):
    return {"cluster": SIDECAR_CLUSTER, "authority": "tollgate-sidecar", "timeout_ms": 1000,
            "sync_interval_ms": sync_interval_ms}


def one_rule(scope):
    """Part 2: one fixed_window rule of 10⁹ an hour keyed by path (the load spreads over many
    paths, so many buckets), `local` or `strict`. failure_mode closed: a failed sidecar call is
    a 503, which the response checks catch, never a silent admission."""
    return {
        "headers": "draft-6",
        "failure_mode": "closed",
        "sidecar": sidecar_block(),
        "rules": [{"name": "bench", "key": ["path"], "algorithm": "fixed_window", "limit": HUGE,
                   "window": "1h", "scope": scope}],
    }


def fixture_never_refusing(fixture_path, all_local=False):
    """Part 3: the shared fixture as it is (per-tenant `global`, reports `strict`), with the
    limits of the rules that match every request and every plan raised to 10⁹ a minute (their
    bursts then default to that) so that the load is never refused; `all_local` makes every
    rule's scope `local` and changes nothing else."""
    with open(fixture_path) as f:
        config = json.load(f)
    config = copy.deepcopy(config)
    for plan in config.get("plans", {}).values():
        plan["requests_per_minute"] = HUGE
    for rule in config["rules"]:
        if "match" not in rule:
            if rule.get("limit") != "plan":
                rule["limit"] = HUGE
            rule.pop("burst", None)
        if all_local:
            rule["scope"] = "local"
    config["failure_mode"] = "closed"
    return config


def overshoot_rule(sync_interval_ms, algorithm, limit, window):
    """Part 4: one `global` rule on one tenant, synced every `sync_interval_ms`."""
    return {
        "headers": "none",
        "failure_mode": "open",
        "sidecar": sidecar_block(sync_interval_ms),
        "identity": {"api_key_header": API_KEY_HEADER},
        "plans": {"bench": {"requests_per_minute": HUGE}},
        "tenants": {BENCH_KEY: {"id": "t-bench", "plan": "bench"}},
        "rules": [{"name": "tenant-global", "key": ["tenant"], "algorithm": algorithm,
                   "limit": limit, "window": window, "scope": "global"}],
    }


def bootstrap(filter_config, wasm_path, sidecar_port):
    """An Envoy bootstrap: Tollgate with `filter_config` (None: no filter) → direct 200. The
    listener and admin ports are filled in by services.Envoy."""
    chain = []
    if filter_config is not None:
        chain.append(_wasm_filter("tollgate", "tollgate", wasm_path, json.dumps(filter_config)))
    chain.append({"name": "envoy.filters.http.router", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}})
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "ingress",
        "codec_type": "HTTP1",
        "use_remote_address": True,
        "route_config": {"name": "bench", "virtual_hosts": [{
            "name": "bench", "domains": ["*"],
            "routes": [{"match": {"prefix": "/"},
                        "direct_response": {"status": 200, "body": {"inline_string": "ok\n"}}}],
        }]},
        "http_filters": chain,
    }
    sidecar = {"socket_address": {"address": "127.0.0.1", "port_value": sidecar_port}}
    return {
        "static_resources": {
            "listeners": [{"name": "bench", "address": None, "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}]}],
            "clusters": [{
                "name": SIDECAR_CLUSTER, "type": "STATIC", "connect_timeout": "1s",
                "load_assignment": {"cluster_name": SIDECAR_CLUSTER,
                                    "endpoints": [{"lb_endpoints": [{"endpoint": {"address": sidecar}}]}]},
            }],
        },
    }
