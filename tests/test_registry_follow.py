"""The filter follows the sidecar's registry of tenants, plans and API keys without a restart.

Two real Envoys (two workers each) load one filter configuration whose sidecar is a stand-in
feed server in this file: it serves `GET /v1/registry?since=<version>` as the sidecar does (the
whole registry for `since=0` or a version it does not know, else the changes since), answers
`401` without the node token, and records the token every call carried. The registry changes
while the Envoys run; each change must show on every node within 2 s:

- a key added works (with its plan's limit in the RateLimit headers), a revoked key gets `401`;
- a plan upgraded gives the higher limit;
- a suspended tenant gets `403 tenant_suspended`; a used-up quota (`overage: block`) gets
  `429 quota_exceeded` with `Retry-After` until the period's end and a `quota` RateLimit policy,
  while `overage: bill` is admitted;
- every call to the feed carries `Authorization: Bearer <sidecar.token>`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler
from typing import Any, Iterator
from urllib.parse import parse_qs, urlparse

import pytest

from harness import config, policy
from harness.envoy import Envoy
from harness.serve import serve_in_thread
from harness.wait import until

TOKEN = "node-token-1"
PROPAGATION_S = 2.0
NODES = 2


def sha256(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class FeedServer:
    """A stand-in for the sidecar's registry feed, on 127.0.0.1 and a port of its own."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.version = 0
        self.state: dict[str, dict[str, Any]] = {"plans": {}, "tenants": {}, "keys": {}}
        self.history: dict[int, dict[str, dict[str, Any]]] = {0: copy.deepcopy(self.state)}
        self.tokens: list[str | None] = []
        self.calls = 0
        feed = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                url = urlparse(self.path)
                auth = self.headers.get("authorization")
                with feed.lock:
                    feed.tokens.append(auth)
                    feed.calls += 1
                if auth != f"Bearer {TOKEN}":
                    return self.answer(401, {"error": "invalid_node_token"})
                if url.path != "/v1/registry":
                    return self.answer(404, {"error": "not_found"})
                since = int(parse_qs(url.query).get("since", ["0"])[0])
                self.answer(200, feed.feed(since))

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("content-length", "0")))
                with feed.lock:
                    feed.tokens.append(self.headers.get("authorization"))
                self.answer(404, {"error": "not_found"})

            def answer(self, status: int, body: Any) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *_: Any) -> None:
                pass

        self.server, self.thread = serve_in_thread(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def change(self, **changes: dict[str, Any | None]) -> None:
        """Applies `plans=`, `tenants=`, `keys=` changes (name → entry, or None to remove) as one
        new version."""
        with self.lock:
            for table, entries in changes.items():
                for name, entry in entries.items():
                    if entry is None:
                        self.state[table].pop(name, None)
                    else:
                        self.state[table][name] = entry
            self.version += 1
            self.history[self.version] = copy.deepcopy(self.state)

    def feed(self, since: int) -> dict[str, Any]:
        with self.lock:
            now = self.state
            if since == 0 or since not in self.history:
                return {
                    "version": self.version,
                    "full": True,
                    "plans": list(now["plans"].values()),
                    "tenants": list(now["tenants"].values()),
                    "keys": list(now["keys"].values()),
                }
            old = self.history[since]

            def changed(table: str) -> list[Any]:
                return [v for k, v in now[table].items() if old[table].get(k) != v]

            return {
                "version": self.version,
                "full": False,
                "plans": changed("plans"),
                "tenants": changed("tenants"),
                "keys": changed("keys"),
                "removed_keys": [v["sha256"] for k, v in old["keys"].items() if k not in now["keys"]],
                "removed_tenants": [k for k in old["tenants"] if k not in now["tenants"]],
            }


@pytest.fixture
def feed() -> Iterator[FeedServer]:
    server = FeedServer()
    yield server
    server.stop()


def plan(name: str, rpm: int, quota: int | None = None, overage: str = "block") -> dict[str, Any]:
    return {"name": name, "requests_per_minute": rpm, "burst": None, "monthly_quota": quota, "overage": overage}


def tenant(tid: str, plan_name: str, status: str = "active", exhausted: bool = False) -> dict[str, Any]:
    now = int(time.time())
    return {
        "id": tid,
        "plan": plan_name,
        "status": status,
        "period_start": now - 86_400,
        "period_end": now + 86_400,
        "quota_exhausted": exhausted,
    }


def key(plain: str, tid: str) -> dict[str, Any]:
    return {"sha256": sha256(plain), "tenant": tid, "expires_at": None}


def filter_config() -> dict:
    rule = policy.rule("per-tenant", "fixed_window", "plan", "1h", key=["tenant"])
    return policy.config(
        rule,
        sidecar={"cluster": config.SIDECAR_CLUSTER, "authority": "tollgate-sidecar", "token": TOKEN},
        usage={"enabled": False},
        registry={"unknown_key": "reject"},
        headers="draft-8",
    )


def start_nodes(start_envoy, feed: FeedServer) -> list[Envoy]:
    text = json.dumps(filter_config())
    return [
        start_envoy(config.tollgate(text, sidecar_port=feed.port), concurrency=2, name=f"node{i}")
        for i in range(NODES)
    ]


def seen_everywhere(nodes: list[Envoy], api_key: str, ok, what: str, started: float) -> None:
    """Every node (a few requests each, so both workers answer) shows `ok` within PROPAGATION_S
    of `started`."""

    def probe() -> list[Any]:
        return [n.get("/", headers={"x-api-key": api_key}) for n in nodes for _ in range(4)]

    until(probe, lambda rs: all(ok(r) for r in rs), timeout=PROPAGATION_S + 3, what=what, interval=0.05)
    elapsed = time.monotonic() - started
    assert elapsed <= PROPAGATION_S, f"{what}: took {elapsed:.2f} s"


def limit_of(response) -> int | None:
    """The per-tenant limit (per hour: 60 × the plan's rate) from a draft-8 `RateLimit-Policy`."""
    value = response.header("ratelimit-policy") or ""
    for item in value.split(","):
        if item.strip().startswith('"per-tenant"'):
            for param in item.split(";"):
                if param.strip().startswith("q="):
                    return int(param.strip()[2:])
    return None


def test_keys_and_plans_follow_on_every_node(start_envoy, feed: FeedServer) -> None:
    feed.change(plans={"basic": plan("basic", 600)}, tenants={"acme": tenant("acme", "basic")})
    nodes = start_nodes(start_envoy, feed)
    until(lambda: feed.calls, lambda c: c >= 2 * NODES, timeout=10, what="the nodes asking for the registry")
    assert all(n.get("/", headers={"x-api-key": "tg_new"}).status == 401 for n in nodes), "not issued yet"

    started = time.monotonic()
    feed.change(keys={"tg_new": key("tg_new", "acme")})
    seen_everywhere(
        nodes, "tg_new", lambda r: r.status == 200 and limit_of(r) == 600 * 60, "a new key working", started
    )

    started = time.monotonic()
    feed.change(plans={"basic": plan("basic", 1200)})
    seen_everywhere(nodes, "tg_new", lambda r: r.status == 200 and limit_of(r) == 1200 * 60, "the plan upgraded", started)

    started = time.monotonic()
    feed.change(keys={"tg_new": None})
    seen_everywhere(nodes, "tg_new", lambda r: r.status == 401, "the key revoked", started)
    refused = nodes[0].get("/", headers={"x-api-key": "tg_new"})
    assert refused.json()["error"] == "invalid_api_key", refused

    with feed.lock:
        tokens = set(feed.tokens)
    assert tokens == {f"Bearer {TOKEN}"}, tokens


def test_suspension_and_quota_follow_on_every_node(start_envoy, feed: FeedServer) -> None:
    feed.change(
        plans={"capped": plan("capped", 600, quota=1000), "metered": plan("metered", 600, quota=1000, overage="bill")},
        tenants={"acme": tenant("acme", "capped"), "beta": tenant("beta", "metered")},
        keys={"tg_acme": key("tg_acme", "acme"), "tg_beta": key("tg_beta", "beta")},
    )
    nodes = start_nodes(start_envoy, feed)
    seen_everywhere(nodes, "tg_acme", lambda r: r.status == 200, "the first registry", time.monotonic())

    started = time.monotonic()
    feed.change(tenants={"acme": tenant("acme", "capped", exhausted=True), "beta": tenant("beta", "metered", exhausted=True)})
    seen_everywhere(nodes, "tg_acme", lambda r: r.status == 429, "the quota used up", started)
    refused = nodes[1].get("/", headers={"x-api-key": "tg_acme"})
    body = refused.json()
    assert body["error"] == "quota_exceeded" and body["quota"] == 1000, refused
    period_end = feed.state["tenants"]["acme"]["period_end"]
    retry = int(refused.header("retry-after") or 0)
    assert abs(retry - (period_end - time.time())) <= 5, refused
    assert refused.header("ratelimit-policy") == '"quota";q=1000;w=172800', refused
    assert all(n.get("/", headers={"x-api-key": "tg_beta"}).status == 200 for n in nodes), "overage: bill admits"

    started = time.monotonic()
    feed.change(tenants={"acme": tenant("acme", "capped", status="suspended")})
    seen_everywhere(nodes, "tg_acme", lambda r: r.status == 403, "the tenant suspended", started)
    body = nodes[0].get("/", headers={"x-api-key": "tg_acme"}).json()
    assert (body["error"], body["tenant"]) == ("tenant_suspended", "acme"), body
