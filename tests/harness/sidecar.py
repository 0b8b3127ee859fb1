"""The built sidecar (`target/debug/tollgate-sidecar`) on a free loopback port, stopped by PID."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from .paths import REPO, MissingArtifact
from .wait import until

SIDECAR_BIN = REPO / "target" / "debug" / "tollgate-sidecar"


def sidecar_bin() -> Path:
    if not (SIDECAR_BIN.is_file() and os.access(SIDECAR_BIN, os.X_OK)):
        raise MissingArtifact(f"{SIDECAR_BIN.relative_to(REPO)} is missing: run scripts/setup (cargo build -p tollgate-sidecar)")
    return SIDECAR_BIN


def free_port() -> int:
    """A loopback port nothing listens on right now (also for a sidecar that is 'gone')."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SidecarProcess:
    """One sidecar with in-process counters: `start()`, `metrics()`, `stop()` by PID."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.port = free_port()
        self.log_path = workdir / "sidecar.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> "SidecarProcess":
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_")}
        env["TOLLGATE_LISTEN"] = f"127.0.0.1:{self.port}"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [str(sidecar_bin())], cwd=self.workdir, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        until(self._healthy, bool, timeout, f"sidecar /healthz on port {self.port} ({self.log_path})")
        return self

    def _healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"sidecar exited with {self.proc.returncode}: {self.log_path.read_text(errors='replace')[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as resp:
            return resp.read().decode()

    def decisions(self) -> int:
        """Sum of `tollgate_decisions_total` over every label set."""
        total = 0.0
        for line in self.metrics().splitlines():
            m = re.match(r"^tollgate_decisions_total(\{[^}]*\})?\s+(\S+)", line)
            if m:
                total += float(m.group(2))
        return int(total)

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
