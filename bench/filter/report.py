"""The figures as Markdown: machine line, medians with ratios and deltas, targets, every run."""

import statistics

from bench.common import report as common
from bench.filter import configs

START = "<!-- bench/run: figures start (everything down to the end marker is rewritten) -->"
END = "<!-- bench/run: figures end -->"


def machine(opts):
    return common.machine(opts.envoy)


def tools(opts):
    """The load tools' versions, as they introduce themselves."""
    wrk = common.first_line([opts.wrk, "-v"]).split(" Copyright")[0]
    return f"{wrk}; {common.first_line([opts.oha, '--version'])}"


def _median(results, name, key):
    return statistics.median(r[key] for r in results if r["config"] == name)


def _pct(x):
    return f"{x * 100:.0f}%"


def _signed(x, digits=1):
    return f"{x:+.{digits}f}"


def medians_table(results, names):
    med = {n: {k: _median(results, n, k) for k in ("rps", "cpu_us", "p50_us", "p99_us")} for n in names}
    rows = ["| config | req/s | ÷ (a) | ÷ (c) | Envoy µs/req | µs over (c) | p50 µs | p99 µs "
            "| p50 over (c) | p99 over (c) |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for n in names:
        m = med[n]
        a, c = med.get("a"), med.get("c")
        rows.append(" | ".join([
            f"| ({n}) {configs.CONFIGS[n][0]}",
            f"{m['rps']:,.0f}",
            _pct(m["rps"] / a["rps"]) if a else "–",
            _pct(m["rps"] / c["rps"]) if c else "–",
            f"{m['cpu_us']:.1f}",
            _signed(m["cpu_us"] - c["cpu_us"]) if c else "–",
            f"{m['p50_us']:.0f}",
            f"{m['p99_us']:.0f}",
            _signed(m["p50_us"] - c["p50_us"], 0) if c else "–",
            _signed(m["p99_us"] - c["p99_us"], 0) if c else "–",
        ]) + " |")
    return med, rows


def _per_run(results, x, y, fn):
    """fn(x's figures, y's figures) for each run that measured both: the paired view, which
    shows how far the medians can be trusted."""
    by_run = {}
    for r in results:
        by_run.setdefault(r["run"], {})[r["config"]] = r
    return [fn(pair[x], pair[y]) for _, pair in sorted(by_run.items()) if x in pair and y in pair]


def targets(med, results):
    """Issue 2's targets, checked against the medians (only those whose configs were run), each
    followed by the same figure run by run."""
    lines = []

    def check(ok, text, x, fn, show):
        runs = ", ".join(show(v) for v in _per_run(results, x, "c", fn))
        lines.append(f"- {'met' if ok else '**NOT MET**'}: {text} (run by run: {runs})")

    def ratio(x, y):
        return x["rps"] / y["rps"]

    def cpu(x, y):
        return x["cpu_us"] - y["cpu_us"]

    def p50(x, y):
        return x["p50_us"] - y["p50_us"]

    def p99(x, y):
        return x["p99_us"] - y["p99_us"]

    def us(v):
        return _signed(v, 0)

    c, d, e = med.get("c"), med.get("d"), med.get("e")
    if c and d:
        r = ratio(d, c)
        check(r >= 0.9, f"(d) keeps ≥ 90% of (c)'s req/s: {_pct(r)}" + (" — below 80% is a defect" if r < 0.8 else ""),
              "d", ratio, _pct)
        check(cpu(d, c) <= 2.5, f"(d) costs ≤ +2.5 µs of Envoy CPU per request over (c): {_signed(cpu(d, c))} µs",
              "d", cpu, _signed)
        check(p50(d, c) <= 30, f"(d) p50 within +30 µs of (c) at the fixed rate: {us(p50(d, c))} µs", "d", p50, us)
        check(p99(d, c) <= 100, f"(d) p99 within +100 µs of (c) at the fixed rate: {us(p99(d, c))} µs", "d", p99, us)
    if c and e:
        r = ratio(e, c)
        check(r >= 0.95, f"(e) refusing keeps ≥ 95% of (c)'s req/s: {_pct(r)}", "e", ratio, _pct)
    return lines


def runs_table(results):
    rows = ["| run | config | req/s | Envoy µs/req | Envoy CPU | wrk CPU | others on Envoy's / load core "
            "| p50 µs | p99 µs | open-loop rate | statuses (open loop) |",
            "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in results:
        statuses = ", ".join(f"{code}×{n}" for code, n in sorted(r["statuses"].items()))
        rows.append(f"| {r['run']} | ({r['config']}) | {r['rps']:,.0f} | {r['cpu_us']:.1f} "
                    f"| {r['envoy_cpu_pct']:.0f}% | {r['wrk_cpu_pct']:.0f}% "
                    f"| {r['others_envoy_core_pct']:.0f}% / {r['others_load_core_pct']:.0f}% | {r['p50_us']:.0f} "
                    f"| {r['p99_us']:.0f} | {r['achieved_rps']:,.0f} | {statuses} |")
    return rows


def noisy(opts, r):
    """Why one run's figures are suspect, if they are: Envoy not saturated in the closed loop,
    other processes on the benchmark's cores, or oha short of its rate."""
    reasons = []
    if r["envoy_cpu_pct"] < 90:
        reasons.append(f"Envoy only {r['envoy_cpu_pct']:.0f}% busy under wrk")
    if max(r["others_envoy_core_pct"], r["others_load_core_pct"]) > 10:
        reasons.append("other processes took "
                       f"{r['others_envoy_core_pct']:.0f}% / {r['others_load_core_pct']:.0f}% of the cores")
    if r["achieved_rps"] < 0.95 * opts.rate:
        reasons.append(f"oha reached only {r['achieved_rps']:,.0f} of {opts.rate} req/s")
    return reasons


def figures(opts, results, elapsed):
    names = list(dict.fromkeys(r["config"] for r in results))
    med, medians = medians_table(results, names)
    parts = [
        f"Machine: {machine(opts)}.",
        "",
        f"Envoy 1 worker on core {opts.envoy_core}, load on core {opts.load_core}, "
        f"{opts.connections} connections, direct response; configs {', '.join(names)} interleaved, "
        f"{opts.runs} runs × ({opts.warmup} s warm-up + {opts.duration} s wrk + {opts.duration} s oha "
        f"at {opts.rate} req/s); {elapsed:.0f} s in all. Load tools: {tools(opts)}.",
        "",
        "Medians:",
        "",
        *medians,
        "",
    ]
    checks = targets(med, results)
    if checks:
        parts += ["Targets (issue 2), on these medians:", "", *checks, ""]
    flagged = [(r, noisy(opts, r)) for r in results]
    flagged = [f"run {r['run']} ({r['config']}): {'; '.join(why)}" for r, why in flagged if why]
    parts.append(f"Noise: {len(flagged)} of {len(results)} measurements disturbed"
                 + (" — " + " · ".join(flagged) if flagged else " (none)") + ".")
    parts += ["", "Every run:", "", *runs_table(results)]
    return "\n".join(parts)


def rewrite_benchmarks_md(path, figures_md):
    """Replaces what lies between the markers in BENCHMARKS.md; the rest of the file is kept."""
    common.rewrite_between_markers(path, START, END, figures_md, "bench")
