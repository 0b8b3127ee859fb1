"""Part 1 of `bench/sidecar`: `strict` decisions a second served by the release sidecar, posted
by wrk straight to `POST /v1/check`, with Redis and in memory, over many buckets and one hot
bucket; beside them redis-benchmark running the same two Redis commands a decision makes
(`GET`, then `EVALSHA` of the sidecar's own compare-and-set script), the store's limit."""

import hashlib
import re
import time

from bench.common.measure import BenchError, process_cpu_seconds
from bench.sidecar import load as sidecar_load
from tests.harness.paths import REPO

REDIS_RS = REPO / "sidecar" / "src" / "storage" / "redis.rs"

# case → (store, hot key?)
CASES = {
    "redis-many": ("redis", False),
    "redis-hot": ("redis", True),
    "memory-many": ("memory", False),
    "memory-hot": ("memory", True),
}


def cas_script():
    """The sidecar's CAS_SCRIPT, read from its source so that the two never drift apart."""
    with open(REDIS_RS) as f:
        m = re.search(r'pub const CAS_SCRIPT: &str = r"(.*?)";', f.read(), re.S)
    if not m:
        raise BenchError(f"CAS_SCRIPT not found in {REDIS_RS}")
    return m.group(1)


def prepare_redis(redis, keys):
    """Loads the CAS script and stores the values the EVALSHA runs expect; returns its SHA1."""
    script = cas_script()
    sha = hashlib.sha1(script.encode()).hexdigest()
    answer = redis.call("SCRIPT", "LOAD", script)
    if not answer.startswith("$40"):
        raise BenchError(f"SCRIPT LOAD answered {answer!r}")
    sidecar_load.populate(redis, keys)
    return sha


def outcomes(sidecar):
    """The sidecar's decisions so far by outcome (its /metrics)."""
    return {k: sidecar.decisions(outcome=k) for k in ("admitted", "refused")}


def measure_sidecar(opts, case, sidecar, redis, script, run):
    """One closed-loop measurement of one case: decisions/s and CPU per decision of the sidecar
    and of Redis. Every check must have been answered 200, decided and admitted."""
    url = sidecar.url + "/v1/check"
    if opts.warmup:
        sidecar_load.wrk(opts, url, opts.warmup, script)
    before, commands0 = outcomes(sidecar), redis.command_stats() if redis else {}
    pids = [sidecar.pid] + ([redis.pid] if redis else [])
    wall0, cpu0 = time.monotonic(), [process_cpu_seconds(p) for p in pids]
    w = sidecar_load.wrk(opts, url, opts.duration, script)
    wall, cpu = time.monotonic() - wall0, [process_cpu_seconds(p) - c for p, c in zip(pids, cpu0)]
    after, commands1 = outcomes(sidecar), redis.command_stats() if redis else {}
    # One EVALSHA (EVAL on a script-cache miss) per compare-and-set attempt. (Not GET: Redis
    # also counts the GET that the script itself runs.)
    attempts = sum(commands1.get(k, 0) - commands0.get(k, 0) for k in ("evalsha", "eval"))
    admitted, refused = (after[k] - before[k] for k in ("admitted", "refused"))
    where = f"part 1 {case} run {run}"
    if w["socket_errors"] or w["non_2xx"]:
        raise BenchError(f"{where}: wrk saw {w['socket_errors']} socket errors, {w['non_2xx']} non-2xx answers "
                         f"(sidecar log: {sidecar.log_path})")
    if refused or admitted < w["requests"]:
        raise BenchError(f"{where}: the sidecar admitted {admitted} and refused {refused} checks, "
                         f"wrk completed {w['requests']}: every check should be admitted")
    return {
        "case": case, "run": run, "rps": w["rps"],
        "sidecar_us": cpu[0] / admitted * 1e6,
        "redis_us": cpu[1] / admitted * 1e6 if redis else None,
        # Above 1: compare-and-set conflicts, each lost race one more EVALSHA.
        "cas_per_decision": attempts / admitted if redis else None,
        "sidecar_cpu_pct": cpu[0] / wall * 100,
        "redis_cpu_pct": cpu[1] / wall * 100 if redis else None,
        "wrk_cpu_pct": w["cpu_seconds"] / wall * 100,
    }


def measure_redis(opts, redis, sha, hot, run):
    """redis-benchmark of GET, then of EVALSHA, on the same keys: ops/s of each, and the rate
    of GET + EVALSHA pairs (one decision's worth) that Redis sustains with that client."""
    key, keys = (sidecar_load.HOT_KEY, 1) if hot else (sidecar_load.MANY_KEYS_PATTERN, opts.keys)
    value = sidecar_load.STATE_VALUE
    rates, redis_cpu = {}, 0.0
    for name, command in (("get", ["GET", key]),
                          ("evalsha", ["EVALSHA", sha, "1", key, value, value, "3600000"])):
        cpu0 = process_cpu_seconds(redis.pid)
        rates[name] = sidecar_load.redis_benchmark(opts, redis, command, keys, opts.redis_requests)
        redis_cpu += process_cpu_seconds(redis.pid) - cpu0
    pair = 1 / (1 / rates["get"] + 1 / rates["evalsha"])
    return {"case": "redis-benchmark-" + ("hot" if hot else "many"), "run": run, "rps": pair,
            "get_rps": rates["get"], "evalsha_rps": rates["evalsha"],
            "redis_us": redis_cpu / opts.redis_requests * 1e6}


def probe(sidecar, redis):
    """One check by hand before any load: 200 and admitted; with Redis, the bucket is there."""
    status, answer = sidecar.check({"rule": "probe", "key": 7, "algorithm": "fixed_window",
                                    "limit": 10, "window_ns": 60_000_000_000})
    if status != 200 or not isinstance(answer, dict) or answer.get("admitted") is not True \
            or answer.get("remaining") != 9:
        raise BenchError(f"sidecar ({sidecar.workdir.name}) answered the probe check {status} {answer!r}")
    if redis and redis.call("EXISTS", "tollgate:{probe:0000000000000007}") != ":1":
        raise BenchError(f"sidecar ({sidecar.workdir.name}) did not store the probe's bucket in Redis")


def run_part(opts, services, log):
    """Every case, interleaved, opts.runs times."""
    redis, workdir = services.redis(), services.workdir
    sidecars = {store: services.sidecar(store) for store in ("redis", "memory")}
    sha = prepare_redis(redis, opts.keys)
    for store, sidecar in sidecars.items():
        probe(sidecar, redis if store == "redis" else None)
    scripts = {hot: sidecar_load.sidecar_script(workdir, 1 if hot else opts.keys, seed=7) for hot in (False, True)}
    results = []
    for run in range(1, opts.runs + 1):
        for case, (store, hot) in CASES.items():
            r = measure_sidecar(opts, case, sidecars[store], redis if store == "redis" else None,
                                scripts[hot], run)
            results.append(r)
            log(f"part 1 run {run} {case}: {r['rps']:,.0f} decisions/s, sidecar {r['sidecar_us']:.1f} µs CPU each"
                + (f", Redis {r['redis_us']:.1f} µs, {r['cas_per_decision']:.2f} CAS attempts"
                   if r["redis_us"] is not None else "")
                + f", wrk {r['wrk_cpu_pct']:.0f}% CPU")
        for hot in (False, True):
            r = measure_redis(opts, redis, sha, hot, run)
            results.append(r)
            log(f"part 1 run {run} {r['case']}: GET {r['get_rps']:,.0f}/s, EVALSHA {r['evalsha_rps']:,.0f}/s "
                f"→ {r['rps']:,.0f} pairs/s")
    return results
