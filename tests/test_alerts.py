"""Quota alerts end to end: the real sidecar (SQLite) decides, a stand-in receiver and an SMTP sink receive.

- Real Envoy traffic drives a tenant (monthly_quota 20) past 80 % and then 100 %: exactly one
  webhook per threshold, each signature verified by the `standardwebhooks` package (an
  independent implementation of the convention), and one e-mail each (plain text and HTML)
  caught by aiosmtpd.
- A receiver answering 500, then not answering (timeout), then 204 gets the same `webhook-id`
  and body each time, every attempt is recorded (and shown by `GET /v1/admin/tenants/{id}/alerts`);
  a receiver answering 410 gets nothing more.
- The sidecar killed -9 after committing a decision and before delivering it (a test-only
  pause) delivers exactly one webhook and one e-mail after its restart, under the ids it
  recorded before.
- `alerts run --now <a day before the period ends>` sends the period-ending warning with the
  linear forecast computed here from the known usage, and is idempotent; `alerts run` exits 1
  when a delivery fails for good (an SMTP server refusing the address with 550).
"""

from __future__ import annotations

import calendar
import json
import math
import os
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from standardwebhooks.webhooks import Webhook

from harness import config, http, policy
from harness.alert_sinks import Received, SmtpSink, WebhookReceiver
from harness.sidecar import SidecarProcess, sidecar_bin
from harness.wait import until

ADMIN = "admin-alerts-e2e"
NODE = "node-alerts-e2e"
QUOTA = 20


class Api:
    def __init__(self, sidecar: SidecarProcess) -> None:
        self.url = sidecar.url

    def call(self, method: str, path: str, body: Any = None, token: str = ADMIN) -> tuple[int, Any]:
        return http.json_call(self.url, method, path, body, token)

    def put_plan(self, name: str, **plan: Any) -> None:
        status, body = self.call("PUT", f"/v1/admin/plans/{name}", {"requests_per_minute": 1000, **plan})
        assert status in (200, 201), (status, body)

    def put_tenant(self, tid: str, plan: str, **alerts: Any) -> str | None:
        """Creates the tenant; its webhook secret (shown the first time) or None."""
        status, body = self.call("PUT", f"/v1/admin/tenants/{tid}", {"plan": plan, "billing_anchor_day": 1, "alerts": alerts})
        assert status in (200, 201), (status, body)
        return body.get("webhook_secret")

    def usage(self, tenant: str, requests: int, seq: int) -> None:
        today = time.strftime("%Y-%m-%d", time.gmtime())
        batch = {"sender": 4242, "seq": seq,
                 "records": [{"tenant": tenant, "date": today, "endpoint": "GET /x", "requests": requests,
                             "latency_buckets": [requests] + [0] * 11}]}
        status, body = self.call("POST", "/v1/usage", batch, token=NODE)
        assert status == 200, (status, body)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    r = WebhookReceiver(timeout_s=4.0)
    yield r
    r.stop()


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    yield sink
    sink.stop()


def sidecar_env(smtp: SmtpSink, **more: str) -> dict[str, str]:
    return {
        "TOLLGATE_ADMIN_TOKEN": ADMIN,
        "TOLLGATE_NODE_TOKEN": NODE,
        "TOLLGATE_FLUSH_INTERVAL": "1s",
        "TOLLGATE_QUOTA_INTERVAL": "1s",
        "TOLLGATE_ALERT_INTERVAL": "1s",
        "TOLLGATE_ALERT_TIMEOUT": "2s",
        "TOLLGATE_ALERT_RETRY_SCHEDULE": "1s,1s,1s",
        "TOLLGATE_SMTP_URL": smtp.url,
        "TOLLGATE_ALERT_FROM": "Tollgate <alerts@tollgate.test>",
        **more,
    }


def verified(received: Received, secret: str) -> dict:
    """The body, once `standardwebhooks` accepts its signature (it raises otherwise)."""
    headers = {k: received.headers[k] for k in ("webhook-id", "webhook-timestamp", "webhook-signature")}
    assert received.headers["content-type"] == "application/json"
    return Webhook(secret).verify(received.body, headers)


