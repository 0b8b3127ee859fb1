"""Readings taken around a measurement: CPU time of a process and of whole cores from /proc,
and Envoy's request counters from its admin."""

import os

CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """A run that cannot be a figure: a tool failed or the responses were wrong."""


# What a bench stops on: its own errors, a load tool that failed (tests.harness.load_tools
# .ToolFailed) or a process that would not start (RuntimeError, or the harness's
# AssertionErrors: EnvoyFailed, wait.Timeout).
FAILURES = (BenchError, RuntimeError, AssertionError, OSError)


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


def envoy_counters(envoy):
    """The ingress listener's request counters (`http.ingress.downstream_rq_*`) of a
    tests.harness Envoy, e.g. {"completed": …, "2xx": …}."""
    prefix = "http.ingress.downstream_rq_"
    return {name.removeprefix(prefix): value
            for name, value in envoy.stats(r"^http\.ingress\.downstream_rq_").items()}


def counter_delta(before, after):
    return {k: after.get(k, 0) - before.get(k, 0) for k in ("completed", "2xx", "4xx", "5xx")}
