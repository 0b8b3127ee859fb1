"""Usage metering end to end: a known mix of requests through a real Envoy → the filter's batches →
the sidecar → its flush → api_usage_daily (SQLite, the embedded default), column by column, and
the request totals equal Envoy's own downstream_rq_* counters for the same run."""

from __future__ import annotations

import datetime
import http.server
import json
import sqlite3
import threading
import time

from harness import config, policy
from harness.serve import Server
from harness.sidecar import SidecarProcess
from harness.wait import until

TENANTS = policy.TENANTS
FREE = {"x-api-key": "key-free-0001"}  # t-free
PRO = {"x-api-key": "key-pro-0001"}  # t-pro
# A request sent once what a test checks has arrived: when it has arrived too, later batches
# and flushes have run, and the test can check that they counted nothing twice.
LATER = {"x-api-key": "key-free-0002"}  # t-free-2
LATER_PATH = "/api/reports/later"
LATER_KEY = ("t-free-2", "GET reports")


def usage_config() -> dict:
    return policy.config(
        policy.rule("per-tenant", "fixed_window", 1000, "1h", key=["tenant"]),
        policy.rule("reports", "fixed_window", 1000, "1h", key=["tenant"], match={"path_prefix": "/api/reports"}),
        tenants=TENANTS,
        sidecar={"cluster": "tollgate_sidecar", "authority": "tollgate-sidecar", "timeout_ms": 1000,
                 "sync_interval_ms": 200},
        usage={"interval_ms": 200},
    )


ROUTES = [
    config.direct("/api/reports", 200, "r" * 100),
    config.direct("/missing", 404, "n" * 7),
    config.direct("/broken", 503, ""),
    config.to_cluster("/api/items"),  # the demo API: request bodies flow through the filter
    config.direct("/", 200, "ok"),
]


def rows(db: str) -> dict[tuple[str, str], dict]:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        found = conn.execute(
            "SELECT tenant_id, endpoint, plan, requests, bytes_in, bytes_out, errors_4xx, errors_5xx, date "
            "FROM api_usage_daily"
        ).fetchall()
    return {(r["tenant_id"], r["endpoint"]): dict(r) for r in found}


def test_every_request_is_counted_once_into_api_usage_daily(start_envoy, demo_api, tmp_path):
    workdir = tmp_path / "sidecar"
    sidecar = SidecarProcess(workdir, env={"TOLLGATE_FLUSH_INTERVAL": "1s"}).start()
    try:
        bootstrap = config.tollgate(usage_config(), routes=ROUTES, sidecar_port=sidecar.port,
                                    clusters=[config.static_cluster(config.DEMO_CLUSTER, demo_api.port)])
        envoy = start_envoy(bootstrap)
        client = envoy.client()
        for _ in range(5):
            assert client.get("/api/reports/daily", FREE).status == 200
        posted = 0
        for _ in range(3):
            resp = client.request("POST", "/api/items", FREE, body=b"x" * 50)
            assert resp.status == 200, resp
            posted += len(resp.body)
        for _ in range(2):
            assert client.get("/missing", PRO).status == 404
        assert client.get("/broken", PRO).status == 503
        assert client.get("/api/reports/x", PRO).status == 200
        assert client.get("/anonymous").status == 200  # no tenant: not metered

        expected = {
            ("t-free", "GET reports"): dict(plan="free", requests=5, bytes_in=0, bytes_out=500, errors_4xx=0, errors_5xx=0),
            ("t-free", "POST *"): dict(plan="free", requests=3, bytes_in=150, bytes_out=posted, errors_4xx=0, errors_5xx=0),
            ("t-pro", "GET *"): dict(plan="pro", requests=3, bytes_in=0, bytes_out=7 * 2, errors_4xx=2, errors_5xx=1),
            ("t-pro", "GET reports"): dict(plan="pro", requests=1, bytes_in=0, bytes_out=100, errors_4xx=0, errors_5xx=0),
        }
        db = str(workdir / "tollgate.db")

        def flushed() -> dict:
            try:
                return rows(db)
            except sqlite3.Error:
                return {}

        until(flushed, lambda r: sum(v["requests"] for v in r.values()) >= 12, 20, "usage flushed")
        # Another batch and flush after that one: nothing may be counted twice.
        assert client.get(LATER_PATH, LATER).status == 200
        found = until(flushed, lambda r: LATER_KEY in r, 20, "the later request flushed")
        assert found.pop(LATER_KEY)["requests"] == 1
        today = datetime.datetime.now(datetime.timezone.utc).date().isoformat()
        assert set(found) == set(expected), found
        for key, want in expected.items():
            got = {k: found[key][k] for k in want}
            assert got == want, (key, got, want)
            assert found[key]["date"] == today
        # The metered totals are Envoy's own counts of what it served to tenants (13 requests,
        # one of them anonymous, and the later one).
        stats = envoy.stats(r"^http\.ingress\.downstream_rq_[2345]xx$")
        served = {k.rsplit("_", 1)[1]: v for k, v in stats.items()}
        assert served.get("2xx", 0) - 2 == sum(v["requests"] - v["errors_4xx"] - v["errors_5xx"] for v in found.values())
        assert served.get("4xx", 0) == sum(v["errors_4xx"] for v in found.values())
        assert served.get("5xx", 0) == sum(v["errors_5xx"] for v in found.values())
        assert envoy.tollgate_counter("usage", "dropped") == 0
    finally:
        sidecar.stop()


