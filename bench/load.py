"""The load tools and the measurements taken around them.

Closed loop: wrk (as many requests as Envoy can take on 32 connections) gives req/s, and the
Envoy process's CPU time over the same span gives µs per request. Open loop: oha sends a fixed
rate whatever the answers' speed, and with --latency-correction times each request from when it
was due rather than from when it was sent (no coordinated omission), which gives p50/p99.
"""

import json
import os
import re
import resource
import subprocess
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """A run that cannot be a figure: a tool failed or the responses were wrong."""


def process_cpu_seconds(pid):
    """utime + stime of a process, in seconds (from /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # After the ")" closing comm, field 3 (state) is fields[0]: utime is field 14, stime 15.
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def cores_busy_seconds(cores):
    """user + nice + system time of each of `cores`, in seconds (from /proc/stat)."""
    busy = {}
    with open("/proc/stat") as f:
        for line in f:
            name, *fields = line.split()
            if name.startswith("cpu") and name[3:].isdigit():
                user, nice, system = (int(x) for x in fields[:3])
                busy[int(name[3:])] = (user + nice + system) / CLK_TCK
    missing = [c for c in cores if c not in busy]
    if missing:
        raise BenchError(f"core(s) {missing} not in /proc/stat")
    return [busy[c] for c in cores]


def envoy_counters(admin_port):
    """The ingress listener's request counters, from Envoy's admin /stats."""
    url = f"http://127.0.0.1:{admin_port}/stats?filter=%5Ehttp%5C.ingress%5C.downstream_rq_"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    counters = {}
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        if value.strip().isdigit():
            counters[name.removeprefix("http.ingress.downstream_rq_")] = int(value)
    return counters


def counter_delta(before, after):
    return {k: after.get(k, 0) - before.get(k, 0) for k in ("completed", "2xx", "4xx", "5xx")}


def _run(cmd, timeout):
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise BenchError(f"{cmd[0]} did not finish in {timeout} s: {' '.join(cmd)}") from e
    if done.returncode != 0:
        raise BenchError(f"{' '.join(cmd)} exited with {done.returncode}:\n{done.stderr}{done.stdout}")
    return done.stdout


def _children_cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wrk(opts, url, seconds):
    """Closed loop for `seconds` on opts.connections connections: returns requests, req/s and
    wrk's own CPU seconds (the children's rusage grows by exactly wrk's once it is reaped)."""
    cmd = ["taskset", "-c", str(opts.load_core), opts.wrk, "-t1", f"-c{opts.connections}",
           f"-d{seconds}s", "--timeout", "2s", "-H", opts.header, url]
    cpu_before = _children_cpu_seconds()
    out = _run(cmd, timeout=seconds + 30)
    cpu = _children_cpu_seconds() - cpu_before
    requests = re.search(r"^\s*(\d+) requests in ", out, re.M)
    rate = re.search(r"^Requests/sec:\s*([\d.]+)", out, re.M)
    if not requests or not rate:
        raise BenchError(f"cannot read wrk's output:\n{out}")
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "requests": int(requests.group(1)),
        "rps": float(rate.group(1)),
        "socket_errors": sum(int(g) for g in errors.groups()) if errors else 0,
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "cpu_seconds": cpu,
    }


def oha(opts, url):
    """Open loop at opts.rate req/s for opts.duration s: returns p50/p99 in µs and the statuses."""
    cmd = ["taskset", "-c", str(opts.load_core), opts.oha, "--no-tui", "--output-format", "json",
           "--worker-threads", "1",
           "-z", f"{opts.duration}s", "-c", str(opts.connections), "-q", str(opts.rate),
           "--latency-correction", "--wait-ongoing-requests-after-deadline", "-H", opts.header, url]
    out = _run(cmd, timeout=opts.duration + 60)
    try:
        result = json.loads(out)
        percentiles = result["latencyPercentiles"]
        statuses = {int(k): v for k, v in result["statusCodeDistribution"].items()}
        errors = result.get("errorDistribution", {})
        achieved = result["summary"]["requestsPerSec"]
    except (ValueError, KeyError, TypeError) as e:
        raise BenchError(f"cannot read oha's JSON ({e}):\n{out[:2000]}") from e
    return {
        "p50_us": percentiles["p50"] * 1e6,
        "p99_us": percentiles["p99"] * 1e6,
        "statuses": statuses,
        "errors": errors,
        "achieved_rps": achieved,
    }
