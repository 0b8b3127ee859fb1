"""Start the pinned Envoy on free loopback ports, wait until it serves, read its stats, stop it.

The benchmarks (bench/) start their Envoys with this class too: another binary (`binary`), a
quieter log (`log_level`), and a command in front of Envoy that execs it or runs it in-process
(`prefix`: `taskset -c CORE` to pin it, `valgrind --tool=callgrind …`), so `pid` stays Envoy's.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Mapping, Sequence

from . import http
from .config import LISTENER_STATS
from .paths import envoy_bin
from .wait import until

READY_TIMEOUT = 30.0


class EnvoyFailed(AssertionError):
    """Envoy exited or never became ready; the message carries the tail of its log."""


class Envoy:
    """One Envoy process: `start()` it, talk to `port`, read `admin()`, `stop()` it by PID."""

    def __init__(
        self,
        config: dict | str,
        workdir: Path,
        *,
        concurrency: int = 1,
        name: str = "envoy",
        binary: Path | str | None = None,
        prefix: Sequence[str] = (),
        log_level: str = "info",
    ):
        self.name = name
        self.binary = binary
        self.prefix = list(prefix)
        self.log_level = log_level
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / f"{name}.json"
        self.config_path.write_text(config if isinstance(config, str) else json.dumps(config, indent=2))
        self.log_path = workdir / f"{name}.log"
        self.admin_address_path = workdir / f"{name}.admin"
        self.concurrency = concurrency
        self.proc: subprocess.Popen[bytes] | None = None
        self.admin_port = 0
        self.port = 0

    # -- lifecycle ---------------------------------------------------------------------------

    def command(self) -> list[str]:
        return [
            *self.prefix,
            str(self.binary or envoy_bin()),
            "-c", str(self.config_path),
            "--use-dynamic-base-id",
            "--concurrency", str(self.concurrency),
            "-l", self.log_level,
            "--admin-address-path", str(self.admin_address_path),
        ]  # fmt: skip

    def spawn(self) -> "Envoy":
        # An earlier Envoy of the same name in this directory left its admin address: reading
        # it would wait on a dead port.
        self.admin_address_path.unlink(missing_ok=True)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        return self

    def start(self, timeout: float = READY_TIMEOUT) -> "Envoy":
        """Spawn and wait until the admin says LIVE and the listener has a port."""
        return self.spawn().wait_ready(timeout)

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> "Envoy":
        """After `spawn()`: wait until the admin says LIVE and the listener has a port."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise EnvoyFailed(f"Envoy exited with status {self.proc.returncode} before it was ready\n{self.log_tail()}")
            if self._ready():
                break
            if time.monotonic() >= deadline:
                self.stop()
                raise EnvoyFailed(f"Envoy not ready after {timeout:.0f}s\n{self.log_tail()}")
            time.sleep(0.05)
        listeners = self.admin_json("/listeners?format=json")
        self.port = listeners["listener_statuses"][0]["local_address"]["socket_address"]["port_value"]
        return self

    def _ready(self) -> bool:
        if not self.admin_port:
            try:
                address = self.admin_address_path.read_text().strip()
            except FileNotFoundError:
                return False
            if not address:
                return False
            self.admin_port = int(address.rsplit(":", 1)[1])
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/ready", timeout=2) as resp:
                return resp.status == 200 and resp.read().strip() == b"LIVE"
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def wait_exit(self, timeout: float = READY_TIMEOUT) -> int:
        """For configs Envoy must refuse: the exit status, or fail if it keeps running."""
        assert self.proc is not None, "spawn() first"
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise EnvoyFailed(f"Envoy still running after {timeout:.0f}s, expected it to exit\n{self.log_tail()}")

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

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        tail = self.log().splitlines()[-lines:]
        return f"--- last {len(tail)} lines of {self.log_path} ---\n" + "\n".join(tail)

    # -- traffic -----------------------------------------------------------------------------

    def get(self, path: str = "/", headers: Mapping[str, str] | None = None) -> http.Response:
        return http.get(self.port, path, headers)

    def request(self, method: str, path: str, headers: Mapping[str, str] | None = None, body: bytes | None = None):
        return http.request(self.port, method, path, headers, body)

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def client(self) -> http.Client:
        """A keep-alive connection to the listener."""
        return http.Client(self.port)

    # -- admin and stats ---------------------------------------------------------------------

    def admin(self, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}{path}", timeout=5) as resp:
            return resp.read().decode()

    def admin_json(self, path: str) -> Any:
        return json.loads(self.admin(path))

    def stats(self, pattern: str = "") -> dict[str, int]:
        """Counters and gauges whose name matches the regex `pattern` (Envoy's own filter)."""
        query = f"/stats?format=json&filter={urllib.request.quote(pattern)}" if pattern else "/stats?format=json"
        return {s["name"]: s["value"] for s in self.admin_json(query)["stats"] if "value" in s}

    def counter(self, name: str) -> int:
        """One counter by its exact name (e.g. `cluster.tollgate_sidecar.upstream_rq_total`); 0 if not yet emitted."""
        return self.stats(f"^{re.escape(name)}$").get(name, 0)

    def tollgate_counter(self, rule: str, kind: str) -> int:
        """`tollgate.<rule>.<kind>` under whatever prefix Envoy gives custom metrics; 0 if not yet emitted."""
        suffix = f"tollgate.{rule}.{kind}"
        found = [v for k, v in self.stats("tollgate").items() if k == suffix or k.endswith("." + suffix)]
        return sum(found)

    def wait_tollgate_counter(self, rule: str, kind: str, want: int, timeout: float = 10.0) -> int:
        """The filter flushes its counters about once a second: poll until it reaches `want`."""
        return until(
            lambda: self.tollgate_counter(rule, kind),
            lambda v: v >= want,
            timeout,
            f"tollgate.{rule}.{kind} >= {want} (all tollgate stats: {self.stats('tollgate')})",
        )

    def worker_connections(self) -> dict[str, int]:
        """Downstream connections accepted per worker thread, e.g. {'worker_0': 7, 'worker_1': 9}."""
        found = self.stats(rf"^listener\.{LISTENER_STATS}\.worker_\d+\.downstream_cx_total$")
        return {re.search(r"worker_\d+", k).group(0): v for k, v in found.items()}  # type: ignore[union-attr]
