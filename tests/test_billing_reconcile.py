"""Reconciliation end to end: metered usage reported by the real sidecar to the Stripe
stand-in, then discrepancies injected at the stand-in — one customer's event lost (Stripe has
less), another's doubled by a foreign event (Stripe has more) — and `tollgate-sidecar billing
reconcile --date <today>` run twice, on SQLite and PostgreSQL:

- right after sending, the shortfall is `pending` (Stripe's summaries lag); once settled it
  is found, recorded and corrected exactly once (a correction event of the missing amount;
  the next run finds the day matched and sends nothing);
- the excess is reported (exit 1, named on stderr) and left alone: no negative event.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from harness.sidecar import SidecarProcess
from harness.stripe import StripeStandIn
from harness.wait import until
from test_billing import METER, billing_cli, billing_env, database_url, stripe  # noqa: F401 (fixtures)
from test_registry_e2e import Api

USAGE = {"acme": 40, "beta": 25}
CUSTOMERS = {"acme": "cus_acme", "beta": "cus_beta"}


def test_a_shortfall_is_corrected_once_and_an_excess_reported(stripe: StripeStandIn, database_url, tmp_path: Path) -> None:
    env = billing_env(stripe, database_url)
    sidecar = SidecarProcess(tmp_path / "sidecar", env=env).start()
    today = time.strftime("%Y-%m-%d", time.gmtime())
    try:
        api = Api(sidecar)
        api.put_plan("metered", requests_per_minute=1000, billing="metered", meter_event_name=METER)
        for tid, customer in CUSTOMERS.items():
            api.put_tenant(tid, "metered", stripe_customer_id=customer, billing_anchor_day=1)
        for seq in (1, 2):  # two flushes: two events per customer
            records = [{"tenant": t, "date": today, "endpoint": "GET /x", "requests": n // 2 + seq - 1,
                        "latency_buckets": [n // 2 + seq - 1] + [0] * 11} for t, n in USAGE.items()]
            status, answer = api.call("POST", "/v1/usage", {"sender": 9, "seq": seq, "records": records}, token="t1")
            assert status == 200, (status, answer)
            until(lambda: len(stripe.events), lambda n: n >= 2 * seq, timeout=15, what=f"flush {seq} reported")
        expected = {CUSTOMERS[t]: api.tenant(t)["usage"]["requests"] for t in USAGE}
        until(stripe.totals, lambda t: t == expected, timeout=15, what="the usage at Stripe")
    finally:
        sidecar.stop()

    lost = stripe.lose_event("cus_acme")
    stripe.inject_event(METER, "cus_beta", 5, int(time.time()))
    events_before = len(stripe.events)

    # Right after sending, Stripe's summaries may lag: a shortfall is not judged yet.
    early = billing_cli(sidecar.workdir, env, "reconcile", "--date", today)
    results = {r["tenant"]: r["outcome"] for r in json.loads(early.stdout)["results"]}
    assert results == {"acme": "pending", "beta": "excess"}, early.stdout
    assert len(stripe.events) == events_before

    env = env | {"TOLLGATE_BILLING_RECONCILE_SETTLE": "1ms"}  # as if an hour had passed
    first = billing_cli(sidecar.workdir, env, "reconcile", "--date", today)
    assert first.returncode == 1, first  # the excess
    assert "excess of 5" in first.stderr and "cus_beta" in first.stderr, first.stderr
    results = {r["tenant"]: r for r in json.loads(first.stdout)["results"]}
    acme, beta = results["acme"], results["beta"]
    assert (acme["outcome"], acme["local"], acme["stripe"]) == ("corrected", expected["cus_acme"],
                                                                expected["cus_acme"] - int(lost["payload"]["value"])), acme
    assert acme["correction"].startswith("tg1_")
    assert (beta["outcome"], beta["stripe"] - beta["local"]) == ("excess", 5), beta
    # Corrected at Stripe with one new event of exactly the missing value; nothing negative.
    assert stripe.totals() == {"cus_acme": expected["cus_acme"], "cus_beta": expected["cus_beta"] + 5}
    assert len(stripe.events) == events_before + 1
    assert all(int(e["payload"]["value"]) > 0 for e in stripe.events)

    second = billing_cli(sidecar.workdir, env, "reconcile", "--date", today)
    results = {r["tenant"]: r for r in json.loads(second.stdout)["results"]}
    assert results["acme"]["outcome"] == "matched" and results["beta"]["outcome"] == "excess", results
    assert len(stripe.events) == events_before + 1, "corrected exactly once"
    assert max(stripe.identifiers.values()) == 1

    if database_url is None:  # every result recorded
        [db] = sorted(sidecar.workdir.glob("*.db"))
        with sqlite3.connect(db) as conn:
            rows = conn.execute("SELECT tenant_id, outcome FROM billing_reconciliations ORDER BY checked_at, tenant_id").fetchall()
        assert sorted(rows) == sorted([("acme", "pending"), ("beta", "excess"), ("acme", "corrected"), ("beta", "excess"),
                                       ("acme", "matched"), ("beta", "excess")]), rows
