"""Stripe billing end to end: real Envoy → real sidecar → usage flush → meter event outbox →
the Stripe stand-in (tests/harness/stripe.py), on SQLite and on a throw-away PostgreSQL.

- Every request admitted for a tenant on a `billing: metered` plan reaches Stripe exactly
  once: per customer, the sum of accepted event values equals api_usage_daily's requests, no
  identifier was accepted twice, never two calls at once for one customer and meter, and
  every call carried the key as `Authorization: Bearer` (the key never in the logs).
- Bad input: a tenant without a customer id waits (`billing report` names it and exits 1),
  nothing lost: once the id is set its usage goes out, exactly.
- Faults: a storm of 429/500/timeouts/dropped connections (applied, answer lost), and
  `billing report` killed with SIGKILL in the middle: after a rerun the totals are exact.
- A Stripe key missing: `billing report` says so and exits 1, rows wait.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

from harness import config
from harness.postgres import Postgres
from harness.sidecar import SidecarProcess, sidecar_bin
from harness.stripe import StripeStandIn
from harness.wait import until
from test_registry_e2e import ADMIN, NODE_TOKENS, Api, filter_config

KEY = "sk_test_tollgate_billing_e2e_secret"
METER = "api_requests"


@pytest.fixture
def stripe() -> Iterator[StripeStandIn]:
    """The Stripe stand-in on a free loopback port, stopped afterwards."""
    server = StripeStandIn(KEY, delay_s=1.5).start()
    server.add_meter(METER)
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request) -> Iterator[str | None]:
    if request.param == "sqlite":
        yield None
        return
    workdir = tempfile.mkdtemp(prefix="tollgate-billing-pg-")
    os.chmod(workdir, 0o755)
    server = Postgres(workdir)
    try:
        yield server.url
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def billing_env(stripe: StripeStandIn, database_url: str | None, **more: str) -> dict[str, str]:
    env = {
        "TOLLGATE_ADMIN_TOKEN": ADMIN,
        "TOLLGATE_NODE_TOKEN": NODE_TOKENS,
        "TOLLGATE_FLUSH_INTERVAL": "1s",
        "TOLLGATE_QUOTA_INTERVAL": "1s",
        "TOLLGATE_STRIPE_API_KEY": KEY,
        "TOLLGATE_STRIPE_API_BASE": stripe.url,
        "TOLLGATE_STRIPE_TIMEOUT": "1s",
        "TOLLGATE_BILLING_INTERVAL": "500ms",
        "TOLLGATE_BILLING_RETRY_BASE": "50ms",
        "TOLLGATE_BILLING_LEASE": "2s",
        "TOLLGATE_BILLING_REPORT_TIMEOUT": "60s",
    }
    if database_url:
        env["TOLLGATE_DATABASE_URL"] = database_url
    env.update(more)
    return env


def billing_cli(workdir: Path, env: dict[str, str], *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    """`tollgate-sidecar billing …` in the sidecar's directory (its SQLite file)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_")} | env
    return subprocess.run([str(sidecar_bin()), "billing", *args], cwd=workdir, env=full,
                          capture_output=True, text=True, timeout=timeout)


def metered_setup(api: Api, tenants: dict[str, str | None]) -> dict[str, str]:
    """A metered plan and `tenants` (id → customer id or None) on it; their API keys."""
    api.put_plan("metered", requests_per_minute=100_000, billing="metered", meter_event_name=METER)
    keys = {}
    for tid, customer in tenants.items():
        api.put_tenant(tid, "metered", stripe_customer_id=customer, billing_anchor_day=1)
        keys[tid] = api.new_key(tid)[1]
    return keys


def traffic(envoy, keys: dict[str, str], rounds: int, per_round: dict[str, int]) -> dict[str, int]:
    """`rounds` rounds of requests (a flush between most of them): admitted per tenant."""
    admitted = dict.fromkeys(keys, 0)
    for tid, key in keys.items():
        until(lambda k=key: envoy.get("/", headers={"x-api-key": k}), lambda r: r.status == 200,
              timeout=10, what=f"{tid}'s key known to the filter")
        admitted[tid] += 1
    for _ in range(rounds):
        for tid, key in keys.items():
            for _ in range(per_round.get(tid, 0)):
                response = envoy.get("/", headers={"x-api-key": key})
                assert response.status == 200, response
                admitted[tid] += 1
        time.sleep(1.1)  # a flush (every 1 s): the next round goes into other outbox rows
    return admitted