def db_rows(sidecar: SidecarProcess, sql: str, *args: Any) -> list[tuple]:
    with sqlite3.connect(sidecar.workdir / "tollgate.db", timeout=10) as conn:
        return conn.execute(sql, args).fetchall()


def settle(seconds: float = 3.5) -> None:
    """Several evaluation rounds (1 s) and delivery passes: time for a duplicate to show."""
    time.sleep(seconds)


def test_thresholds_from_real_envoy_traffic(start_envoy, receiver, smtp, tmp_path: Path) -> None:
    sidecar = SidecarProcess(tmp_path / "sidecar", env=sidecar_env(smtp)).start()
    try:
        api = Api(sidecar)
        api.put_plan("small", monthly_quota=QUOTA, overage="bill")
        secret = api.put_tenant("acme", "small", webhook_url=receiver.url, email="ops@acme.test")
        assert secret and secret.startswith("whsec_"), secret
        status, key = api.call("POST", "/v1/admin/tenants/acme/keys")
        assert status == 201, key
        rule = policy.rule("per-tenant", "token_bucket", "plan", "1m", key=["tenant"])
        cfg = policy.config(rule, sidecar={"cluster": config.SIDECAR_CLUSTER, "authority": "tollgate-sidecar", "token": NODE},
                            usage={"interval_ms": 200}, registry={"enabled": True, "interval_ms": 200, "unknown_key": "reject"})
        envoy = start_envoy(config.tollgate(json.dumps(cfg), sidecar_port=sidecar.port))
        headers = {"x-api-key": key["key"]}
        until(lambda: envoy.get("/", headers=headers), lambda r: r.status == 200, timeout=10, what="the key known to Envoy")
        admitted = 1
        while admitted < 16:  # 80 % of 20
            response = envoy.get("/", headers=headers)
            assert response.status == 200, response
            admitted += 1
        until(receiver.requests, lambda r: len(r) >= 1, timeout=20, what="the 80 % webhook")
        until(smtp.messages, lambda m: len(m) >= 1, timeout=10, what="the 80 % e-mail")
        while admitted < QUOTA:
            assert envoy.get("/", headers=headers).status == 200
            admitted += 1
        until(receiver.requests, lambda r: len(r) >= 2, timeout=20, what="the 100 % webhook")
        until(smtp.messages, lambda m: len(m) >= 2, timeout=10, what="the 100 % e-mail")
        settle()

        hooks = receiver.requests()
        assert len(hooks) == 2, [h.body for h in hooks]
        bodies = [verified(h, secret) for h in hooks]
        assert [b["data"]["threshold"] for b in bodies] == [80, 100], bodies
        assert len({h.headers["webhook-id"] for h in hooks}) == 2
        for body, least in zip(bodies, (16, 20)):
            assert body["type"] == "quota.threshold_reached", body
            data = body["data"]
            assert data["tenant"] == "acme" and data["quota"] == QUOTA, data
            assert data["used"] >= least, data
            for field in ("period_start", "period_end", "forecast"):
                assert field in data, data
        with pytest.raises(Exception):  # a wrong secret does not verify
            Webhook("whsec_" + "QUJD" * 8).verify(hooks[0].body, {k: hooks[0].headers[k] for k in ("webhook-id", "webhook-timestamp", "webhook-signature")})

        mails = smtp.messages()
        assert len(mails) == 2, mails
        for (sender, rcpts, message), threshold in zip(mails, (80, 100)):
            assert (sender, rcpts) == ("alerts@tollgate.test", ["ops@acme.test"])
            assert f"reached {threshold}% of its quota" in message["subject"], message["subject"]
            assert message["message-id"].startswith("<msg_"), message["message-id"]
            assert message.get_content_type() == "multipart/alternative"
            plain = message.get_body(("plain",)).get_content()
            html = message.get_body(("html",)).get_content()
            assert "Tenant acme has used" in plain and "<p>Tenant acme has used" in html, (plain, html)
        assert len({m[2]["message-id"] for m in mails}) == 2

        assert sidecar.metric("tollgate_alerts_fired_total", type="quota.threshold_reached") == 2
        assert sidecar.metric("tollgate_alert_deliveries_total", channel="webhook", outcome="delivered") == 2
        assert sidecar.metric("tollgate_alert_deliveries_total", channel="email", outcome="delivered") == 2
    finally:
        sidecar.stop()


