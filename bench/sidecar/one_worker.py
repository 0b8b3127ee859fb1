"""Parts 2 and 3 of `bench/sidecar`: one Envoy worker in front of a direct response, measured
interleaved in five configurations (the sidecar with Redis serves those that call it):

  part 2: (a) no filter · (l) one rule `local` · (s) the same rule `strict`, asked of the sidecar
  part 3: (g) the shared fixture as shipped (per-tenant `global`) · (L) the same, every rule `local`
"""

import time
from bench.common import measure as readings
from bench.common.measure import BenchError, process_cpu_seconds
from bench.sidecar import configs as sidecar_configs
from bench.sidecar import load as sidecar_load

# name → (description, part)
CONFIGS = {
    "a": ("no filter", 2),
    "l": ("one fixed_window rule, local", 2),
    "s": ("the same rule, strict (sidecar with Redis)", 2),
    "g": ("fixture as shipped: per-tenant global", 3),
    "L": ("fixture, every rule local", 3),
}


def filter_config(name, opts):
    return {
        "a": lambda: None,
        "l": lambda: sidecar_configs.one_rule("local"),
        "s": lambda: sidecar_configs.one_rule("strict"),
        "g": lambda: sidecar_configs.fixture_never_refusing(opts.fixture),
        "L": lambda: sidecar_configs.fixture_never_refusing(opts.fixture, all_local=True),
    }[name]()


def request_of(name, opts, workdir):
    """(path, headers, wrk script) of the load: part 2 spreads over opts.paths paths (one
    bucket each), part 3 is a configured tenant on /api/items."""
    if CONFIGS[name][1] == 2:
        return "/k/0", {}, sidecar_load.paths_script(workdir, opts.paths, seed=11)
    return "/api/items", {sidecar_configs.API_KEY_HEADER: sidecar_configs.ENTERPRISE_KEY}, None


def start(opts, names, sidecar, services):
    """One Envoy per configuration, pinned to opts.envoy_core, each probed by hand once."""
    envoys = []
    for name in names:
        bootstrap = sidecar_configs.bootstrap(filter_config(name, opts), opts.tollgate_wasm, sidecar.port)
        envoy = services.spawn_envoy(name, bootstrap, core=opts.envoy_core)
        envoy.config = name
        envoys.append(envoy)
    for envoy in envoys:
        envoy.wait_ready(60)
        path, headers, _ = request_of(envoy.config, opts, services.workdir)
        before = sidecar.decisions(outcome="admitted")
        resp = envoy.get(path, headers)
        if resp.status != 200:
            raise BenchError(f"({envoy.config}) answered the probe {resp}:\n{envoy.log_tail()}")
        if envoy.config == "s" and sidecar.decisions(outcome="admitted") != before + 1:
            raise BenchError("(s) answered 200 without asking the sidecar")
    return envoys


def sidecar_traffic(envoy):
    """Envoy's calls to the sidecar cluster so far: requests and connections opened."""
    return [envoy.counter(f"cluster.{sidecar_configs.SIDECAR_CLUSTER}.upstream_{k}_total") for k in ("rq", "cx")]


def measure(opts, envoy, sidecar, redis, workdir, run):
    """One closed-loop measurement: req/s, Envoy's and the sidecar's and Redis's CPU per request;
    every answer must be 200, and with (s) every request one admitted decision."""
    _, headers, script = request_of(envoy.config, opts, workdir)
    url = envoy.url("/api/items" if script is None else "/")
    header_lines = [f"{k}: {v}" for k, v in headers.items()]
    if opts.warmup:
        sidecar_load.wrk(opts, url, opts.warmup, script, header_lines, core=opts.load_core)
    counts0, decided0 = readings.envoy_counters(envoy), sidecar.decisions(outcome="admitted")
    traffic0 = sidecar_traffic(envoy)
    pids = (envoy.pid, sidecar.pid, redis.pid)
    wall0, cpu0 = time.monotonic(), [process_cpu_seconds(p) for p in pids]
    w = sidecar_load.wrk(opts, url, opts.duration, script, header_lines, core=opts.load_core)
    wall, cpu = time.monotonic() - wall0, [process_cpu_seconds(p) - c for p, c in zip(pids, cpu0)]
    counts = readings.counter_delta(counts0, readings.envoy_counters(envoy))
    decided = sidecar.decisions(outcome="admitted") - decided0
    calls, connections = (b - a for a, b in zip(traffic0, sidecar_traffic(envoy)))
    where = f"({envoy.config}) run {run}"
    total = counts["completed"]
    if w["socket_errors"] or w["non_2xx"] or counts["2xx"] != total or total < w["requests"]:
        raise BenchError(f"{where}: expected only 200; wrk: {w}, Envoy counted {counts}\n{envoy.log_tail()}")
    if envoy.config == "s" and decided < total:
        raise BenchError(f"{where}: {total} requests but only {decided} sidecar decisions")
    return {
        "config": envoy.config, "run": run, "rps": w["rps"], "requests": total,
        "envoy_us": cpu[0] / total * 1e6, "sidecar_us": cpu[1] / total * 1e6, "redis_us": cpu[2] / total * 1e6,
        "envoy_cpu_pct": cpu[0] / wall * 100, "sidecar_cpu_pct": cpu[1] / wall * 100, "wrk_cpu_pct": w["cpu_seconds"] / wall * 100,
        "decisions": decided, "sidecar_calls": calls, "sidecar_connections": connections,
    }


def calls_of(r):
    return f"{r['sidecar_calls']:,} (on {r['sidecar_connections']:,} new connections)"


def run_part(opts, services, log):
    """The configurations of the parts asked for (2, 3 or both), interleaved, opts.runs times."""
    names = "".join(n for n, (_, part) in CONFIGS.items() if str(part) in opts.parts)
    redis, sidecar = services.redis(), services.sidecar("redis")
    envoys = start(opts, names, sidecar, services)
    results = []
    for run in range(1, opts.runs + 1):
        for envoy in envoys:
            r = measure(opts, envoy, sidecar, redis, services.workdir, run)
            results.append(r)
            log(f"part {CONFIGS[envoy.config][1]} run {run} ({envoy.config}): {r['rps']:,.0f} req/s, "
                f"Envoy {r['envoy_us']:.1f} µs/req ({r['envoy_cpu_pct']:.0f}% busy), "
                f"sidecar {r['sidecar_us']:.1f} µs/req, Redis {r['redis_us']:.1f} µs/req, "
                f"{calls_of(r)} sidecar calls")
    return results