def flushed(api: Api, tenants) -> dict[str, int]:
    return {tid: api.tenant(tid)["usage"]["requests"] for tid in tenants}


def assert_exactly_once(stripe: StripeStandIn, expected: dict[str, int]) -> None:
    assert stripe.totals() == expected, (stripe.totals(), expected)
    assert max(stripe.identifiers.values(), default=0) == 1, "an identifier was accepted twice"
    assert stripe.concurrency_violations == 0
    assert stripe.auth_headers == {f"Bearer {KEY}"}, stripe.auth_headers


def test_usage_reaches_stripe_exactly_once(start_envoy, stripe, database_url, tmp_path: Path) -> None:
    env = billing_env(stripe, database_url)
    sidecar = SidecarProcess(tmp_path / "sidecar", env=env).start()
    try:
        api = Api(sidecar)
        keys = metered_setup(api, {"acme": "cus_acme", "beta": "cus_beta", "nocus": None})
        envoy = start_envoy(config.tollgate(json.dumps(filter_config()), sidecar_port=sidecar.port))
        admitted = traffic(envoy, keys, rounds=3, per_round={"acme": 7, "beta": 4, "nocus": 3})
        usage = until(lambda: flushed(api, keys), lambda u: u == admitted, timeout=15, what="the usage flushed")
        until(stripe.totals, lambda t: t == {"cus_acme": usage["acme"], "cus_beta": usage["beta"]},
              timeout=20, what="the metered usage accepted at Stripe")
        assert_exactly_once(stripe, {"cus_acme": usage["acme"], "cus_beta": usage["beta"]})
        assert len(stripe.events) >= 4, "usage of several flushes: several events"
        # Every event of today, inside the usage day, at most 5 minutes ahead.
        day = int(time.time()) // 86_400 * 86_400
        assert all(day <= e["timestamp"] < day + 86_400 for e in stripe.events), stripe.events
        metrics = sidecar.metric_series()
        assert sidecar.metric("tollgate_billing_meter_events_total", outcome="sent") == len(stripe.events), metrics
        assert sidecar.metric("tollgate_billing_meter_events_waiting") >= 1  # nocus waits
    finally:
        sidecar.stop()

    # The tenant without a customer id: its rows wait, `billing report` names it, exit 1.
    report = billing_cli(sidecar.workdir, env, "report")
    assert report.returncode == 1, report
    assert 'tenant "nocus" has no stripe_customer_id' in report.stderr, report.stderr
    answer = json.loads(report.stdout)
    assert answer["outbox"]["no_customer"] >= 1 and answer["outbox"]["dead"] == 0, answer
    # Fixed (the registry CLI, on the same database): everything goes out, exit 0.
    put = subprocess.run([str(sidecar_bin()), "tenants", "put", "nocus",
                          json.dumps({"plan": "metered", "stripe_customer_id": "cus_nocus", "billing_anchor_day": 1})],
                         cwd=sidecar.workdir, env={k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_")} | env,
                         capture_output=True, text=True, timeout=30)
    assert put.returncode == 0, put
    report = billing_cli(sidecar.workdir, env, "report")
    assert report.returncode == 0, report
    assert_exactly_once(stripe, {"cus_acme": usage["acme"], "cus_beta": usage["beta"], "cus_nocus": usage["nocus"]})
    assert KEY not in sidecar.log_path.read_text(errors="replace")
    assert KEY not in report.stdout + report.stderr


def test_faults_and_kill9_lose_nothing_and_count_nothing_twice(start_envoy, stripe, tmp_path: Path) -> None:
    tenants = {f"t{i:02d}": f"cus_{i:02d}" for i in range(12)}
    # The serving sidecar has no key, so it sends nothing: `billing report` does.
    env = billing_env(stripe, None)
    serving = {k: v for k, v in env.items() if k != "TOLLGATE_STRIPE_API_KEY"}
    sidecar = SidecarProcess(tmp_path / "sidecar", env=serving).start()
    try:
        api = Api(sidecar)
        keys = metered_setup(api, tenants)
        envoy = start_envoy(config.tollgate(json.dumps(filter_config()), sidecar_port=sidecar.port))
        admitted = traffic(envoy, keys, rounds=4, per_round=dict.fromkeys(tenants, 3))
        usage = until(lambda: flushed(api, keys), lambda u: u == admitted, timeout=15, what="the usage flushed")
    finally:
        sidecar.stop()
    expected = {tenants[t]: n for t, n in usage.items()}
    assert stripe.totals() == {}

    # A storm: 40% of the calls fail (429, 500 before applying; a timeout or a dropped
    # connection after applying: the answer is lost). The report is killed -9 mid-way.
    stripe.storm(["429", "500", "timeout", "drop"], ratio=0.4, seed=11)
    full = {k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_")} | env | {"TOLLGATE_STRIPE_RATE": "20"}
    proc = subprocess.Popen([str(sidecar_bin()), "billing", "report"], cwd=sidecar.workdir, env=full,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        until(lambda: len(stripe.events), lambda n: n >= 5, timeout=30, what="some events accepted")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    accepted_at_kill = len(stripe.events)
    assert stripe.totals() != expected, "killed before the end"
    report = billing_cli(sidecar.workdir, env, "report")
    assert report.returncode == 0, (report.stdout, report.stderr[-3000:])
    assert len(stripe.events) > accepted_at_kill
    stripe.calm()
    assert_exactly_once(stripe, expected)
    answer = json.loads(report.stdout)
    assert answer["outbox"]["pending"] == 0 and answer["outbox"]["dead"] == 0, answer
    # The storm was real: every kind of fault happened, and the lost answers (applied at Stripe)
    # were repaired by replays or "already exists", never by a second event.
    assert all(stripe.injected[k] > 0 for k in ("429", "500", "timeout", "drop")), stripe.injected
    assert stripe.requests["POST /v1/billing/meter_events"] > len(stripe.events) + 10, stripe.requests
    print(f"storm: {dict(stripe.injected)}, {stripe.requests['POST /v1/billing/meter_events']} calls, "
          f"{len(stripe.events)} events, {accepted_at_kill} accepted when killed")


def test_a_missing_key_or_a_refusal_is_reported_not_lost(start_envoy, stripe, tmp_path: Path) -> None:
    env = billing_env(stripe, None)
    no_key = {k: v for k, v in env.items() if k != "TOLLGATE_STRIPE_API_KEY"}
    sidecar = SidecarProcess(tmp_path / "sidecar", env=no_key).start()
    try:
        api = Api(sidecar)
        keys = metered_setup(api, {"acme": "cus_acme"})
        envoy = start_envoy(config.tollgate(json.dumps(filter_config()), sidecar_port=sidecar.port))
        admitted = traffic(envoy, keys, rounds=1, per_round={"acme": 5})
        usage = until(lambda: flushed(api, keys), lambda u: u == admitted, timeout=15, what="the usage flushed")
    finally:
        sidecar.stop()
    assert "meter events are not sent" in sidecar.log_tail(20_000)
    report = billing_cli(sidecar.workdir, no_key, "report")
    assert report.returncode == 1 and "TOLLGATE_STRIPE_API_KEY is not set" in report.stderr, report
    assert json.loads(report.stdout)["outbox"]["pending"] >= 1
    # A wrong key: Stripe answers 401, a refusal for good: dead-lettered, kept, exit 1.
    wrong = billing_cli(sidecar.workdir, env | {"TOLLGATE_STRIPE_API_KEY": "sk_test_wrong"}, "report")
    assert wrong.returncode == 1 and "dead-lettered" in wrong.stderr, wrong
    assert "Invalid API Key" in wrong.stderr and "sk_test_wrong" not in wrong.stderr + wrong.stdout
    assert stripe.totals() == {}
    assert usage["acme"] > 0
