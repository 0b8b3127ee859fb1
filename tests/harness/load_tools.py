"""The load tools as processes: `wrk` (closed loop, HTTP), `oha` (open loop) and `redis-benchmark`, each run once,
bounded in time, its output parsed; a tool that fails or prints what cannot be read raises
ToolFailed. Used by the benchmarks (bench/); wrk's own CPU time comes with its figures."""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
from typing import Mapping, Sequence


class ToolFailed(RuntimeError):
    """A load tool exited non-zero, ran past its time, or printed nothing readable."""


def run(cmd: Sequence[str], timeout: float, env: Mapping[str, str] | None = None) -> str:
    """`cmd` to completion within `timeout` seconds: its stdout."""
    try:
        done = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout,
                              env=None if env is None else {**os.environ, **env})
    except subprocess.TimeoutExpired as e:
        raise ToolFailed(f"{cmd[0]} did not finish in {timeout} s: {' '.join(cmd)}") from e
    if done.returncode != 0:
        raise ToolFailed(f"{' '.join(cmd)} exited with {done.returncode}:\n{done.stderr}{done.stdout}")
    return done.stdout


def children_cpu_seconds() -> float:
    """User + system CPU of every reaped child so far: grows by exactly a tool's once it is done."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wrk(
    url: str,
    seconds: float,
    *,
    connections: int,
    threads: int = 1,
    script: str | None = None,
    headers: Sequence[str] = (),
    core: int | None = None,
    binary: str = "wrk",
    env: Mapping[str, str] | None = None,
) -> dict:
    """Closed loop: `wrk -t<threads> -c<connections>` for `seconds`, pinned to `core` if given.
    Returns requests, rps, socket_errors, non_2xx and cpu_seconds (wrk's own)."""
    cmd = ["taskset", "-c", str(core)] if core is not None else []
    cmd += [binary, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "2s"]
    for header in headers:
        cmd += ["-H", header]
    if script:
        cmd += ["-s", script]
    cpu_before = children_cpu_seconds()
    out = run(cmd + [url], timeout=seconds + 30, env=env)
    cpu = children_cpu_seconds() - cpu_before
    requests = re.search(r"^\s*(\d+) requests in ", out, re.M)
    rate = re.search(r"^Requests/sec:\s*([\d.]+)", out, re.M)
    if not requests or not rate:
        raise ToolFailed(f"cannot read wrk's output:\n{out}")
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "requests": int(requests.group(1)),
        "rps": float(rate.group(1)),
        "socket_errors": sum(int(g) for g in errors.groups()) if errors else 0,
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "cpu_seconds": cpu,
    }


def oha(
    url: str,
    seconds: float,
    *,
    rate: int,
    connections: int,
    headers: Sequence[str] = (),
    core: int | None = None,
    binary: str = "oha",
    rand_regex_url: bool = False,
) -> dict:
    """Open loop: `oha -q <rate>` for `seconds` on up to `connections` connections, pinned to
    `core` if given. With --latency-correction each request is timed from when it was due,
    not from when it was sent, so a slow answer cannot hide itself by slowing the load down.
    `rand_regex_url`: `url` is a regular expression each request's URL is drawn from.
    Returns p50_us, p90_us, p99_us, max_us, statuses, errors and achieved_rps."""
    cmd = ["taskset", "-c", str(core)] if core is not None else []
    cmd += [binary, "--no-tui", "--output-format", "json", "--worker-threads", "1",
            "-z", f"{seconds}s", "-c", str(connections), "-q", str(rate),
            "--latency-correction", "--wait-ongoing-requests-after-deadline"]
    for header in headers:
        cmd += ["-H", header]
    if rand_regex_url:
        cmd.append("--rand-regex-url")
    out = run(cmd + [url], timeout=seconds + 60)
    try:
        result = json.loads(out)
        percentiles = result["latencyPercentiles"]
        return {
            "p50_us": percentiles["p50"] * 1e6,
            "p90_us": percentiles["p90"] * 1e6,
            "p99_us": percentiles["p99"] * 1e6,
            "max_us": result["summary"]["slowest"] * 1e6,
            "statuses": {int(k): v for k, v in result["statusCodeDistribution"].items()},
            "errors": result.get("errorDistribution", {}),
            "achieved_rps": result["summary"]["requestsPerSec"],
        }
    except (ValueError, KeyError, TypeError) as e:
        raise ToolFailed(f"cannot read oha's JSON ({e}):\n{out[:2000]}") from e


def redis_benchmark(
    port: int,
    command: Sequence[str],
    *,
    requests: int,
    clients: int,
    pipeline: int = 1,
    keys: int = 1,
    binary: str = "redis-benchmark",
    timeout: float = 300,
) -> float:
    """`redis-benchmark` of one custom command `requests` times (`-r keys` when keys > 1 fills
    `__rand_int__`): its ops/s."""
    cmd = [binary, "-h", "127.0.0.1", "-p", str(port), "-c", str(clients), "-P", str(pipeline),
           "-n", str(requests), "--csv"]
    if keys > 1:
        cmd += ["-r", str(keys)]
    out = run(cmd + list(command), timeout=timeout)
    rows = [line for line in out.splitlines() if line.startswith('"') and not line.startswith('"test"')]
    try:
        return float(rows[-1].split('","')[1].strip('"'))
    except (IndexError, ValueError) as e:
        raise ToolFailed(f"cannot read redis-benchmark's output:\n{out}") from e
