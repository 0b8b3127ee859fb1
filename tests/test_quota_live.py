"""A monthly quota cut off from live usage, measured: how far past its quota does a tenant get?

A tenant on `overage: block` with a small `monthly_quota` sends a bounded, paced load through
two real Envoys sharing one real sidecar. The sidecar flushes usage only once an hour here, so
nothing reaches `api_usage_daily` during the test: the quota job must count the usage that is
still in the live store (`LiveUsage`), and the filter refuses with `429 quota_exceeded` once the
registry feed says the quota is used up. The overshoot (requests admitted past the quota) is
bounded by

    rate × (usage batch interval + quota job interval + registry poll interval + slack)

where slack (0.5 s) covers one quota round, the HTTP hops and a loaded machine. The test
prints the measured figure (run with `-s` to see it) and checks the bound; the usage API's
`/v1/usage/period` answers the same count (unflushed: every admitted request, exactly) against
the plan's monthly quota.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from harness import config, http, policy
from harness.sidecar import SidecarProcess
from harness.wait import until

ADMIN = "admin-token-quota-live"
NODE_TOKEN = "node-token-quota-live"
QUOTA = 100
RATE = 100.0  # requests per second, both nodes together
MAX_SECONDS = 10.0  # the load never runs longer than this
USAGE_INTERVAL_S = 0.2
QUOTA_INTERVAL_S = 0.25
REGISTRY_INTERVAL_S = 0.2
SLACK_S = 0.5


def call(url: str, method: str, path: str, body: Any = None, token: str = ADMIN) -> tuple[int, Any]:
    return http.json_call(url, method, path, body, token)


def flushed_rows(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT count(*) FROM api_usage_daily").fetchone()[0]


def test_a_block_quota_is_cut_off_from_unflushed_usage(start_envoy, tmp_path: Path) -> None:
    sidecar = SidecarProcess(tmp_path / "sidecar", env={
        "TOLLGATE_ADMIN_TOKEN": ADMIN,
        "TOLLGATE_NODE_TOKEN": NODE_TOKEN,
        "TOLLGATE_FLUSH_INTERVAL": "1h",
        "TOLLGATE_QUOTA_INTERVAL": f"{int(QUOTA_INTERVAL_S * 1000)}ms",
    }).start()
    try:
        url = sidecar.url
        plan = {"requests_per_minute": 100_000, "monthly_quota": QUOTA, "overage": "block"}
        assert call(url, "PUT", "/v1/admin/plans/capped", plan)[0] == 201
        assert call(url, "PUT", "/v1/admin/tenants/acme", {"plan": "capped"})[0] == 201
        status, created = call(url, "POST", "/v1/admin/tenants/acme/keys")
        assert status == 201, created
        key = created["key"]
        rule = policy.rule("per-tenant", "token_bucket", "plan", "1m", key=["tenant"])
        filter_config = policy.config(
            rule,
            sidecar={"cluster": config.SIDECAR_CLUSTER, "authority": "tollgate-sidecar", "token": NODE_TOKEN},
            usage={"interval_ms": int(USAGE_INTERVAL_S * 1000)},
            registry={"enabled": True, "interval_ms": int(REGISTRY_INTERVAL_S * 1000), "unknown_key": "reject"},
        )
        text = json.dumps(filter_config)
        nodes = [start_envoy(config.tollgate(text, sidecar_port=sidecar.port), name=f"node{i}") for i in range(2)]
        headers = {"x-api-key": key}
        # Each node admits the key once it follows the registry (401 before); those admitted
        # probes count like the load's.
        admitted = refused = other = 0
        for node in nodes:
            until(lambda n=node: n.get("/", headers=headers).status, lambda s: s == 200,
                  timeout=10, what="the key known on a node")
            admitted += 1
        clients = [node.client() for node in nodes]
        first_refusal = None
        started = time.monotonic()
        sent = 0
        while True:
            now = time.monotonic()
            if now - started > MAX_SECONDS:
                break
            due = started + sent / RATE
            if due > now:
                time.sleep(due - now)
            response = clients[sent % 2].get("/", headers=headers)
            sent += 1
            if response.status == 200:
                admitted += 1
            elif response.status == 429 and response.json().get("error") == "quota_exceeded":
                refused += 1
                first_refusal = first_refusal or time.monotonic()
            else:
                other += 1
            # Stop half a second after the first quota refusal (both nodes have had their
            # chance to learn it by then, or the count below says they have not).
            if first_refusal and time.monotonic() - first_refusal > 0.5:
                break
        elapsed = time.monotonic() - started
        rate = sent / elapsed
        overshoot = admitted - QUOTA
        bound = rate * (USAGE_INTERVAL_S + QUOTA_INTERVAL_S + REGISTRY_INTERVAL_S + SLACK_S)
        print(f"\nquota {QUOTA}, {sent} requests in {elapsed:.2f} s ({rate:.0f}/s over 2 nodes): "
              f"{admitted} admitted, {refused} refused (quota_exceeded), {other} other; "
              f"overshoot {overshoot} (bound {bound:.0f})")
        assert other == 0, (admitted, refused, other)
        assert first_refusal is not None, f"no quota refusal in {MAX_SECONDS} s ({admitted} admitted)"
        assert 0 <= overshoot <= bound, (overshoot, bound)
        # Nothing was flushed: the cut-off came from unflushed usage.
        assert flushed_rows(sidecar.workdir / "tollgate.db") == 0
        # After the cut-off, both nodes refuse.
        for client in clients:
            response = client.get("/", headers=headers)
            assert response.status == 429 and response.json()["error"] == "quota_exceeded", response

        # The usage API counts the same unflushed requests, against the plan's monthly quota.
        def period() -> dict:
            return call(url, "GET", "/v1/usage/period", token=key)[1]

        # Admitted requests are metered; the filter's quota refusals are not.
        body = until(period, lambda b: b["requests"] == admitted, timeout=5,
                     what=f"the usage API counting the {admitted} admitted requests")
        assert (body["quota"], body["quota_source"], body["overage"]) == (QUOTA, "monthly_quota", "block"), body
        assert flushed_rows(sidecar.workdir / "tollgate.db") == 0
    finally:
        sidecar.stop()
