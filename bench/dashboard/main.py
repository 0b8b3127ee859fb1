"""The dashboard's benchmark (dashboard issue): (1) the sidecar's time to answer a tenant's
dashboard figures (`GET /dashboard/data`, and the whole page `GET /dashboard`) with 1,000
endpoints × 30 days of usage in the database (SQLite, and PostgreSQL with --postgres), median
and p95 over N sequential requests on one keep-alive connection; (2) the page's interactive time
in headless chromium (Navigation Timing `domInteractive`, and the navigation's wall time),
median over M loads. Run it with `bench/dashboard/run` (builds the release sidecar first).
Targets: ≤ 50 ms at the sidecar, interactive ≤ 1 s."""

from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

if __package__ in (None, ""):  # run as a file: the repository root on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.harness.browser import Browser  # noqa: E402
from tests.harness.paths import REPO  # noqa: E402
from tests.harness.postgres import Postgres  # noqa: E402
from tests.harness.sidecar import SidecarProcess  # noqa: E402

ADMIN = "bench-admin-token"
TENANT = "bench"
BUCKETS = [10, 20, 30, 20, 10, 5, 3, 1, 1, 0, 0, 0]


def admin(url: str, method: str, path: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(f"{url}{path}", method=method, data=None if body is None else json.dumps(body).encode(),
                                     headers={"authorization": f"Bearer {ADMIN}", "content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as resp:
        return json.loads(resp.read())


def seed_sqlite(db: Path, endpoints: int, days: int) -> None:
    today = datetime.datetime.now(datetime.timezone.utc).date()
    rows = [(TENANT, (today - datetime.timedelta(days=d)).isoformat(), f"GET /endpoint/{e}", "pro", 100 + e, 0, 0,
             e % 7, e % 3, 1000, json.dumps(BUCKETS)) for d in range(days) for e in range(endpoints)]
    with sqlite3.connect(db, timeout=30) as conn:
        conn.executemany("INSERT INTO api_usage_daily (tenant_id, date, endpoint, plan, requests, bytes_in, bytes_out, "
                         "errors_4xx, errors_5xx, latency_ms_sum, latency_buckets) VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)


def seed_postgres(server: Postgres, endpoints: int, days: int) -> None:
    buckets = ",".join(map(str, BUCKETS))
    server.query(
        "INSERT INTO api_usage_daily (tenant_id, date, endpoint, plan, requests, bytes_in, bytes_out, errors_4xx, "
        "errors_5xx, latency_ms_sum, latency_buckets) "
        f"SELECT '{TENANT}', (now() AT TIME ZONE 'utc')::date - d, 'GET /endpoint/' || e, 'pro', 100 + e, 0, 0, "
        f"e % 7, e % 3, 1000, ARRAY[{buckets}]::bigint[] "
        f"FROM generate_series(0, {days - 1}) d, generate_series(0, {endpoints - 1}) e")
    server.query("ANALYZE api_usage_daily")


def sign_in(url: str) -> str:
    """A session cookie for the bench tenant, through a minted link."""
    link = admin(url, "POST", f"/v1/admin/tenants/{TENANT}/dashboard-link")["url"]
    conn = http.client.HTTPConnection(url.split("//")[1].split(":")[0], int(url.rsplit(":", 1)[1]), timeout=30)
    conn.request("GET", link)
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 303, resp.status
    return (resp.getheader("set-cookie") or "").split(";", 1)[0]


def timed_gets(port: int, path: str, cookie: str, n: int) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    times = []
    for _ in range(n):
        started = time.perf_counter()
        conn.request("GET", path, headers={"cookie": cookie})
        resp = conn.getresponse()
        body = resp.read()
        times.append((time.perf_counter() - started) * 1000)
        assert resp.status == 200, (resp.status, body[:200])
    conn.close()
    return times


def summary(times: list[float]) -> dict:
    ordered = sorted(times)
    return {"n": len(times), "median_ms": round(statistics.median(ordered), 2),
            "p95_ms": round(ordered[max(0, int(len(ordered) * 0.95) - 1)], 2), "min_ms": round(ordered[0], 2)}


def measure(database: str, args: argparse.Namespace, workdir: Path) -> dict:
    server = None
    env = {"TOLLGATE_ADMIN_TOKEN": ADMIN, "TOLLGATE_DASHBOARD_SECRET": "bench-secret-0123456789abcdef0123456789"}
    if database == "postgres":
        pgdir = tempfile.mkdtemp(prefix="tollgate-bench-dashboard-pg-")
        os.chmod(pgdir, 0o755)
        server = Postgres(pgdir)
        env["TOLLGATE_DATABASE_URL"] = server.url
    sidecar = SidecarProcess(workdir / database, env=env, binary=args.sidecar).start()
    try:
        url = sidecar.url
        admin(url, "PUT", "/v1/admin/plans/pro", {"requests_per_minute": 1000, "monthly_quota": 10_000_000, "overage": "bill",
              "overage_price": {"per": 1000, "amount": 10, "currency": "usd"}, "billing": "none", "meter_event_name": "api_requests"})
        admin(url, "PUT", f"/v1/admin/tenants/{TENANT}", {"plan": "pro", "billing_anchor_day": 1})
        if server is None:
            seed_sqlite(sidecar.workdir / "tollgate.db", args.endpoints, args.days)
        else:
            seed_postgres(server, args.endpoints, args.days)
        cookie = sign_in(url)
        data = json.loads(urllib.request.urlopen(urllib.request.Request(f"{url}/dashboard/data", headers={"cookie": cookie})).read())
        assert len(data["days"]) == 30 and len(data["top_endpoints"]) == 5, data
        assert sum(d["requests"] for d in data["days"]) == sum(100 + e for e in range(args.endpoints)) * min(args.days, 30)
        timed_gets(sidecar.port, "/dashboard/data", cookie, 5)  # warm-up
        result = {"database": database, "rows": args.endpoints * args.days,
                  "data": summary(timed_gets(sidecar.port, "/dashboard/data", cookie, args.requests)),
                  "page": summary(timed_gets(sidecar.port, "/dashboard", cookie, args.requests))}
        if not args.no_browser:
            result["browser"] = browser_times(url, cookie, args.loads)
        return result
    finally:
        sidecar.stop()
        if server is not None:
            server.stop()
            shutil.rmtree(server.dir, ignore_errors=True)


def browser_times(url: str, cookie: str, loads: int) -> dict:
    browser = Browser(timeout=60)
    try:
        name, value = cookie.split("=", 1)
        browser.call("set_cookies", ctx="bench", cookies=[{"name": name, "value": value, "url": f"{url}/dashboard"}])
        interactive, wall = [], []
        browser.call("goto", ctx="bench", url=f"{url}/dashboard")  # warm-up (starts the renderer)
        for _ in range(loads):
            nav = browser.call("goto", ctx="bench", url=f"{url}/dashboard")
            assert nav["status"] == 200, nav
            timing = browser.call("timing", ctx="bench")
            interactive.append(timing["domInteractive"])
            wall.append(nav["ms"])
        points = browser.call("eval", ctx="bench", expr="document.querySelectorAll('[data-testid=\"usage-point\"]').length")
        assert points == 30, points
        return {"loads": loads, "dom_interactive": summary(interactive), "navigation_wall": summary(wall)}
    finally:
        browser.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--endpoints", type=int, default=1000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--requests", type=int, default=200, help="sequential requests per figure")
    parser.add_argument("--loads", type=int, default=20, help="page loads in chromium")
    parser.add_argument("--postgres", action="store_true", help="also on a throw-away PostgreSQL")
    parser.add_argument("--no-browser", action="store_true")
    parser.add_argument("--sidecar", default=str(REPO / "target" / "release" / "tollgate-sidecar"))
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="tollgate-bench-dashboard-") as tmp:
        for database in ["sqlite", *(["postgres"] if args.postgres else [])]:
            results.append(measure(database, args, Path(tmp)))
    load = os.getloadavg()
    print(json.dumps({"results": results, "loadavg": [round(x, 2) for x in load], "cpus": os.cpu_count()}, indent=2))
    for r in results:
        line = (f"dashboard [{r['database']}, {r['rows']:,} rows]: GET /dashboard/data median {r['data']['median_ms']} ms "
                f"(p95 {r['data']['p95_ms']}), GET /dashboard median {r['page']['median_ms']} ms (p95 {r['page']['p95_ms']})")
        if "browser" in r:
            b = r["browser"]
            line += (f"; chromium domInteractive median {b['dom_interactive']['median_ms']} ms, "
                     f"navigation median {b['navigation_wall']['median_ms']} ms")
        print(line)
    print(f"load average {load[0]:.2f} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