def test_a_failing_receiver_gets_the_same_id_and_410_disables(receiver, smtp, tmp_path: Path) -> None:
    gone = WebhookReceiver()
    sidecar = SidecarProcess(tmp_path / "sidecar", env=sidecar_env(smtp)).start()
    try:
        api = Api(sidecar)
        api.put_plan("small", monthly_quota=QUOTA, overage="block")
        secret = api.put_tenant("acme", "small", webhook_url=receiver.url)
        api.put_tenant("gone", "small", webhook_url=gone.url)
        receiver.script(500, "timeout", 204)
        gone.script(410)
        api.usage("acme", 16, seq=1)
        api.usage("gone", 16, seq=2)
        until(receiver.requests, lambda r: len(r) >= 3, timeout=40, what="three attempts")
        until(gone.requests, lambda r: len(r) >= 1, timeout=10, what="the 410")
        hooks = receiver.requests()
        assert [h.answered for h in hooks] == [500, "timeout", 204]
        assert len({h.headers["webhook-id"] for h in hooks}) == 1, [h.headers for h in hooks]
        assert len({h.body for h in hooks}) == 1
        for hook in hooks:
            assert verified(hook, secret)["data"]["threshold"] == 80
        delivery = hooks[0].headers["webhook-id"]
        attempts = until(lambda: db_rows(sidecar, "SELECT attempt, status, error FROM alert_attempts WHERE delivery_id = ? ORDER BY attempt", delivery),
                         lambda rows: len(rows) == 3, timeout=10, what="three attempts recorded")
        assert [(a, s) for a, s, _ in attempts] == [(1, 500), (2, None), (3, 204)], attempts
        assert attempts[0][2] and "timed out" in attempts[1][2], attempts
        assert db_rows(sidecar, "SELECT status, attempts FROM alert_deliveries WHERE id = ?", delivery) == [("delivered", 3)]
        status, shown = api.call("GET", "/v1/admin/tenants/acme/alerts")
        assert status == 200, shown
        [listed] = shown["deliveries"]
        assert (listed["id"], listed["channel"], listed["status"], listed["attempts"]) == (delivery, "webhook", "delivered", 3), listed
        assert [a["status"] for a in listed["attempt_log"]] == [500, None, 204], listed
        assert api.call("GET", "/v1/admin/tenants/nobody/alerts")[0] == 404
        assert api.call("GET", "/v1/admin/tenants/acme/alerts", token="wrong")[0] == 401

        # 410: disabled, and no webhook for the tenant's next alert (100 %).
        assert db_rows(sidecar, "SELECT status FROM alert_deliveries WHERE tenant_id = 'gone'") == [("disabled",)]
        assert db_rows(sidecar, "SELECT webhook_url FROM alert_webhooks_disabled WHERE tenant_id = 'gone'") == [(gone.url,)]
        api.usage("gone", 4, seq=3)
        until(lambda: db_rows(sidecar, "SELECT threshold FROM alert_events WHERE tenant_id = 'gone' ORDER BY threshold"),
              lambda rows: rows == [(80,), (100,)], timeout=10, what="gone's 100 % alert decided")
        settle()
        assert len(gone.requests()) == 1
        assert len(db_rows(sidecar, "SELECT id FROM alert_deliveries WHERE tenant_id = 'gone'")) == 1
        assert len(receiver.requests()) == 3
    finally:
        sidecar.stop()
        gone.stop()


