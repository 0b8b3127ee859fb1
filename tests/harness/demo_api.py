"""The demo API (examples/demo-api/server.py) as a real upstream for Envoy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from . import http
from .paths import DEMO_API
from .wait import until


class DemoApi:
    def __init__(self, workdir: Path):
        self.log_path = workdir / "demo-api.log"
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0

    def start(self, timeout: float = 15.0) -> "DemoApi":
        env = {"DEMO_API_QUIET": "1", "PATH": "/usr/bin:/bin"}
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(DEMO_API), "0"], stdout=subprocess.PIPE, stderr=log, text=True, env=env
            )
        assert self.proc.stdout is not None
        first = self.proc.stdout.readline().strip()  # blocks until the socket is bound (or the process died)
        if not first.startswith("demo-api listening on "):
            self.stop()
            raise AssertionError(f"demo API did not start: {first!r}; log: {self.log_path.read_text()}")
        self.port = int(first.rsplit(":", 1)[1])
        until(lambda: http.get(self.port, "/healthz").status, lambda s: s == 200, timeout, "demo API /healthz")
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if proc.stdout:
            proc.stdout.close()
