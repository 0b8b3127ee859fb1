"""A real browser for the dashboard tests: Debian's `chromium` driven by playwright-core
(`tests/browser/drive.js`, one JSON command per line), so no browser is downloaded.

`Browser().call("goto", ctx="alice", url=...)`; contexts are separate cookie jars. Missing
chromium or playwright-core raise `MissingArtifact` naming the command that installs them.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

from .paths import REPO, MissingArtifact

DRIVER_DIR = REPO / "tests" / "browser"
DRIVER = DRIVER_DIR / "drive.js"


def chromium_bin() -> str:
    found = os.environ.get("CHROMIUM_BIN") or shutil.which("chromium") or "/usr/bin/chromium"
    if not (Path(found).is_file() and os.access(found, os.X_OK)):
        raise MissingArtifact("chromium is missing: run scripts/setup (as root it runs: apt-get install -y chromium)")
    return found


class Browser:
    """One chromium, stopped by `close()` (its driver process by PID)."""

    def __init__(self, timeout: float = 30.0) -> None:
        if not (DRIVER_DIR / "node_modules" / "playwright-core").is_dir():
            raise MissingArtifact("playwright-core is missing: run scripts/setup (npm ci in tests/browser)")
        node = shutil.which("node")
        if node is None:
            raise MissingArtifact("node is missing: install Node.js 20+ (Debian: apt-get install -y nodejs)")
        env = dict(os.environ, CHROMIUM_BIN=chromium_bin())
        self.timeout = timeout
        self.proc = subprocess.Popen([node, str(DRIVER)], cwd=DRIVER_DIR, env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
        self.answers: "queue.Queue[str]" = queue.Queue()
        self.errors: list[str] = []
        threading.Thread(target=self._read, args=(self.proc.stdout, self.answers), daemon=True).start()
        threading.Thread(target=self._drain, daemon=True).start()
        self.next_id = 0

    def _read(self, stream, into) -> None:
        for line in stream:
            into.put(line)
        into.put("")

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.errors.append(line)

    def call(self, op: str, timeout: float | None = None, **args: Any) -> Any:
        self.next_id += 1
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"id": self.next_id, "op": op, **args}) + "\n")
        self.proc.stdin.flush()
        try:
            line = self.answers.get(timeout=timeout or self.timeout)
        except queue.Empty:
            raise AssertionError(f"browser: no answer to {op} within {timeout or self.timeout} s") from None
        if not line:
            raise AssertionError(f"browser driver exited: {''.join(self.errors)[-2000:]}")
        answer = json.loads(line)
        assert answer["id"] == self.next_id, answer
        if "error" in answer and answer["error"] is not None:
            raise AssertionError(f"browser {op} {args}: {answer['error']}")
        return answer.get("result")

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.call("close", timeout=10)
            except (AssertionError, BrokenPipeError, OSError):
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
