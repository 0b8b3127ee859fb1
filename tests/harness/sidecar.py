"""The built sidecar (`target/debug/tollgate-sidecar`) on a free loopback port, stopped by PID.

In-process counters by default; `redis_url` points it at a Redis (TOLLGATE_REDIS_URL); `binary`
runs another build (the benchmarks run target/release/tollgate-sidecar). It can
be killed with SIGKILL (`kill9`) and started again on the same port (`restart`), so the
Envoys whose `tollgate_sidecar` cluster names that port find it again by themselves.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from .paths import REPO, MissingArtifact
from .wait import until

SIDECAR_BIN = REPO / "target" / "debug" / "tollgate-sidecar"

# One sample line of the Prometheus text format: name, optional {labels}, value.
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def sidecar_bin() -> Path:
    if not (SIDECAR_BIN.is_file() and os.access(SIDECAR_BIN, os.X_OK)):
        raise MissingArtifact(f"{SIDECAR_BIN.relative_to(REPO)} is missing: run scripts/setup (cargo build -p tollgate-sidecar)")
    return SIDECAR_BIN


def free_port() -> int:
    """A loopback port nothing listens on right now (also for a sidecar that is 'gone')."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_prometheus(text: str) -> dict[str, float]:
    """Prometheus text → {series: value}, the series as written: `name` or `name{a="x",b="y"}`.

    Labels are re-rendered sorted by name, so a series can be looked up whatever order the
    exporter wrote them in (see `series`).
    """
    found: dict[str, float] = {}
    for line in text.splitlines():
        m = SAMPLE.match(line)
        if m is None or line.startswith("#"):
            continue
        name, labels, value = m.groups()
        found[series(name, **dict(LABEL.findall(labels or "")))] = float(value)
    return found


def series(name: str, **labels: str) -> str:
    """The key `parse_prometheus` uses for `name` with `labels`."""
    if not labels:
        return name
    inner = ",".join(f'{k}="{labels[k]}"' for k in sorted(labels))
    return f"{name}{{{inner}}}"


def labels_of(key: str) -> dict[str, str]:
    brace = key.find("{")
    return dict(LABEL.findall(key[brace:])) if brace >= 0 else {}


class SidecarProcess:
    """One sidecar: `start()`, `metrics()`, `ready()`, `kill9()`, `restart()`, `stop()` by PID."""

    def __init__(self, workdir: Path, *, redis_url: str | None = None, port: int | None = None,
                 env: dict[str, str] | None = None, binary: Path | str | None = None):
        self.workdir = workdir
        self.binary = Path(binary).resolve() if binary else None  # it runs in `workdir`
        self.redis_url = redis_url
        self.extra_env = dict(env or {})
        self.port = port or free_port()
        self.log_path = workdir / "sidecar.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> "SidecarProcess":
        """Start on `self.port` (again, after `kill9`/`stop`) and wait for /healthz."""
        assert not self.running(), "already running"
        self.workdir.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_")}
        env["TOLLGATE_LISTEN"] = f"127.0.0.1:{self.port}"
        if self.redis_url:
            env["TOLLGATE_REDIS_URL"] = self.redis_url
        env.update(self.extra_env)
        # Appended: a restarted sidecar's log follows the first one's.
        with open(self.log_path, "ab") as log:
            log.write(f"--- start #{self.starts + 1} ---\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [str(self.binary or sidecar_bin())], cwd=self.workdir, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        self.starts += 1
        until(self._healthy, bool, timeout, f"sidecar /healthz on port {self.port} ({self.log_path})")
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not running"
        return self.proc.pid

    def _healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"sidecar exited with {self.proc.returncode}: {self.log_tail()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def kill9(self) -> None:
        """SIGKILL by PID, no chance to clean up, and reap it."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def restart(self, timeout: float = 30.0) -> "SidecarProcess":
        """Stop it if it still runs, then start it again on the same port."""
        self.stop()
        return self.start(timeout)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def log_tail(self, chars: int = 2000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    # -- probes ------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def check(self, body: dict) -> tuple[int, object]:
        """One `POST /v1/check`: (status, the parsed JSON answer, or the body's text if not 200)."""
        request = urllib.request.Request(f"{self.url}/v1/check", data=json.dumps(body).encode(),
                                         headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=5) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")

    def ready(self) -> int:
        """The status of GET /readyz: 200 ready, 503 while its store (Redis) does not answer."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=5) as resp:
                return resp.status
        except urllib.error.HTTPError as e:
            return e.code

    # -- metrics -----------------------------------------------------------------------------

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as resp:
            return resp.read().decode()

    def metric_series(self) -> dict[str, float]:
        """Every sample of /metrics: {`name{labels sorted}`: value} (see `parse_prometheus`)."""
        return parse_prometheus(self.metrics())

    def metric(self, name: str, **labels: str) -> float:
        """The sum of `name` over every series whose labels include `labels` (0 if none yet)."""
        total = 0.0
        for key, value in self.metric_series().items():
            if key.split("{", 1)[0] != name:
                continue
            have = labels_of(key)
            if all(have.get(k) == v for k, v in labels.items()):
                total += value
        return total

    def decisions(self, rule: str | None = None, outcome: str | None = None) -> int:
        """`tollgate_decisions_total` summed over the label sets matching `rule`/`outcome` (all by default)."""
        labels = {k: v for k, v in (("rule", rule), ("outcome", outcome)) if v is not None}
        return int(self.metric("tollgate_decisions_total", **labels))
