"""bench/billing: meter events/s and closing 10,000 tenants' periods against the stand-in.

The outbox rows and tenants are written straight into a fresh SQLite database (migrated by
`tollgate-sidecar migrate`), as the usage flush and the registry would have written them;
then the real CLI sends them. The stand-in runs in this process (a thread per connection).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if __package__ in (None, ""):  # run as a file: the repository root on the path
    sys.path.insert(0, str(ROOT))

from tests.harness.stripe import StripeStandIn  # noqa: E402

KEY = "sk_test_bench"
DAY = 86_400


def env(stripe: StripeStandIn, db: Path, rate: int, concurrency: int) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_")}
    return base | {
        "TOLLGATE_DATABASE_URL": f"sqlite://{db}?mode=rwc",
        "TOLLGATE_STRIPE_API_KEY": KEY,
        "TOLLGATE_STRIPE_API_BASE": stripe.url,
        "TOLLGATE_STRIPE_RATE": str(rate),
        "TOLLGATE_BILLING_CONCURRENCY": str(concurrency),
        "TOLLGATE_BILLING_REPORT_TIMEOUT": "10m",
        "RUST_LOG": "warn",
    }


def cpu_seconds() -> tuple[float, float]:
    """CPU seconds (user + system) of finished children (the sidecar CLI) and of this process
    (the stand-in's threads)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = resource.getrusage(resource.RUSAGE_SELF)
    return children.ru_utime + children.ru_stime, own.ru_utime + own.ru_stime


def migrate(binary: Path, environment: dict[str, str]) -> None:
    subprocess.run([str(binary), "migrate"], env=environment, check=True, timeout=60)


def meter_events(binary: Path, events: int, customers: int, rate: int, concurrency: int) -> dict:
    stripe = StripeStandIn(KEY).start()
    with tempfile.TemporaryDirectory(prefix="tollgate-bench-billing-") as tmp:
        db = Path(tmp) / "bench.db"
        environment = env(stripe, db, rate, concurrency)
        migrate(binary, environment)
        now = int(time.time())
        today = time.strftime("%Y-%m-%d", time.gmtime(now))
        with sqlite3.connect(db) as conn:
            conn.execute("INSERT INTO plans (name, requests_per_minute, overage, billing, meter_event_name, created_at, updated_at) "
                         "VALUES ('metered', 100, 'block', 'metered', 'api_requests', 0, 0)")
            conn.executemany("INSERT INTO tenants (id, plan, stripe_customer_id, billing_anchor_day, status, created_at, updated_at) "
                             "VALUES (?, 'metered', ?, 1, 'active', 0, 0)", [(f"t{c}", f"cus_{c}") for c in range(customers)])
            conn.executemany(
                "INSERT INTO billing_meter_events (identifier, kind, tenant_id, flush_id, usage_date, event_name, value, "
                "event_timestamp, status, created_at) VALUES (?, 'usage', ?, ?, ?, 'api_requests', ?, ?, 'pending', ?)",
                [("tg1_" + hashlib.sha256(f"bench{i}".encode()).hexdigest()[:48], f"t{i % customers}", f"f{i}", today,
                  1 + i % 7, now, now) for i in range(events)])
        started, cpu = time.monotonic(), cpu_seconds()
        done = subprocess.run([str(binary), "billing", "report"], env=environment, capture_output=True, text=True, timeout=900)
        elapsed = time.monotonic() - started
        sidecar_cpu, stand_in_cpu = (b - a for a, b in zip(cpu, cpu_seconds()))
    stripe.stop()
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(stripe.events) == events, (len(stripe.events), events)
    assert max(stripe.identifiers.values()) == 1 and stripe.concurrency_violations == 0
    return {"events": events, "customers": customers, "seconds": round(elapsed, 2), "events_per_s": round(events / elapsed),
            "cpu_s_sidecar": round(sidecar_cpu, 1), "cpu_s_stand_in": round(stand_in_cpu, 1)}


def close_periods(binary: Path, tenants: int, rate: int, concurrency: int) -> dict:
    stripe = StripeStandIn(KEY).start()
    with tempfile.TemporaryDirectory(prefix="tollgate-bench-billing-") as tmp:
        db = Path(tmp) / "bench.db"
        environment = env(stripe, db, rate, concurrency)
        migrate(binary, environment)
        created = int(time.mktime((2026, 10, 5, 0, 0, 0, 0, 0, 0))) - time.timezone
        with sqlite3.connect(db) as conn:
            conn.execute("INSERT INTO plans (name, requests_per_minute, monthly_quota, overage, overage_per, overage_amount, "
                         "overage_currency, billing, meter_event_name, created_at, updated_at) "
                         "VALUES ('fixed', 100, 1000, 'bill', 100, 25, 'usd', 'fixed', 'api_requests', 0, 0)")
            conn.executemany("INSERT INTO tenants (id, plan, stripe_customer_id, billing_anchor_day, status, created_at, updated_at) "
                             "VALUES (?, 'fixed', ?, 1, 'active', ?, ?)", [(f"t{c}", f"cus_{c}", created, created) for c in range(tenants)])
            conn.executemany("INSERT INTO tenant_plan_history (tenant_id, plan, changed_at) VALUES (?, 'fixed', ?)",
                             [(f"t{c}", created) for c in range(tenants)])
            conn.executemany("INSERT INTO api_usage_daily (tenant_id, date, endpoint, plan, requests) VALUES (?, '2026-11-10', 'GET /x', 'fixed', ?)",
                             [(f"t{c}", 1000 + 1 + c % 500) for c in range(tenants)])
        started, cpu = time.monotonic(), cpu_seconds()
        done = subprocess.run([str(binary), "billing", "close-periods", "--now", "2026-12-01T00:10:00Z"], env=environment,
                              capture_output=True, text=True, timeout=900)
        elapsed = time.monotonic() - started
        sidecar_cpu, stand_in_cpu = (b - a for a, b in zip(cpu, cpu_seconds()))
    stripe.stop()
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(stripe.invoices) == tenants and len(stripe.items) == tenants, (len(stripe.invoices), len(stripe.items))
    assert all(i["status"] == "open" for i in stripe.invoices.values())
    return {"tenants": tenants, "stripe_calls": 3 * tenants, "seconds": round(elapsed, 2),
            "cpu_s_sidecar": round(sidecar_cpu, 1), "cpu_s_stand_in": round(stand_in_cpu, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", default=None, help="the sidecar (default: target/release, else target/debug)")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--customers", type=int, default=200)
    parser.add_argument("--tenants", type=int, default=10_000)
    parser.add_argument("--rate", type=int, default=2_000, help="TOLLGATE_STRIPE_RATE")
    parser.add_argument("--concurrency", type=int, default=64, help="TOLLGATE_BILLING_CONCURRENCY")
    parser.add_argument("--only", choices=["meter", "close"], default=None)
    args = parser.parse_args()
    binary = Path(args.binary) if args.binary else next(
        (p for p in (ROOT / "target/release/tollgate-sidecar", ROOT / "target/debug/tollgate-sidecar") if p.exists()), None)
    if binary is None:
        sys.exit("bench/billing: build the sidecar first (cargo build -p tollgate-sidecar)")
    print(f"bench/billing: {binary.relative_to(ROOT) if binary.is_relative_to(ROOT) else binary}; "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores", flush=True)
    if args.only in (None, "meter"):
        print("meter events:", meter_events(binary, args.events, args.customers, args.rate, args.concurrency), flush=True)
    if args.only in (None, "close"):
        print("close periods:", close_periods(binary, args.tenants, args.rate, args.concurrency), flush=True)


if __name__ == "__main__":
    main()
