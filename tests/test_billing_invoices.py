"""Overage invoices end to end: the real sidecar's flushed usage, `tollgate-sidecar billing
close-periods --now …` against the Stripe stand-in, on SQLite and PostgreSQL.

Two tenants over their quota, one under it, one without a customer id. The command is stopped
dead (abort, no clean-up) right after Stripe answered each step in turn — after the plan is
stored, after the invoice was created, after the item was added, after finalize — before the
step's state was stored, then run to the end: each tenant over its quota has exactly one
invoice with exactly one item of the right amount, finalized; the tenant under it has none; the
tenant without a customer id is named and waits; a later run invoices nothing again.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from harness.sidecar import SidecarProcess, sidecar_bin
from harness.stripe import StripeStandIn
from harness.wait import until
from test_billing import KEY, billing_cli, billing_env, database_url, stripe  # noqa: F401 (fixtures)
from test_registry_e2e import Api

QUOTA, PER, PRICE = 100, 10, 7
USAGE = {"over1": 250, "over2": 101, "under": 60, "nocus": 300}
CUSTOMERS = {"over1": "cus_o1", "over2": "cus_o2", "under": "cus_u", "nocus": None}
# Over by 150 → 15 units of 10 → 105; over by 1 → 1 unit → 7.
AMOUNTS = {"cus_o1": 105, "cus_o2": 7}


def send_usage(sidecar: SidecarProcess) -> None:
    api = Api(sidecar)
    today = time.strftime("%Y-%m-%d", time.gmtime())
    # The latency histogram (12 buckets) must add up to the requests.
    records = [{"tenant": t, "date": today, "endpoint": "GET /x", "requests": n, "latency_buckets": [n] + [0] * 11}
               for t, n in USAGE.items()]
    status, answer = api.call("POST", "/v1/usage", {"sender": 5, "seq": 1, "records": records}, token="t1")
    assert status == 200, (status, answer)


def next_period_start() -> str:
    """The first day of next month (anchor day 1), 00:05 UTC: the current period has ended."""
    now = time.gmtime()
    year, month = (now.tm_year + 1, 1) if now.tm_mon == 12 else (now.tm_year, now.tm_mon + 1)
    return f"{year:04d}-{month:02d}-01T00:05:00Z"


def prepared(stripe: StripeStandIn, database_url, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """The tenants with their usage flushed; the sidecar stopped. (its directory, the CLI env)"""
    env = billing_env(stripe, database_url)
    serving = {k: v for k, v in env.items() if k != "TOLLGATE_STRIPE_API_KEY"}  # the job stays idle
    sidecar = SidecarProcess(tmp_path / "sidecar", env=serving).start()
    try:
        api = Api(sidecar)
        api.put_plan("fixed", requests_per_minute=1000, monthly_quota=QUOTA, overage="bill", billing="fixed",
                     overage_price={"per": PER, "amount": PRICE, "currency": "usd"})
        for tid, customer in CUSTOMERS.items():
            api.put_tenant(tid, "fixed", stripe_customer_id=customer, billing_anchor_day=1)
        send_usage(sidecar)
        until(lambda: {t: api.tenant(t)["usage"]["requests"] for t in USAGE}, lambda u: u == USAGE,
              timeout=15, what="the usage flushed")
    finally:
        sidecar.stop()

    return sidecar.workdir, env


def assert_one_invoice_each(stripe: StripeStandIn) -> None:
    by_customer: dict[str, list[dict]] = {}
    for invoice in stripe.invoices.values():
        by_customer.setdefault(invoice["customer"], []).append(invoice)
    assert sorted(by_customer) == sorted(AMOUNTS), by_customer
    for customer, amount in AMOUNTS.items():
        [invoice] = by_customer[customer]
        assert invoice["status"] == "open" and invoice["auto_advance"] is False, invoice
        [item_id] = invoice["lines"]
        item = stripe.items[item_id]
        assert (item["amount"], item["currency"]) == (amount, "usd"), item
    assert len(stripe.items) == len(AMOUNTS)


def test_close_periods_invoices_once_whatever_crashes(stripe: StripeStandIn, database_url, tmp_path: Path) -> None:
    workdir, env = prepared(stripe, database_url, tmp_path)
    now = next_period_start()
    for step in ("planned", "invoice", "item", "finalize"):
        crashed = billing_cli(workdir, env | {"TOLLGATE_TEST_CRASH_AFTER": step}, "close-periods", "--now", now)
        assert crashed.returncode < 0 or crashed.returncode > 1, (step, crashed)  # killed by SIGABRT
    done = billing_cli(workdir, env, "close-periods", "--now", now)
    assert done.returncode == 1, done  # the tenant without a customer id
    assert 'tenant "nocus" has no stripe_customer_id' in done.stderr, done.stderr
    answer = json.loads(done.stdout)
    assert answer["unfinished"] == [], answer

    assert_one_invoice_each(stripe)
    assert stripe.requests["POST /v1/invoices"] >= 2 and stripe.requests["POST /v1/invoiceitems"] >= 2

    again = billing_cli(workdir, env, "close-periods", "--now", now)
    assert json.loads(again.stdout)["invoiced"] == [], again.stdout
    assert len(stripe.invoices) == len(AMOUNTS) and len(stripe.items) == len(AMOUNTS)
    # Before the period ended: nothing to close.
    early = billing_cli(workdir, env, "close-periods", "--now", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    assert json.loads(early.stdout)["periods"] == 0, early.stdout


def test_a_resume_after_stripes_idempotency_window_finds_the_invoice_and_item(stripe: StripeStandIn, tmp_path: Path) -> None:
    """Crashed after the invoice, then after the item, each time resumed more than 24 h later
    (the plan aged in the database, Stripe's idempotency keys pruned): the stored metadata
    finds the invoice among the customer's and the item among its lines — no second one."""
    workdir, env = prepared(stripe, None, tmp_path)
    [db] = sorted(workdir.glob("*.db"))
    now = next_period_start()

    def a_day_later() -> None:
        with sqlite3.connect(db) as conn:
            conn.execute("UPDATE billing_overage_invoices SET created_at = created_at - 2 * 86400")
        stripe.forget_idempotency_keys()

    for step in ("invoice", "item"):
        crashed = billing_cli(workdir, env | {"TOLLGATE_TEST_CRASH_AFTER": step}, "close-periods", "--now", now)
        assert crashed.returncode < 0 or crashed.returncode > 1, (step, crashed)
        a_day_later()
    done = billing_cli(workdir, env, "close-periods", "--now", now)
    assert done.returncode == 1 and json.loads(done.stdout)["unfinished"] == [], done
    assert_one_invoice_each(stripe)
    assert stripe.requests["GET /v1/invoices"] >= 2, stripe.requests  # looked up, not made again
