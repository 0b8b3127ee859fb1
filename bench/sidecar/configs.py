"""The Envoy bootstraps and Tollgate configurations of `bench/sidecar` (parts 2–4).

Every Envoy is one listener with a `direct_response` route (no upstream), Tollgate (or nothing)
in front of the router, and a `tollgate_sidecar` cluster pointing at the sidecar under test.
"""

from bench.common import fixture
from tests.harness import config as envoy_config

SIDECAR_CLUSTER = envoy_config.SIDECAR_CLUSTER
# Far above anything these runs send, so no rule of parts 2 and 3 ever refuses.
HUGE = fixture.HUGE
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
    """Part 3: the shared fixture, never refusing (see bench.common.fixture)."""
    return fixture.never_refusing(fixture_path, all_local=all_local)


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
    """An Envoy bootstrap: Tollgate with `filter_config` (None: no filter) → direct 200, its
    sidecar cluster at `sidecar_port`. Listener and admin on port 0 (the harness reads them)."""
    chain = [] if filter_config is None else [envoy_config.wasm_filter(filter_config, wasm=wasm_path)]
    return envoy_config.bootstrap(http_filters=chain, routes=[envoy_config.direct(body="ok\n")],
                                  sidecar_port=sidecar_port, codec="HTTP1")
