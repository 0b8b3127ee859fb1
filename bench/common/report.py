"""What every bench's figures begin with (the machine, the tools' versions) and the rewrite of
its own section of BENCHMARKS.md, between its markers."""

import datetime
import os
import platform
import re
import subprocess


def first_line(cmd):
    """The first line a tool prints about itself (`wrk -v`, `redis-server --version`), or "?"."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = (done.stdout + done.stderr).strip()
    return text.splitlines()[0] if text else "?"


def machine(envoy=None):
    """CPU, cores, kernel, Envoy's version (if `envoy`), the time and the load average."""
    model = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    envoy_version = ""
    if envoy:
        out = first_line([envoy, "--version"]) if os.path.exists(envoy) else "?"
        version = re.search(r"/(\d+\.\d+\.\d+)/", out)
        envoy_version = f"Envoy {version.group(1) if version else out} · "
    with open("/proc/loadavg") as f:
        loadavg = " ".join(f.read().split()[:3])
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (f"nproc {len(os.sched_getaffinity(0))} · {model} · Linux {platform.release()} · "
            f"{envoy_version}{now} · load average at the end {loadavg}")


def rewrite_between_markers(path, start_marker, end_marker, figures_md, who):
    """Replaces what lies between the two markers in `path`; the rest of the file is kept."""
    with open(path) as f:
        text = f.read()
    start, end = text.find(start_marker), text.find(end_marker)
    if start < 0 or end < start:
        raise SystemExit(f"{who}: {path} has no figures markers ({start_marker} … {end_marker})")
    with open(path, "w") as f:
        f.write(text[:start] + start_marker + "\n\n" + figures_md + "\n\n" + text[end:])
