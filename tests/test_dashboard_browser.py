"""The customer dashboard in a real browser: Debian's chromium driven by playwright-core
(`harness/browser.py`), against the real sidecar (SQLite) and a real Envoy whose filter follows
the sidecar's registry and reports usage to it.

- sign in with an API key and with an operator-minted link; the link works once and expires;
- the page's figures (quota bar, the 30 bars of the graph, the top endpoints) equal the usage
  API's (`GET /v1/usage/…` with the tenant's key) and the admin API's;
- traffic through Envoy shows on the open page without a reload;
- another tenant's data is never reachable: a `tenant` parameter is ignored, an altered or a
  signed-out cookie signs nobody in, an altered link is refused (and stays usable), a tenant
  session cannot read the operator's overview;
- the operator (admin token) sees every tenant by share of quota used.

Screenshots go to tests/output/dashboard/ (printed).
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pytest

from harness import config, policy
from harness.browser import Browser
from harness.envoy import Envoy
from harness.paths import REPO, MissingArtifact
from harness.sidecar import SidecarProcess
from harness.wait import until

ADMIN = "admin-token-dashboard"
SECRET = "dashboard-test-secret-0123456789abcdef"
OUTPUT = REPO / "tests" / "output" / "dashboard"
QUOTA = {"acme": 1000, "globex": 500}
ENDPOINT_RULES = {"items": "/api/items", "reports": "/api/reports", "search": "/api/search",
                  "export": "/api/export", "orders": "/api/orders"}
ROUTES = [config.direct("/missing", 404, "no"), config.direct("/broken", 503, ""), config.direct("/", 200, "ok")]


def call(url: str, method: str = "GET", body: Any = None, token: str | None = ADMIN) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    if token is not None:
        request.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    return status, json.loads(raw) if raw else None


def filter_config() -> dict:
    rules = [policy.rule("per-tenant", "token_bucket", 100_000, "1m", key=["tenant"])]
    rules += [policy.rule(name, "fixed_window", 100_000, "1h", key=["tenant"], match={"path_prefix": prefix})
              for name, prefix in ENDPOINT_RULES.items()]
    return policy.config(
        *rules,
        sidecar={"cluster": config.SIDECAR_CLUSTER, "authority": "tollgate-sidecar", "timeout_ms": 1000},
        usage={"interval_ms": 200},
        registry={"enabled": True, "interval_ms": 200, "unknown_key": "reject"},
    )


@dataclass
class World:
    sidecar: SidecarProcess
    envoy: Envoy
    browser: Browser
    keys: dict[str, str]
    shots: list[Path] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"{self.sidecar.url}{path}"

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        status, answer = call(self.url(path), method, body)
        assert status in (200, 201), (path, status, answer)
        return answer

    def traffic(self, tenant: str, path: str, times: int, method: str = "GET") -> None:
        client = self.envoy.client()
        for _ in range(times):
            resp = client.request(method, path, {"x-api-key": self.keys[tenant]})
            assert resp.status in (200, 404, 503), resp

    def flushed(self, tenant: str) -> int:
        return self.admin("GET", f"/v1/admin/tenants/{tenant}")["usage"]["requests"]

    def link(self, tenant: str) -> str:
        return self.admin("POST", f"/v1/admin/tenants/{tenant}/dashboard-link")["url"]

    def sign_in(self, ctx: str, credential: str) -> dict:
        self.browser.call("goto", ctx=ctx, url=self.url("/dashboard"))
        self.browser.call("fill", ctx=ctx, selector="#credential", value=credential)
        return self.browser.call("submit", ctx=ctx, selector="form[action='/dashboard/sign-in'] button")

    def shot(self, ctx: str, name: str) -> None:
        path = OUTPUT / f"{name}.png"
        self.browser.call("screenshot", ctx=ctx, path=str(path))
        assert path.stat().st_size > 5_000, path
        print(f"screenshot: {path}")

    def data(self, ctx: str, path: str = "/dashboard/data") -> tuple[int, Any]:
        got = self.browser.call("fetch", ctx=ctx, url=self.url(path))
        body = got["body"]
        return got["status"], json.loads(body) if body.startswith("{") else body


def start_sidecar(workdir: Path, **env: str) -> SidecarProcess:
    base = {"TOLLGATE_ADMIN_TOKEN": ADMIN, "TOLLGATE_FLUSH_INTERVAL": "1s", "TOLLGATE_QUOTA_INTERVAL": "1s",
            "TOLLGATE_DASHBOARD_REFRESH": "1s", "TOLLGATE_DASHBOARD_SECRET": SECRET}
    return SidecarProcess(workdir, env={**base, **env}).start()


def registry(world_url: str) -> dict[str, str]:
    """Two plans, two tenants, a key each; returns the keys."""
    def put(path: str, body: dict) -> Any:
        status, answer = call(f"{world_url}{path}", "PUT", body)
        assert status in (200, 201), (status, answer)
        return answer
    plan = {"requests_per_minute": 100_000, "billing": "none", "meter_event_name": "api_requests"}
    put("/v1/admin/plans/pro", {**plan, "monthly_quota": QUOTA["acme"], "overage": "bill",
                                 "overage_price": {"per": 100, "amount": 25, "currency": "usd"}})
    put("/v1/admin/plans/small", {**plan, "monthly_quota": QUOTA["globex"], "overage": "block"})
    put("/v1/admin/tenants/acme", {"plan": "pro", "billing_anchor_day": 1})
    put("/v1/admin/tenants/globex", {"plan": "small", "billing_anchor_day": 15})
    keys = {}
    for tenant in ("acme", "globex"):
        status, answer = call(f"{world_url}/v1/admin/tenants/{tenant}/keys", "POST")
        assert status == 201, answer
        keys[tenant] = answer["key"]
    return keys


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("dashboard")
    OUTPUT.mkdir(parents=True, exist_ok=True)
    sidecar = start_sidecar(root / "sidecar")
    envoy = browser = None
    try:
        keys = registry(sidecar.url)
        envoy = Envoy(config.tollgate(filter_config(), routes=ROUTES, sidecar_port=sidecar.port), root / "envoy").start()
        try:
            browser = Browser()
        except MissingArtifact as e:
            pytest.fail(str(e), pytrace=False)
        world = World(sidecar, envoy, browser, keys)
        client = envoy.client()
        for tenant in keys:  # the filter follows the registry: the new keys work within a moment
            until(lambda: client.get("/api/search", {"x-api-key": keys[tenant]}).status, lambda s: s == 200, 10,
                  f"{tenant}'s key admitted")
        # acme: six endpoints (the top five are shown), errors on two of them.
        world.traffic("acme", "/api/items/1", 12)
        world.traffic("acme", "/api/reports/x", 6)
        world.traffic("acme", "/missing", 3)
        world.traffic("acme", "/broken", 2)
        world.traffic("acme", "/api/search", 3)
        world.traffic("acme", "/api/export", 2)
        world.traffic("acme", "/api/orders", 1, method="POST")
        world.traffic("globex", "/api/items/2", 6)
        until(lambda: (world.flushed("acme"), world.flushed("globex")), lambda n: n == (30, 7), 20, "usage flushed")
        yield world
    finally:
        if browser is not None:
            browser.close()
        if envoy is not None:
            envoy.stop()
        sidecar.stop()


def page_figures(world: World, ctx: str) -> dict:
    return world.browser.call("eval", ctx=ctx, expr="""(() => {
        const bar = document.querySelector('[data-testid="quota-bar"]');
        const points = [...document.querySelectorAll('[data-testid="usage-chart"] [data-testid="usage-point"]')];
        const rows = [...document.querySelectorAll('[data-testid="top-endpoints"] tbody tr')];
        const text = (id) => { const e = document.querySelector(`[data-testid="${id}"]`); return e && e.textContent; };
        return {
            tenant: text('tenant'), percent: bar.getAttribute('aria-valuenow'),
            used: text('quota-used'), limit: text('quota-limit'), left: text('quota-left'),
            points: points.map(p => [p.dataset.date, +p.dataset.requests, +p.dataset.errors]),
            rows: rows.map(r => [r.querySelector('th').textContent, ...[...r.querySelectorAll('td')].map(c => c.textContent)]),
            forecast: text('forecast'), refreshes: +document.body.dataset.refreshes,
            text: document.body.innerText,
        };
    })()""")


def number(text: str) -> int:
    return int(text.replace(",", ""))


def test_api_key_sign_in_shows_the_usage_apis_figures(world: World) -> None:
    landed = world.sign_in("acme", world.keys["acme"])
    assert landed["status"] == 200 and landed["url"].endswith("/dashboard"), landed
    cookie = [c for c in world.browser.call("cookies", ctx="acme") if c["name"] == "tollgate_session"]
    assert len(cookie) == 1 and cookie[0]["httpOnly"] and cookie[0]["sameSite"] == "Lax", cookie
    shown = page_figures(world, "acme")
    assert shown["tenant"] == "acme"

    used = world.flushed("acme")
    assert float(shown["percent"]) == round(used * 100 / QUOTA["acme"], 2) == 3.0
    assert (number(shown["used"]), number(shown["limit"]), number(shown["left"])) == (used, 1000, 1000 - used)

    key = world.keys["acme"]
    status, daily = call(world.url("/v1/usage/daily?days=30"), token=key)
    assert status == 200, daily
    assert len(shown["points"]) == 30
    assert shown["points"] == [[d["date"], d["requests"], d["errors_4xx"] + d["errors_5xx"]] for d in daily["days"]]
    assert sum(p[1] for p in shown["points"]) == used and sum(p[2] for p in shown["points"]) == 5

    status, top = call(world.url("/v1/usage/endpoints?days=30&top=5"), token=key)
    assert status == 200, top
    assert len(top["endpoints"]) == 5 and len(shown["rows"]) == 5  # six endpoints, one row each of the top five
    for row, e in zip(shown["rows"], top["endpoints"]):
        p95 = e["latency_ms"]["p95"]
        assert row == [e["endpoint"], f"{e['requests']:,}", f"{e['error_rate'] * 100:.2f} %",
                       "–" if p95 is None else f"{p95:.2f} ms"], (row, e)
    assert [r[0] for r in shown["rows"]][:2] == ["GET items", "GET reports"]
    assert ["GET *", "5", "100.00 %"] == shown["rows"][2][:3]

    # The JSON the page is made of says the same, and the forecast is the linear one.
    status, data = world.data("acme")
    assert status == 200 and data["tenant"] == "acme" and data["quota"]["used"] == used
    period = data["period"]
    elapsed = data["generated_at"] - period["start_at"]
    assert data["forecast"]["requests"] == used * (period["end_at"] - period["start_at"]) // elapsed
    over = max(0, data["forecast"]["requests"] - 1000)
    assert data["forecast"]["overage_requests"] == over
    assert data["forecast"]["overage_amount"] == {"amount": -(-over // 100) * 25, "currency": "usd"}
    assert "estimate" in shown["forecast"]
    world.shot("acme", "api-key-sign-in")


def test_the_open_page_refreshes_when_traffic_flows(world: World) -> None:
    world.sign_in("live", world.keys["acme"])
    before = page_figures(world, "live")
    world.browser.call("eval", ctx="live", expr="window.__notReloaded = true")
    today = before["points"][-1]
    world.traffic("acme", "/api/items/9", 10)
    world.traffic("acme", "/broken", 1)
    want = today[1] + 11
    world.browser.call("wait", ctx="live", timeout=20_000, expr=f"""(() => {{
        const p = [...document.querySelectorAll('[data-testid="usage-point"]')].pop();
        return p && +p.dataset.requests === {want} && +p.dataset.errors === {today[2] + 1};
    }})()""")
    after = page_figures(world, "live")
    assert world.browser.call("eval", ctx="live", expr="window.__notReloaded === true"), "the page was reloaded"
    assert after["refreshes"] > before["refreshes"]
    assert number(after["used"]) == number(before["used"]) + 11
    assert float(after["percent"]) == round(number(after["used"]) * 100 / QUOTA["acme"], 2)
    assert len(after["points"]) == 30
    world.shot("live", "refreshed-after-traffic")


def test_sign_in_link_is_single_use(world: World) -> None:
    link = world.link("globex")
    assert link.startswith("/dashboard"), link
    first = world.browser.call("goto", ctx="g1", url=world.url(link))
    assert first["status"] == 200 and first["url"].endswith("/dashboard"), first
    shown = page_figures(world, "g1")
    assert shown["tenant"] == "globex" and float(shown["percent"]) == round(world.flushed("globex") * 100 / 500, 2)
    assert "forecast to" in shown["forecast"] or "last the period" in shown["forecast"]
    world.shot("g1", "link-sign-in")
    again = world.browser.call("goto", ctx="g2", url=world.url(link))
    assert again["status"] == 410, again
    assert "used already" in world.browser.call("eval", ctx="g2", expr="document.body.innerText")
    assert world.data("g2")[0] == 401
    # Without the admin token no link is minted.
    assert call(world.url("/v1/admin/tenants/globex/dashboard-link"), "POST", token="nope")[0] == 401
    assert call(world.url("/v1/admin/tenants/nobody/dashboard-link"), "POST")[0] == 404


def test_a_link_expires(tmp_path: Path) -> None:
    sidecar = start_sidecar(tmp_path / "sidecar", TOLLGATE_DASHBOARD_LINK_TTL="1s")
    browser = None
    try:
        registry(sidecar.url)
        status, minted = call(f"{sidecar.url}/v1/admin/tenants/acme/dashboard-link", "POST")
        assert status == 201, minted
        time.sleep(1.2)  # the link's whole life
        browser = Browser()
        late = browser.call("goto", ctx="late", url=f"{sidecar.url}{minted['url']}")
        assert late["status"] == 410, late
        assert "expired" in browser.call("eval", ctx="late", expr="document.body.innerText")
        assert browser.call("fetch", ctx="late", url=f"{sidecar.url}/dashboard/data")["status"] == 401
    finally:
        if browser is not None:
            browser.close()
        sidecar.stop()


def test_another_tenants_data_is_never_reachable(world: World) -> None:
    world.sign_in("a", world.keys["acme"])
    # A tenant parameter or path is not how a tenant is chosen: the session is.
    status, data = world.data("a", "/dashboard/data?tenant=globex")
    assert status == 200 and data["tenant"] == "acme", data
    assert world.data("a", "/dashboard/data/globex")[0] == 404
    assert world.data("a", "/dashboard/admin/data")[0] == 403
    page = world.browser.call("goto", ctx="a", url=world.url("/dashboard?tenant=globex"))
    assert page["status"] == 200
    assert "globex" not in world.browser.call("eval", ctx="a", expr="document.documentElement.outerHTML")

    # Cookie swap: acme's cookie, altered by one character, in another browser signs nobody in.
    cookies = world.browser.call("cookies", ctx="a")
    (session,) = [c for c in cookies if c["name"] == "tollgate_session"]
    flipped = session["value"][:-1] + ("A" if session["value"][-1] != "A" else "B")
    world.browser.call("set_cookies", ctx="mallory", cookies=[{**session, "value": flipped}])
    assert world.data("mallory")[0] == 401
    world.browser.call("goto", ctx="mallory", url=world.url("/dashboard"))
    text = world.browser.call("eval", ctx="mallory", expr="document.body.innerText")
    assert "Sign in" in text and "acme" not in text and "globex" not in text

    # A link for acme with the tenant rewritten to globex is refused, and stays usable for acme.
    link = world.link("acme")
    b64 = lambda s: base64.urlsafe_b64encode(s.encode()).rstrip(b"=").decode()  # noqa: E731
    forged = link.replace(f".{b64('acme')}.", f".{b64('globex')}.")
    assert forged != link
    refused = world.browser.call("goto", ctx="mallory", url=world.url(forged))
    assert refused["status"] == 400 and world.data("mallory")[0] == 401
    assert world.browser.call("goto", ctx="m2", url=world.url(link))["status"] == 200
    assert page_figures(world, "m2")["tenant"] == "acme"

    # Signing out ends the session on the server: the old cookie, replayed, is refused.
    world.browser.call("submit", ctx="a", selector="form[action='/dashboard/sign-out'] button")
    assert world.data("a")[0] == 401
    world.browser.call("set_cookies", ctx="replay", cookies=[session])
    assert world.data("replay")[0] == 401
    # A wrong key gets the form again.
    assert world.sign_in("wrong", "tg_not-a-key")["status"] == 401


def test_the_operator_sees_every_tenant_by_share_of_quota(world: World) -> None:
    landed = world.sign_in("op", ADMIN)
    assert landed["status"] == 200 and landed["url"].endswith("/dashboard/admin"), landed
    order = world.browser.call("eval", ctx="op", expr="""[...document.querySelectorAll('[data-testid="tenants"] tbody tr')]
        .map(r => r.dataset.tenant)""")
    assert order == ["acme", "globex"], order
    world.shot("op", "operator-overview")
    status, overview = call(world.url("/dashboard/admin/data"))
    assert status == 200
    shares = [(t["tenant"], t["used"], t["percent_used"]) for t in overview["tenants"]]
    assert shares == [(t, world.flushed(t), round(world.flushed(t) * 100 / QUOTA[t], 2)) for t in ("acme", "globex")]
    assert call(world.url("/dashboard/admin/data"), token=None)[0] == 401
    assert call(world.url("/dashboard/admin/data"), token=world.keys["acme"])[0] == 401
    # The operator has no tenant dashboard of its own.
    assert world.data("op")[0] == 403
