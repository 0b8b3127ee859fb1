"""The figures of `bench/sidecar` as Markdown, and their section of BENCHMARKS.md."""

import statistics

from bench.common import report as common
from bench.sidecar import latency
from bench.sidecar.decisions import CASES
from bench.sidecar.one_worker import CONFIGS

START = "<!-- bench/sidecar: figures start (everything down to the end marker is rewritten) -->"
END = "<!-- bench/sidecar: figures end -->"


def _median(rows, key):
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(values) if values else None


def _by(results, field, name):
    return [r for r in results if r[field] == name]


def _pct(x):
    return f"{x * 100:.0f}%"


def _num(x, fmt="{:,.0f}"):
    return "–" if x is None else fmt.format(x)


def _paired(results, field, x, y, key="rps"):
    """x ÷ y run by run (the two were measured seconds apart)."""
    runs = sorted({r["run"] for r in results})
    out = []
    for run in runs:
        a = [r for r in results if r["run"] == run and r[field] == x]
        b = [r for r in results if r["run"] == run and r[field] == y]
        if a and b:
            out.append(a[0][key] / b[0][key])
    return out


def _check(ok, text, runs):
    return f"- {'met' if ok else '**NOT MET**'}: {text} (run by run: {runs})"


def part1(results):
    rows = ["| case | decisions/s | sidecar CPU µs / decision | Redis CPU µs / decision "
            "| CAS attempts / decision | wrk CPU |",
            "| --- | ---: | ---: | ---: | ---: | ---: |"]
    med = {}
    for case in CASES:
        rs = _by(results, "case", case)
        if not rs:
            continue
        med[case] = _median(rs, "rps")
        rows.append(f"| {case} | {med[case]:,.0f} | {_median(rs, 'sidecar_us'):.1f} "
                    f"| {_num(_median(rs, 'redis_us'), '{:.1f}')} | {_num(_median(rs, 'cas_per_decision'), '{:.2f}')} "
                    f"| {_median(rs, 'wrk_cpu_pct'):.0f}% |")
    rows += ["", "| redis-benchmark (-c 50 -P 1) | GET/s | EVALSHA (CAS)/s | GET + EVALSHA pairs/s "
             "| Redis CPU µs / pair | sidecar ÷ pairs |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for keys in ("many", "hot"):
        rs = _by(results, "case", f"redis-benchmark-{keys}")
        if not rs:
            continue
        pairs = _median(rs, "rps")
        ratio = med.get(f"redis-{keys}")
        runs = ", ".join(_pct(x) for x in _paired(results, "case", f"redis-{keys}", f"redis-benchmark-{keys}"))
        rows.append(f"| {'many keys' if keys == 'many' else 'one hot key'} | {_median(rs, 'get_rps'):,.0f} | {_median(rs, 'evalsha_rps'):,.0f} "
                    f"| {pairs:,.0f} | {_median(rs, 'redis_us'):.1f} "
                    f"| {_pct(ratio / pairs) if ratio else '–'} (runs: {runs or '–'}) |")
    checks = []
    if "redis-many" in med:
        runs = ", ".join(f"{r['rps']:,.0f}" for r in _by(results, "case", "redis-many"))
        checks.append(_check(med["redis-many"] >= 20_000,
                             f"≥ 20,000 strict decisions/s with Redis, many keys: {med['redis-many']:,.0f}", runs))
    return rows, checks


def part23(results):
    rows = ["| config | req/s | ÷ (a) | ÷ (l) | ÷ (L) | Envoy CPU µs/req | sidecar µs/req | Redis µs/req "
            "| Envoy busy | calls to the sidecar / req | new sidecar connections |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    med = {n: _median(_by(results, "config", n), "rps") for n in CONFIGS if _by(results, "config", n)}
    for n, rps in med.items():
        rs = _by(results, "config", n)
        ratio = {base: _pct(rps / med[base]) if base in med and CONFIGS[base][1] == CONFIGS[n][1] else "–"
                 for base in ("a", "l", "L")}
        rows.append(f"| ({n}) {CONFIGS[n][0]} | {rps:,.0f} | {ratio['a']} | {ratio['l']} | {ratio['L']} "
                    f"| {_median(rs, 'envoy_us'):.1f} | {_median(rs, 'sidecar_us'):.1f} "
                    f"| {_median(rs, 'redis_us'):.1f} | {_median(rs, 'envoy_cpu_pct'):.0f}% "
                    f"| {statistics.median(r['sidecar_calls'] / r['requests'] for r in rs):.3f} "
                    f"| {_median(rs, 'sidecar_connections'):,.0f} |")
    checks = []
    if "s" in med:
        runs = ", ".join(f"{r['rps']:,.0f}" for r in _by(results, "config", "s"))
        checks.append(_check(med["s"] >= 10_000, f"(s) one Envoy worker with a strict rule ≥ 10,000 req/s: "
                                                 f"{med['s']:,.0f}", runs))
    if "g" in med and "L" in med:
        ratio = med["g"] / med["L"]
        runs = ", ".join(_pct(x) for x in _paired(results, "config", "g", "L"))
        checks.append(_check(ratio >= 0.95, f"(g) fixture with its global rule keeps ≥ 95% of (L) all-local's "
                                            f"req/s: {_pct(ratio)}", runs))
    return rows, checks


def part4(results, opts):
    rows = ["| nodes | sync interval | offered | load took | admitted | admitted per node | overshoot | % of limit |",
            "| ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |"]
    for r in results:
        rows.append(f"| {r['nodes']} | {r['interval_ms']} ms | {r['offered']:,} | {r['seconds']:.1f} s | {r['admitted']:,} "
                    f"| {' + '.join(str(n) for n in r['per_node'])} | {r['overshoot']:+,} "
                    f"| {r['overshoot_pct']:+.1f}% |")
    head = (f"`{opts.overshoot_algorithm}` {opts.overshoot_limit} per {opts.overshoot_window}, `global`, one "
            f"tenant; {opts.overshoot_rate} req/s offered for {opts.overshoot_seconds} s, dealt round-robin over "
            "the nodes (one Envoy worker each, one keep-alive connection each); a fresh in-memory sidecar "
            "per row.")
    return [head, "", *rows], []


def _runs(rows, key):
    return ", ".join(f"{r[key]:,.0f}" for r in rows)


def part6(results, opts):
    """Open-loop latency per rate and configuration: medians over the runs, µs."""
    rows = ["| rate | config | p50 µs | p90 µs | p99 µs | max µs | achieved req/s | sidecar calls / req | p99 run by run |",
            "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    checks = []
    for rate in opts.latency_rates:
        for name in latency.NAMES:
            rs = [r for r in results if r["rate"] == rate and r["config"] == name]
            if not rs:
                continue
            rows.append(f"| {rate:,} | ({name}) {CONFIGS[name][0]} | {_median(rs, 'p50_us'):,.0f} "
                        f"| {_median(rs, 'p90_us'):,.0f} | {_median(rs, 'p99_us'):,.0f} | {_median(rs, 'max_us'):,.0f} "
                        f"| {_median(rs, 'achieved_rps'):,.0f} | {_median(rs, 'calls_per_request'):.3f} "
                        f"| {_runs(rs, 'p99_us')} |")
            if name == "s" and rate == latency.TARGET_RATE:
                p99 = _median(rs, "p99_us")
                checks.append(_check(p99 <= latency.TARGET_P99_US,
                                     f"(s) strict p99 ≤ 2 ms at 2,000 req/s on one Envoy worker: {p99:,.0f} µs",
                                     _runs(rs, "p99_us")))
    head = (f"oha -q RATE --latency-correction -c{opts.connections} for {opts.latency_seconds} s per row, "
            f"{opts.runs} interleaved runs; the sidecar (release) on Redis; paths drawn from {latency.PATHS_REGEX}.")
    return [head, "", *rows], checks


def every_run(results):
    rows = ["| run | what | req/s or decisions/s | CPU µs per request: Envoy / sidecar / Redis | busy: Envoy / sidecar / wrk |",
            "| ---: | --- | ---: | --- | --- |"]
    for r in results:
        what = r.get("case") or f"({r.get('config')})"
        if "get_rps" in r:
            rows.append(f"| {r['run']} | {what} | GET {r['get_rps']:,.0f}, EVALSHA {r['evalsha_rps']:,.0f} "
                        f"→ {r['rps']:,.0f} pairs | – / – / {r['redis_us']:.1f} per pair | – |")
            continue
        cpu = " / ".join(_num(r.get(k), "{:.1f}") for k in ("envoy_us", "sidecar_us", "redis_us"))
        busy = " / ".join(_num(r.get(k), "{:.0f}%") for k in ("envoy_cpu_pct", "sidecar_cpu_pct", "wrk_cpu_pct"))
        rows.append(f"| {r['run']} | {what} | {r['rps']:,.0f} | {cpu} | {busy} |")
    return rows


def tools(opts):
    first = common.first_line
    redis = first([opts.redis_server, "--version"]).replace("Redis server v=", "redis-server ").split(" sha=")[0]
    oha = f"; {first([opts.oha, '--version'])}" if "6" in opts.parts else ""
    return (f"{first([opts.wrk, '-v']).split(' Copyright')[0]}; {redis}; "
            f"{first([opts.redis_benchmark, '--version'])}{oha}")


def figures(opts, sections, elapsed):
    """`sections`: (heading, Markdown rows, target lines, every-run rows) of each part that ran."""
    out = []
    if opts.label:
        out += [f"**{opts.label}**", ""]
    runs = (f"Parts 1–3: {opts.runs} interleaved runs × ({opts.warmup} s warm-up + {opts.duration} s wrk -t1 "
            f"-c{opts.connections}). " if set(opts.parts) & set("123") else "")
    out += [f"Machine: {common.machine(opts.envoy)}.", "",
            f"{runs}{elapsed:.0f} s in all. Tools: {tools(opts)}.", ""]
    checks, runs = [], []
    for heading, rows, targets, every in sections:
        out += [f"### {heading}", "", *rows, ""]
        checks += targets
        runs += every
    if checks:
        out += ["Targets (sidecar issue), on the medians:", "", *checks, ""]
    if runs:
        out += ["Every run:", "", *every_run(runs)]
    return "\n".join(out).rstrip()


def rewrite_benchmarks_md(path, figures_md):
    common.rewrite_between_markers(path, START, END, figures_md, "bench/sidecar")