def test_kill_9_between_decision_and_delivery_delivers_exactly_once(receiver, smtp, tmp_path: Path) -> None:
    env = sidecar_env(smtp, TOLLGATE_TEST_ALERTS_PAUSE_AFTER_DECISION="120s")
    sidecar = SidecarProcess(tmp_path / "sidecar", env=env).start()
    try:
        api = Api(sidecar)
        api.put_plan("small", monthly_quota=QUOTA, overage="bill")
        secret = api.put_tenant("acme", "small", webhook_url=receiver.url, email="ops@acme.test")
        api.usage("acme", 17, seq=1)
        decided = until(lambda: db_rows(sidecar, "SELECT id, channel FROM alert_deliveries WHERE tenant_id = 'acme' ORDER BY channel"),
                        lambda rows: len(rows) == 2, timeout=20, what="the decision committed")
        until(sidecar.log_tail, lambda log: "test hook: alert decisions committed" in log, timeout=5, what="the pause")
        assert receiver.requests() == [] and smtp.messages() == []
        sidecar.kill9()

        del sidecar.extra_env["TOLLGATE_TEST_ALERTS_PAUSE_AFTER_DECISION"]
        sidecar.start()
        until(receiver.requests, lambda r: len(r) >= 1, timeout=20, what="the webhook after the restart")
        until(smtp.messages, lambda m: len(m) >= 1, timeout=10, what="the e-mail after the restart")
        settle()
        hooks, mails = receiver.requests(), smtp.messages()
        assert len(hooks) == 1 and len(mails) == 1, (hooks, mails)
        ids = dict((channel, delivery) for delivery, channel in decided)
        assert hooks[0].headers["webhook-id"] == ids["webhook"]
        assert mails[0][2]["message-id"] == f"<{ids['email']}@tollgate>"
        assert verified(hooks[0], secret)["data"]["threshold"] == 80
        assert db_rows(sidecar, "SELECT COUNT(*) FROM alert_events") == [(1,)]
    finally:
        sidecar.stop()


def period_of_today() -> tuple[int, int]:
    """The current period of a tenant with billing_anchor_day 1: this UTC month."""
    now = time.gmtime()
    start = calendar.timegm((now.tm_year, now.tm_mon, 1, 0, 0, 0))
    year, month = (now.tm_year + 1, 1) if now.tm_mon == 12 else (now.tm_year, now.tm_mon + 1)
    return start, calendar.timegm((year, month, 1, 0, 0, 0))


def rfc3339(secs: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(secs))