def test_a_sidecar_gone_for_ten_seconds_loses_nothing(start_envoy, own_redis_server, tmp_path):
    # Usage in Redis, the sidecar killed -9 in the middle of traffic and back 10 s later: the
    # filter kept what it could not send and sends it again (a batch the dead sidecar had
    # already applied is recognised and not counted twice), so the flushed totals are exact.
    workdir = tmp_path / "sidecar"
    env = {"TOLLGATE_FLUSH_INTERVAL": "1s", "TOLLGATE_DATABASE_URL": f"sqlite://{workdir}/usage.db?mode=rwc"}
    sidecar = SidecarProcess(workdir, redis_url=own_redis_server.url, env=env).start()
    try:
        routes = [r for r in ROUTES if "route" not in r]  # Envoy answers every route itself
        envoy = start_envoy(config.tollgate(usage_config(), routes=routes, sidecar_port=sidecar.port))
        client = envoy.client()
        sent = 0
        for _ in range(40):
            assert client.get("/api/reports/a", FREE).status == 200
            sent += 1
        sidecar.kill9()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert client.get("/api/reports/b", FREE).status == 200
            sent += 1
            time.sleep(0.05)  # pacing the traffic through the outage
        sidecar.start()
        for _ in range(40):
            assert client.get("/api/reports/c", FREE).status == 200
            sent += 1
        db = str(workdir / "usage.db")

        def total() -> int:
            try:
                return sum(r["requests"] for r in rows(db).values())
            except sqlite3.Error:
                return 0

        until(total, lambda n: n >= sent, 30, f"{sent} requests flushed")
        # More batches and flushes after that: still exactly once.
        assert client.get(LATER_PATH, LATER).status == 200
        found = until(lambda: rows(db), lambda r: LATER_KEY in r, 30, "the later request flushed")
        assert found.pop(LATER_KEY)["requests"] == 1
        assert set(found) == {("t-free", "GET reports")}, found
        assert found[("t-free", "GET reports")]["requests"] == sent
        assert found[("t-free", "GET reports")]["bytes_out"] == 100 * sent
        assert envoy.tollgate_counter("usage", "dropped") == 0
        envoy.wait_tollgate_counter("usage", "failures", 1)
    finally:
        sidecar.stop()


