"""The figures of `bench/usage` as Markdown, and their place in BENCHMARKS.md (between the
markers inside "## Usage metering (usage issue)")."""

import statistics

from bench.common import report as common
from tests.harness import postgres

START = "<!-- bench/usage: figures begin -->"
END = "<!-- bench/usage: figures end -->"


def _met(ok):
    return "met" if ok else "**NOT MET**"


def figures(opts, ingest, baseline, flushes, writes_per_record, elapsed):
    out = [f"**{opts.label}**", ""] if opts.label else []
    out += [f"Machine: {common.machine()}.", "",
            f"Command: `bench/usage/run` ({opts.runs} interleaved runs × {opts.seconds:g} s per case, "
            f"{opts.connections} connections, {opts.records} records per batch; {elapsed:.0f} s in all). "
            f"Tools: {common.first_line(['redis-server', '--version']).split(' sha=')[0]}; "
            f"{common.first_line(['redis-benchmark', '--version'])}; {common.first_line([usage_postgres_bin(), '--version'])}.", ""]
    cases = {"shared": (opts.tenants, opts.endpoints), "distinct": (opts.wide_tenants, opts.wide_endpoints)}
    rows = ["| case | keys | records/s (median) | runs | CPU µs / record: sidecar | Redis | load generator |",
            "| --- | ---: | ---: | --- | ---: | ---: | ---: |"]
    med = {}
    for case, (tenants, endpoints) in cases.items():
        rs = [r for r in ingest if r["case"] == case]
        if not rs:
            continue
        med[case] = statistics.median(r["records_per_s"] for r in rs)
        rows.append(f"| {case} | {tenants * endpoints:,} ({tenants} tenants × {endpoints}) | {med[case]:,.0f} "
                    f"| {', '.join(format(r['records_per_s'], ',.0f') for r in rs)} "
                    f"| {statistics.median(r['sidecar_us'] for r in rs):.2f} "
                    f"| {statistics.median(r['redis_us'] for r in rs):.2f} "
                    f"| {statistics.median(r['load_us'] for r in rs):.2f} |")
    out += ["### Ingest: `POST /v1/usage` → Redis (release sidecar with its usage log on, as by default; "
            "one redis-server; all on loopback)", "", *rows, ""]
    if baseline:
        hincrby = statistics.median(b["hincrby_rps"] for b in baseline)
        per = {case: writes_per_record(*tc) for case, tc in cases.items()}
        out += ["| baseline (same Redis, same run) | ops/s (median) | Redis CPU µs / op | "
                "records/s if every record were its own writes |",
                "| --- | ---: | ---: | ---: |",
                f"| `redis-benchmark -c {opts.redis_clients} -P 16 -r 100000 HINCRBY` | {hincrby:,.0f} "
                f"| {statistics.median(b['redis_us'] for b in baseline):.2f} "
                f"| {hincrby / per['shared']:,.0f} ({per['shared']:.1f} writes per record: non-zero counters + plan) |",
                ""]
    if flushes:
        secs = statistics.median(f["seconds"] for f in flushes)
        out += ["### Flush: `tollgate-sidecar flush`, Redis → PostgreSQL (throw-away server, default settings)", "",
                f"{flushes[0]['keys']:,} dirty keys ({opts.flush_tenants} tenants × {opts.flush_endpoints} endpoints), "
                f"Redis emptied and refilled through a sidecar without its usage log before each flush; flush 1 inserts every row, "
                f"the later ones add into existing rows. Checked after each: {flushes[0]['rows']:,} rows in "
                "`api_usage_daily`, `requests` summing to what was ingested, no dirty tenant left.", "",
                "| flush | seconds |", "| ---: | ---: |",
                *[f"| {f['run']} | {f['seconds']:.2f} |" for f in flushes], ""]
    checks = []
    if "shared" in med:
        checks.append(f"- {_met(med['shared'] >= 200_000)}: ≥ 200,000 records/s ingested with Redis "
                      f"(shared keys): {med['shared']:,.0f}")
    if flushes:
        checks.append(f"- {_met(secs <= 10)}: flush of {flushes[0]['keys']:,} dirty keys into PostgreSQL "
                      f"≤ 10 s: {secs:.2f} s (median)")
    if checks:
        out += ["Targets (usage issue 4), on the medians:", "", *checks]
    return "\n".join(out).rstrip()


def usage_postgres_bin():
    try:
        return postgres.find_binary("postgres")
    except RuntimeError:  # only the version line of the report
        return "postgres"


def rewrite_benchmarks_md(path, figures_md):
    common.rewrite_between_markers(path, START, END, figures_md, "bench/usage")
