"""A Redis for the end-to-end tests: a throw-away `redis-server`, or TOLLGATE_TEST_REDIS_URL.

The throw-away server (`RedisServer.start`) binds a free loopback port, keeps nothing on disk
(`--save "" --appendonly no`, its own directory under the test's tmp_path), and is stopped by
PID (the benchmarks start theirs with `RedisServer.launch`, which needs no pytest). `call()`
sends one command and `command_stats()` reads INFO commandstats. `stop()`/`start()`/`restart()`
bring it down and up again on the SAME port, so a sidecar pointed at it can reconnect by
itself; `kill()` is SIGKILL.

TOLLGATE_TEST_REDIS_URL (the same variable the Rust tests read) names a Redis someone else
runs. Tests that only need *a* Redis may use it (`RedisServer.from_env`); tests that stop or
restart Redis never do — they cannot restart someone else's server — and always start their
own. A shared Redis keeps its keys between runs, so tests using it give their rules names no
earlier run used (`unique_name`).

When no `redis-server` can be started: under CI=true the test fails (DESIGN.md: never a skip),
elsewhere it is skipped; both say how to install it.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from .sidecar import free_port

INSTALL_HINT = "apt-get install -y redis-server"
STARTUP_TIMEOUT = 10.0


def unique_name(base: str) -> str:
    """`base` with a random suffix: a rule name no earlier run left buckets under."""
    return f"{base}-{secrets.token_hex(4)}"


def ping(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a Redis on `port` answers PING with +PONG (a raw RESP exchange, no client library)."""
    try:
        with socket.create_connection((host, port), timeout=0.5) as s:
            s.settimeout(0.5)
            s.sendall(b"PING\r\n")
            return s.recv(7) == b"+PONG\r\n"
    except OSError:
        return False


def missing(reason: str) -> None:
    """No Redis for this test: fail under CI=true, else skip; never returns."""
    message = f"no Redis for this test: {reason}; set TOLLGATE_TEST_REDIS_URL or install redis-server ({INSTALL_HINT})"
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


class RedisServer:
    """One Redis: a throw-away `redis-server` (restartable) or an external URL (not restartable)."""

    def __init__(self, workdir: Path | None, *, url: str | None = None, binary: str = "redis-server"):
        self.workdir = workdir
        self.binary = binary
        self.external_url = url
        self.port = 0 if url else free_port()
        self.log_path = workdir / "redis.log" if workdir else None
        self.proc: subprocess.Popen[bytes] | None = None

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def launch(cls, workdir: Path, binary: str = "redis-server", attempts: int = 3) -> "RedisServer":
        """A fresh server under `workdir`, answering PING, or RuntimeError (no pytest involved)."""
        workdir.mkdir(parents=True, exist_ok=True)
        last_error = ""
        for _ in range(attempts):  # a free port can be taken before redis-server binds it: try another
            server = cls(workdir, binary=binary)
            try:
                return server.start()
            except (RuntimeError, OSError) as e:
                last_error = str(e)
                server.kill()
        raise RuntimeError(last_error)

    @classmethod
    def throw_away(cls, workdir: Path) -> "RedisServer":
        """A fresh `redis-server` under `workdir`, answering PING; fails or skips (see module doc)."""
        if shutil.which("redis-server") is None:
            missing("redis-server is not on PATH")
        try:
            return cls.launch(workdir)
        except RuntimeError as e:
            missing(str(e))
        raise AssertionError("unreachable")

    @classmethod
    def from_env(cls, workdir: Path) -> "RedisServer":
        """TOLLGATE_TEST_REDIS_URL when set (checked to answer), else a throw-away server."""
        url = os.environ.get("TOLLGATE_TEST_REDIS_URL")
        if not url:
            return cls.throw_away(workdir)
        return cls(None, url=url)

    # -- what tests use ----------------------------------------------------------------------

    @property
    def url(self) -> str:
        return self.external_url or f"redis://127.0.0.1:{self.port}"

    @property
    def restartable(self) -> bool:
        return self.external_url is None

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not running"
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def call(self, *args: object) -> str:
        """One command over a fresh connection (RESP): the first line of the answer, e.g. `+PONG`, `:1`."""
        parts = [f"*{len(args)}\r\n".encode()]
        for arg in args:
            data = arg if isinstance(arg, bytes) else str(arg).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        with socket.create_connection(self._address(), timeout=5) as s:
            s.sendall(b"".join(parts))
            answer = b""
            while not answer.endswith(b"\r\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                answer += chunk
        return answer.decode(errors="replace").split("\r\n", 1)[0]

    def command_stats(self) -> dict[str, int]:
        """Calls so far per command (INFO commandstats), e.g. {"get": 12, "evalsha": 12}."""
        with socket.create_connection(self._address(), timeout=5) as s:
            s.sendall(b"*2\r\n$4\r\nINFO\r\n$12\r\ncommandstats\r\n")
            data = b""
            while True:
                header, _, body = data.partition(b"\r\n")
                if header.startswith(b"$") and len(body) >= int(header[1:]):
                    break
                chunk = s.recv(65536)
                if not chunk:
                    raise RuntimeError("redis-server closed the connection during INFO")
                data += chunk
        return {m.group(1): int(m.group(2)) for m in re.finditer(r"^cmdstat_(\w+):calls=(\d+)", body.decode(), re.M)}

    def _address(self) -> tuple[str, int]:
        if self.external_url:
            host, _, port = self.external_url.removeprefix("redis://").split("/", 1)[0].rpartition(":")
            return host or "127.0.0.1", int(port or 6379)
        return "127.0.0.1", self.port

    # -- lifecycle (throw-away server only) --------------------------------------------------

    def command(self) -> list[str]:
        assert self.workdir is not None
        return [
            self.binary,
            "--bind", "127.0.0.1",
            "--port", str(self.port),
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.workdir),
            "--logfile", str(self.log_path),
        ]  # fmt: skip

    def start(self, timeout: float = STARTUP_TIMEOUT) -> "RedisServer":
        """Start (again) on this server's port and wait until it answers PING."""
        self._own("start")
        assert not self.running(), "already running"
        self.proc = subprocess.Popen(
            self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + timeout
        while not ping(self.port):
            if self.proc.poll() is not None:
                status, self.proc = self.proc.returncode, None
                raise RuntimeError(f"redis-server exited with {status} at start-up on port {self.port}: {self.log_tail()}")
            if time.monotonic() >= deadline:
                raise RuntimeError(f"redis-server did not answer PING on port {self.port} within {timeout:.0f}s")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """SIGTERM by PID and wait (without persistence it forgets every key)."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL by PID and wait."""
        self._end(signal.SIGKILL)

    def restart(self, timeout: float = STARTUP_TIMEOUT) -> "RedisServer":
        """Stop, then start on the SAME port (empty: nothing was persisted)."""
        self.stop()
        return self.start(timeout)

    def _end(self, sig: signal.Signals) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def _own(self, what: str) -> None:
        if not self.restartable:
            raise AssertionError(f"cannot {what} the external Redis at TOLLGATE_TEST_REDIS_URL; use a throw-away server")

    def log_tail(self, chars: int = 2000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-chars:]