class StandInSidecar:
    """A stand-in for the sidecar's `POST /v1/usage` that keeps every body it is sent and
    fails the first one (500): the filter must send that batch again unchanged."""

    def __init__(self):
        self.bodies: list[bytes] = []
        bodies = self.bodies

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["content-length"]))
                assert self.path == "/v1/usage", self.path
                bodies.append(body)
                if len(bodies) == 1:
                    self.send_response(500)
                    answer = b'{"error":"internal"}'
                else:
                    self.send_response(200)
                    answer = json.dumps({"applied": len(json.loads(body)["records"]), "duplicate": 0}).encode()
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def test_the_request_log_sends_one_entry_per_request_exactly_once(start_envoy):
    # usage.request_log on: every metered request travels as one entry in the same
    # exactly-once batches as the aggregates; a batch that failed is sent again byte for byte.
    filter_config = usage_config()
    filter_config["usage"] = {"interval_ms": 200, "request_log": True}
    routes = [r for r in ROUTES if "route" not in r]  # Envoy answers every route itself
    with StandInSidecar() as sidecar:
        envoy = start_envoy(config.tollgate(filter_config, routes=routes, sidecar_port=sidecar.port))
        client = envoy.client()
        started_ms = int(time.time() * 1000)
        sent = [("/api/reports/a", FREE, 200), ("/missing", PRO, 404), ("/broken", PRO, 503),
                ("/api/reports/b", FREE, 200), ("/anonymous", {}, 200)]
        for path, headers, status in sent:
            assert client.get(path, headers).status == status
        ended_ms = int(time.time() * 1000)

        def delivered() -> list[dict]:
            # Only batches the stand-in accepted (every body after the first).
            return [json.loads(b) for b in list(sidecar.bodies)[1:]]

        until(lambda: sum(len(b.get("requests", [])) for b in delivered()), lambda n: n >= 4, 20,
              "4 request log entries delivered")
        # A later batch: nothing sent before goes again.
        assert client.get(LATER_PATH, LATER).status == 200
        later_at = len(sidecar.bodies)
        until(lambda: [e for b in delivered() for e in b.get("requests", []) if e["tenant"] == "t-free-2"],
              bool, 20, "the later request's entry delivered")
        bodies = list(sidecar.bodies)
        assert all(b"t-free-2" not in body for body in bodies[:later_at]), "the later request came too early"
        assert bodies[1] == bodies[0], "the failed batch was not resent unchanged"
        batches = [json.loads(b) for b in bodies[1:]]
        seqs = [(b["sender"], b["seq"]) for b in batches]
        assert len(set(seqs)) == len(seqs), seqs
        entries = [e for b in batches for e in b.get("requests", []) if e["tenant"] != "t-free-2"]
        got = sorted((e["tenant"], e["endpoint"], e["status"], e["bytes_in"], e["bytes_out"]) for e in entries)
        assert got == sorted([
            ("t-free", "GET reports", 200, 0, 100),
            ("t-free", "GET reports", 200, 0, 100),
            ("t-pro", "GET *", 404, 0, 7),
            ("t-pro", "GET *", 503, 0, 0),
        ]), entries
        for entry in entries:
            assert started_ms - 1 <= entry["time_ms"] <= ended_ms + 1, (entry, started_ms, ended_ms)
            assert 0 <= entry["latency_ms"] <= ended_ms - started_ms + 1, entry
        # The aggregates of the same requests came in the same batches.
        assert sum(r["requests"] for b in batches for r in b["records"]) == 4 + 1
        assert envoy.tollgate_counter("usage", "log_dropped") == 0
        assert envoy.tollgate_counter("usage", "dropped") == 0


def test_the_request_log_lands_in_api_request_log(start_envoy, tmp_path):
    # The whole path with the real sidecar (TOLLGATE_REQUEST_LOG=on, SQLite, the embedded
    # default): one row per metered request, as Envoy served it, and none for the anonymous one.
    workdir = tmp_path / "sidecar"
    env = {"TOLLGATE_FLUSH_INTERVAL": "1s", "TOLLGATE_REQUEST_LOG": "on",
           "TOLLGATE_REQUEST_LOG_FLUSH_INTERVAL": "200ms"}
    sidecar = SidecarProcess(workdir, env=env).start()
    try:
        filter_config = usage_config()
        filter_config["usage"] = {"interval_ms": 200, "request_log": True}
        routes = [r for r in ROUTES if "route" not in r]  # Envoy answers every route itself
        envoy = start_envoy(config.tollgate(filter_config, routes=routes, sidecar_port=sidecar.port))
        client = envoy.client()
        started_ms = int(time.time() * 1000)
        for path, headers, status in [("/api/reports/a", FREE, 200), ("/missing", PRO, 404),
                                      ("/broken", PRO, 503), ("/api/reports/b", FREE, 200),
                                      ("/anonymous", {}, 200)]:
            assert client.get(path, headers).status == status
        ended_ms = int(time.time() * 1000)
        db = str(workdir / "tollgate.db")

        def logged() -> list[tuple]:
            try:
                with sqlite3.connect(db) as conn:
                    return conn.execute(
                        "SELECT tenant_id, endpoint, status, bytes_in, bytes_out, time_ms, latency_ms "
                        "FROM api_request_log ORDER BY time_ms, status").fetchall()
            except sqlite3.Error:
                return []

        until(logged, lambda r: len(r) >= 4, 20, "4 rows in api_request_log")
        # More batches and flushes after those: nothing logged twice.
        assert client.get(LATER_PATH, LATER).status == 200
        found = until(logged, lambda r: any(row[0] == "t-free-2" for row in r), 20, "the later request logged")
        assert [row[:2] for row in found if row[0] == "t-free-2"] == [LATER_KEY], found
        found = [row for row in found if row[0] != "t-free-2"]
        assert sorted(r[:5] for r in found) == sorted([
            ("t-free", "GET reports", 200, 0, 100),
            ("t-free", "GET reports", 200, 0, 100),
            ("t-pro", "GET *", 404, 0, 7),
            ("t-pro", "GET *", 503, 0, 0),
        ]), found
        for row in found:
            assert started_ms - 1 <= row[5] <= ended_ms + 1, (row, started_ms, ended_ms)
        written = sidecar.metric("tollgate_request_log_entries_total", outcome="written")
        assert written == 4 + 1, sidecar.metrics()
        assert envoy.tollgate_counter("usage", "log_dropped") == 0
    finally:
        sidecar.stop()