def alerts_run(sidecar: SidecarProcess, now: str) -> tuple[int, dict]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_")}
    env.update(sidecar.extra_env)
    done = subprocess.run([str(sidecar_bin()), "alerts", "run", "--now", now], cwd=sidecar.workdir, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


def test_period_ending_forecast_with_alerts_run(receiver, smtp, tmp_path: Path) -> None:
    # Serving only to write the registry and usage (its own rounds an hour apart: none runs).
    sidecar = SidecarProcess(tmp_path / "sidecar", env=sidecar_env(smtp, TOLLGATE_ALERT_INTERVAL="1h")).start()
    api = Api(sidecar)
    api.put_plan("metered", monthly_quota=1000, overage="bill", overage_price={"per": 100, "amount": 25, "currency": "usd"})
    api.put_plan("capped", monthly_quota=1000, overage="block")
    bill_secret = api.put_tenant("bill-t", "metered", webhook_url=receiver.url, email="billing@bill.test")
    block_secret = api.put_tenant("block-t", "capped", webhook_url=receiver.url)
    api.usage("bill-t", 1200, seq=1)
    api.usage("block-t", 990, seq=2)
    sidecar.stop()  # flushes once more on the way out
    assert db_rows(sidecar, "SELECT tenant_id, SUM(requests) FROM api_usage_daily GROUP BY tenant_id ORDER BY tenant_id") == [("bill-t", 1200), ("block-t", 990)]

    # A serving sidecar evaluates once more as it stops: thresholds may be decided already
    # (their deliveries wait for the next sender).
    before = db_rows(sidecar, "SELECT COUNT(*) FROM alert_events")[0][0]
    assert receiver.requests() == []

    start, end = period_of_today()
    now = end - 86_400
    status, summary = alerts_run(sidecar, rfc3339(now))
    assert status == 0, summary
    # bill-t jumped past 80 % and 100 %, block-t past 80 %; both get the period-ending warning.
    assert before + summary["evaluation"]["fired"] == 5, (before, summary)
    assert db_rows(sidecar, "SELECT COUNT(*) FROM alert_events") == [(5,)]
    assert summary["deliveries"] == {"delivered": 8, "retrying": 0, "failed": 0, "disabled": 0}, summary

    length, elapsed = end - start, now - start
    by_tenant = {}
    for hook in receiver.requests():
        body = verified(hook, bill_secret if b'"bill-t"' in hook.body else block_secret)
        if body["type"] == "quota.period_ending":
            by_tenant[body["data"]["tenant"]] = body
    assert set(by_tenant) == {"bill-t", "block-t"}, by_tenant
    bill = by_tenant["bill-t"]
    assert bill["timestamp"] == rfc3339(now)
    data = bill["data"]
    forecast = 1200 * length // elapsed
    assert (data["used"], data["quota"], data["threshold"]) == (1200, 1000, None), data
    assert data["forecast"] == forecast and data["forecast_is_estimate"] is True, data
    assert data["forecast_overage"] == forecast - 1000, data
    assert data["forecast_overage_amount"] == {"amount": math.ceil((forecast - 1000) / 100) * 25, "currency": "usd",
                                               "per": 100, "unit_amount": 25}, data
    assert (data["period_start"], data["period_end"]) == (rfc3339(start), rfc3339(end)), data
    block = by_tenant["block-t"]["data"]
    assert block["forecast"] == 990 * length // elapsed, block
    assert block["forecast_exhausted_at"] == rfc3339(start + -(-1000 * elapsed // 990)), block
    assert block["quota_exhausted"] is False and "forecast_overage" not in block, block
    subjects = sorted(m[2]["subject"] for m in smtp.messages())
    assert subjects == ["[Tollgate] bill-t reached 100% of its quota", "[Tollgate] bill-t reached 80% of its quota",
                        "[Tollgate] bill-t's billing period ends soon"], subjects

    # Once per period: running again changes nothing.
    status, summary = alerts_run(sidecar, rfc3339(now + 3_600))
    assert status == 0 and summary["evaluation"]["fired"] == 0, summary
    assert summary["deliveries"]["delivered"] == 0, summary
    assert len(receiver.requests()) == 5


def test_alerts_run_exits_1_when_a_delivery_fails_for_good(receiver, tmp_path: Path) -> None:
    refusing = SmtpSink(refuse={"nobody@bad.test"})
    try:
        sidecar = SidecarProcess(tmp_path / "sidecar", env=sidecar_env(refusing, TOLLGATE_ALERT_INTERVAL="1h")).start()
        api = Api(sidecar)
        api.put_plan("small", monthly_quota=QUOTA, overage="bill")
        secret = api.put_tenant("acme", "small", webhook_url=receiver.url, email="nobody@bad.test")
        api.usage("acme", 16, seq=1)
        sidecar.stop()
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_")}
        env.update(sidecar.extra_env)
        done = subprocess.run([str(sidecar_bin()), "alerts", "run"], cwd=sidecar.workdir, env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 1, (done.stdout, done.stderr)
        summary = json.loads(done.stdout)
        assert summary["deliveries"] == {"delivered": 1, "retrying": 0, "failed": 1, "disabled": 0}, summary
        assert "failed for good" in done.stderr, done.stderr
        [hook] = receiver.requests()
        assert verified(hook, secret)["data"]["threshold"] == 80
        assert refusing.messages() == []
        [(status, code, error)] = db_rows(sidecar, "SELECT d.status, a.status, a.error FROM alert_deliveries d "
                                                   "JOIN alert_attempts a ON a.delivery_id = d.id WHERE d.channel = 'email'")
        assert (status, code) == ("failed", 550) and "No such user" in error, (status, code, error)
    finally:
        refusing.stop()
