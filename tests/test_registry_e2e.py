"""The registry end to end: the real sidecar's admin API, two real Envoys following its feed.

Plans, tenants and API keys are made through the sidecar's admin API (on SQLite, and on a
throw-away PostgreSQL); two Envoys (the "nodes") share that sidecar and follow its registry
without a restart. Every change must show on both nodes within 2 s:

- a key gets its plan's limit (`429 rate_limit_exceeded` beyond it), a bigger plan gives the
  higher limit, a suspended tenant gets `403 tenant_suspended`, a revoked key `401
  invalid_api_key` (`unknown_key: reject`);
- a used-up monthly quota (`overage: block`, counted by the sidecar's quota job from flushed
  usage) gets `429 quota_exceeded` with `Retry-After` and a `quota` RateLimit policy, while
  `overage: bill` is admitted past it. Re-admission in the next period is covered by the
  sidecar's unit tests, which move an injectable clock; it is not faked here;
- the sidecar takes node tokens `t1,t2`, the filter sends `t2`: everything works, while a
  forged `POST /v1/usage` or `/v1/sync` without a token or with a wrong one gets `401` and
  counts nothing;
- no plain key made in a test is found in the SQLite files, a dump of the PostgreSQL
  database, or any captured log.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from harness import config, http, policy
from harness.envoy import Envoy
from harness.postgres import Postgres, find_binary
from harness.sidecar import SidecarProcess
from harness.wait import until

ADMIN = "admin-token-e2e"
NODE_TOKENS = "t1,t2"
FILTER_TOKEN = "t2"
PROPAGATION_S = 2.0
NODES = 2


class Api:
    """JSON calls to the sidecar: (status, parsed body or None)."""

    def __init__(self, sidecar: SidecarProcess) -> None:
        self.url = sidecar.url

    def call(self, method: str, path: str, body: Any = None, token: str | None = ADMIN) -> tuple[int, Any]:
        return http.json_call(self.url, method, path, body, token)

    def put_plan(self, name: str, **plan: Any) -> None:
        status, body = self.call("PUT", f"/v1/admin/plans/{name}", plan)
        assert status in (200, 201), (status, body)

    def put_tenant(self, tid: str, plan: str, **more: Any) -> None:
        status, body = self.call("PUT", f"/v1/admin/tenants/{tid}", {"plan": plan, **more})
        assert status in (200, 201), (status, body)
        assert body["plan"] == plan, body

    def new_key(self, tid: str) -> tuple[str, str]:
        status, body = self.call("POST", f"/v1/admin/tenants/{tid}/keys")
        assert status == 201, (status, body)
        return body["key_id"], body["key"]

    def tenant(self, tid: str) -> dict:
        status, body = self.call("GET", f"/v1/admin/tenants/{tid}")
        assert status == 200, (status, body)
        return body


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request) -> Iterator[Postgres | None]:
    """The sidecar's database: None (its SQLite file in its working directory) or a throw-away
    PostgreSQL."""
    if request.param == "sqlite":
        yield None
        return
    # PostgreSQL runs as the `postgres` user when the tests run as root: pytest's tmp_path is
    # private to root, so the server gets a directory of its own that it can enter.
    workdir = tempfile.mkdtemp(prefix="tollgate-registry-pg-")
    os.chmod(workdir, 0o755)
    server = Postgres(workdir)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def start_sidecar(workdir: Path, database_url: str | None = None) -> SidecarProcess:
    env = {
        "TOLLGATE_ADMIN_TOKEN": ADMIN,
        "TOLLGATE_NODE_TOKEN": NODE_TOKENS,
        "TOLLGATE_FLUSH_INTERVAL": "1s",
        "TOLLGATE_QUOTA_INTERVAL": "1s",
    }
    if database_url:
        env["TOLLGATE_DATABASE_URL"] = database_url
    return SidecarProcess(workdir, env=env).start()


def filter_config() -> dict:
    # A token bucket of the plan's rate per minute: its capacity is the plan's
    # requests_per_minute, refilled at one request every 60/rpm s.
    rule = policy.rule("per-tenant", "token_bucket", "plan", "1m", key=["tenant"])
    return policy.config(
        rule,
        sidecar={"cluster": config.SIDECAR_CLUSTER, "authority": "tollgate-sidecar", "token": FILTER_TOKEN},
        usage={"interval_ms": 200},
        registry={"enabled": True, "interval_ms": 200, "unknown_key": "reject"},
        headers="draft-8",
    )


def start_nodes(start_envoy, sidecar: SidecarProcess) -> list[Envoy]:
    text = json.dumps(filter_config())
    return [start_envoy(config.tollgate(text, sidecar_port=sidecar.port), name=f"node{i}") for i in range(NODES)]


def probe_all(nodes: list[Envoy], api_key: str) -> list:
    return [n.get("/", headers={"x-api-key": api_key}) for n in nodes for _ in range(2)]


def seen_everywhere(nodes: list[Envoy], api_key: str, ok, what: str, started: float, every=all) -> list:
    """On every node, `every` (all, or any) of its answers shows `ok` within PROPAGATION_S of
    `started`; the delay is printed."""

    def shown(responses: list) -> bool:
        per_node = len(responses) // len(nodes)
        return all(every(ok(r) for r in responses[i * per_node:(i + 1) * per_node]) for i in range(len(nodes)))

    found = until(lambda: probe_all(nodes, api_key), shown, timeout=PROPAGATION_S + 5, what=what, interval=0.05)
    elapsed = time.monotonic() - started
    print(f"propagation: {what}: {elapsed:.3f} s")
    assert elapsed <= PROPAGATION_S, f"{what}: took {elapsed:.2f} s"
    return found


def policy_limit(response, name: str) -> int | None:
    """`q=` of the policy `name` in a draft-8 `RateLimit-Policy`."""
    for item in (response.header("ratelimit-policy") or "").split(","):
        if item.strip().startswith(f'"{name}"'):
            for param in item.split(";"):
                if param.strip().startswith("q="):
                    return int(param.strip()[2:])
    return None


def assert_keys_nowhere(keys: list[str], files: list[Path]) -> None:
    """No plain key in any of `files` (SQLite database files, captured logs)."""
    checked = [f for f in files if f.exists()]
    assert checked, files
    for path in checked:
        data = path.read_bytes()
        for key in keys:
            assert key.encode() not in data, f"a plain key in {path}"


def pg_dump(server: Postgres, into: Path) -> Path:
    """Every table of `server`'s database as SQL text, in `into`."""
    done = subprocess.run([find_binary("pg_dump"), "-h", "127.0.0.1", "-p", str(server.port), "-U", "postgres",
                           "-d", "postgres", "-f", str(into)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert b"api_keys" in into.read_bytes(), "the dump has no api_keys table"
    return into


def captured_logs(sidecar: SidecarProcess, nodes: list[Envoy]) -> list[Path]:
    return [sidecar.log_path, *(n.log_path for n in nodes)]


def sqlite_files(sidecar: SidecarProcess) -> list[Path]:
    return sorted(sidecar.workdir.glob("*.db*"))


def test_plans_keys_and_suspension_follow_on_both_nodes(start_envoy, backend, tmp_path: Path) -> None:
    sidecar = start_sidecar(tmp_path / "sidecar", backend.url if backend else None)
    try:
        api = Api(sidecar)
        api.put_plan("small", requests_per_minute=5)
        api.put_plan("big", requests_per_minute=1000)
        api.put_tenant("acme", "small")
        key_id, key = api.new_key("acme")
        nodes = start_nodes(start_envoy, sidecar)
        headers = {"x-api-key": key}

        # The plan's limit on each node: 5 admitted, the 6th refused.
        for node in nodes:
            first = until(lambda n=node: n.get("/", headers=headers), lambda r: r.status == 200,
                          timeout=10, what="the key known on a node")
            assert policy_limit(first, "per-tenant") == 5, first
            statuses = [node.get("/", headers=headers) for _ in range(5)]
            assert [r.status for r in statuses[:4]] == [200] * 4, statuses
            refused = statuses[4]
            assert refused.status == 429 and refused.json()["error"] == "rate_limit_exceeded", refused

        started = time.monotonic()
        api.put_tenant("acme", "big")
        # The new limit in the headers, and admitted again: the bucket emptied under the old
        # plan refills at the new rate (one request every 60 ms instead of every 12 s).
        seen_everywhere(nodes, key, lambda r: policy_limit(r, "per-tenant") == 1000, "the plan upgraded", started)
        seen_everywhere(nodes, key, lambda r: r.status == 200, "admitted under the upgraded plan", started, every=any)
        # Well beyond the old limit (5 a minute, the next one 12 s after a refusal): 10 more
        # admitted on each node within a few seconds.
        admitted = [0] * NODES

        def more() -> list[int]:
            for i, node in enumerate(nodes):
                admitted[i] += node.get("/", headers=headers).status == 200
            return admitted

        until(more, lambda a: min(a) >= 10, timeout=5, what="10 more admitted on each node", interval=0.1)

        started = time.monotonic()
        api.put_tenant("acme", "big", status="suspended")
        seen_everywhere(nodes, key, lambda r: r.status == 403, "the tenant suspended", started)
        body = nodes[1].get("/", headers=headers).json()
        assert (body["error"], body["tenant"]) == ("tenant_suspended", "acme"), body

        started = time.monotonic()
        api.put_tenant("acme", "big", status="active")
        seen_everywhere(nodes, key, lambda r: r.status == 200, "the tenant reactivated", started)

        started = time.monotonic()
        status, _ = api.call("DELETE", f"/v1/admin/keys/{key_id}")
        assert status == 204, status
        seen_everywhere(nodes, key, lambda r: r.status == 401, "the key revoked", started)
        body = nodes[0].get("/", headers=headers).json()
        assert body["error"] == "invalid_api_key", body
    finally:
        sidecar.stop()
    files = captured_logs(sidecar, nodes)
    if backend is None:
        files += sqlite_files(sidecar)
        stored = b"".join(f.read_bytes() for f in sqlite_files(sidecar))
        assert key[:11].encode() in stored, "the key's shown prefix is stored: these are the right files"
    else:
        files.append(pg_dump(backend, tmp_path / "postgres.sql"))
    assert_keys_nowhere([key], files)


def usage_rows(db: Path) -> dict[str, int]:
    """Requests per tenant in api_usage_daily ({} before the table has any)."""
    try:
        with sqlite3.connect(db) as conn:
            found = conn.execute("SELECT tenant_id, SUM(requests) FROM api_usage_daily GROUP BY tenant_id").fetchall()
    except sqlite3.Error:
        return {}
    return {tenant: int(total) for tenant, total in found}


def forge(sidecar: SidecarProcess) -> None:
    """Usage and sync batches without the node token or with a wrong one: 401 each; a node
    token the sidecar takes (t1, not the filter's) reads the feed."""
    api = Api(sidecar)
    today = time.strftime("%Y-%m-%d", time.gmtime())
    usage = {"sender": 77, "seq": 1, "records": [{"tenant": "forged", "date": today, "endpoint": "GET *", "requests": 1000}]}
    sync = {"sender": 77, "node": 0, "seq": 1, "entries": []}
    for token in (None, "wrong", "t3", ADMIN):
        for path, body in (("/v1/usage", usage), ("/v1/sync", sync)):
            status, answer = api.call("POST", path, body, token=token)
            assert status == 401, (path, token, status, answer)
    status, feed = api.call("GET", "/v1/registry?since=0", token="t1")
    assert status == 200 and feed["full"] is True, (status, feed)


def test_quota_and_node_token(start_envoy, tmp_path: Path) -> None:
    sidecar = start_sidecar(tmp_path / "sidecar")
    try:
        api = Api(sidecar)
        api.put_plan("capped", requests_per_minute=1000, monthly_quota=5, overage="block")
        api.put_plan("metered", requests_per_minute=1000, monthly_quota=5, overage="bill")
        api.put_tenant("acme", "capped")
        api.put_tenant("beta", "metered")
        _, acme_key = api.new_key("acme")
        _, beta_key = api.new_key("beta")
        forge(sidecar)
        nodes = start_nodes(start_envoy, sidecar)
        acme, beta = {"x-api-key": acme_key}, {"x-api-key": beta_key}
        for node in nodes:
            until(lambda n=node: n.get("/", headers=acme), lambda r: r.status == 200,
                  timeout=10, what="the key known on a node")
        for node in nodes:  # up to the quota of 5 (2 above), and beta past it
            assert [node.get("/", headers=acme).status for _ in range(2)] == [200, 200]
            assert [node.get("/", headers=beta).status for _ in range(4)] == [200] * 4

        refused = until(lambda: probe_all(nodes, acme_key), lambda rs: all(r.status == 429 for r in rs),
                        timeout=15, what="the quota used up on both nodes", interval=0.2)
        acme_now = api.tenant("acme")
        assert acme_now["usage"]["quota_exhausted"] is True, acme_now
        period_end = acme_now["period"]["end"]
        for response in refused:
            body = response.json()
            assert (body["error"], body["quota"]) == ("quota_exceeded", 5), response
            # Retry-After: until the billing period ends.
            assert abs(int(response.header("retry-after") or 0) - (period_end - time.time())) <= 5, response
            assert policy_limit(response, "quota") == 5, response

        # overage: bill: beta's flushed usage is past its quota, and for longer than two runs
        # of the quota job (1 s each) plus the nodes' registry polls, both nodes still admit it.
        usage = until(lambda: api.tenant("beta")["usage"], lambda u: u["requests"] > 5,
                      timeout=10, what="beta's usage flushed past its quota")
        assert usage["quota_exhausted"] is False, usage  # only `overage: block` is flagged
        billed: list = []
        until_at = time.monotonic() + 3.0
        until(lambda: billed.extend(probe_all(nodes, beta_key)) or time.monotonic(), lambda t: t >= until_at,
              timeout=6, what="3 s of requests past beta's quota", interval=0.1)
        assert billed and all(r.status == 200 for r in billed), [r for r in billed if r.status != 200][:3]
        status, feed = api.call("GET", "/v1/registry?since=0", token="t1")
        flags = {t["id"]: t["quota_exhausted"] for t in feed["tenants"]}
        assert (status, flags) == (200, {"acme": True, "beta": False}), (status, feed)

        # The quota flips above came from flushes after the forgeries: none of them counted.
        db = sidecar.workdir / "tollgate.db"
        rows = until(lambda: usage_rows(db), lambda r: r.get("beta", 0) >= 8, 10, "beta's usage flushed")
        assert "forged" not in rows, rows
        assert rows.get("acme", 0) >= 5, rows
    finally:
        sidecar.stop()
    keys = [acme_key, beta_key]
    assert_keys_nowhere(keys, captured_logs(sidecar, nodes) + sqlite_files(sidecar))
