"""nginx with ngx_wasm_module and the Tollgate filter, in a temporary prefix on free loopback ports.

    nginx = Nginx(nginx_bin, tmp_path, filter_config, upstream_port=demo_api.port).start()
    resp = nginx.get("/api/x", {"X-Api-Key": "key-free-0001"})
    nginx.worker_crashes()   # "worker process ... exited on signal" lines in the error log
    nginx.stop()             # SIGQUIT to the master by PID, SIGKILL if it lingers

The master stays in the foreground (`-g 'daemon off;'`) with 2 worker processes; the access log
records each request's worker PID (`$pid`), so a test can tell that both workers served.
The client address is `$remote_addr`, rewritten by `realip` from `X-Real-IP` when the peer is
127.0.0.1 (the test client plays the trusted load balancer).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Mapping

from harness import http
from harness.paths import FILTER_WASM
from harness.sidecar import free_port
from harness.wait import until

READY_TIMEOUT = 30.0
# About 5,000 shared-data slots fit in 1 MB of shm_kv; twice that leaves room for the filter's
# other keys (usage, sync, ids) and the zone's own bookkeeping.
SLOTS_PER_MB = 5000


def shm_megabytes(state_slots: int) -> int:
    return max(1, 2 * -(-state_slots // SLOTS_PER_MB))


def render_conf(
    filter_config: dict,
    *,
    port: int,
    upstream_port: int,
    wasm: Path,
    workers: int = 2,
    worker_connections: int = 4096,
) -> str:
    """The nginx.conf of a test: one server, `/` through Tollgate to the upstream."""
    text = json.dumps(filter_config, separators=(",", ":"))
    assert "'" not in text and "\\" not in text, "the config is quoted with ' in nginx.conf"
    slots = int(filter_config.get("state_slots", 65536))
    return f"""
worker_processes {workers};
worker_rlimit_nofile {worker_connections * 3};
pid logs/nginx.pid;
error_log logs/error.log info;

events {{
    worker_connections {worker_connections};
}}

wasm {{
    module tollgate {wasm};
    shm_kv * {shm_megabytes(slots)}m;
}}

http {{
    log_format tollgate '$pid $remote_addr $status "$request"';
    access_log logs/access.log tollgate;
    client_body_temp_path temp/client_body;
    proxy_temp_path temp/proxy;
    fastcgi_temp_path temp/fastcgi;
    uwsgi_temp_path temp/uwsgi;
    scgi_temp_path temp/scgi;

    set_real_ip_from 127.0.0.1;
    real_ip_header X-Real-IP;

    upstream api {{
        server 127.0.0.1:{upstream_port};
        keepalive 32;
    }}

    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;

        location = /__ready {{
            return 200 "ready\\n";
        }}

        location / {{
            proxy_wasm_request_headers_in_access on;
            proxy_wasm tollgate '{text}';
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://api;
        }}
    }}
}}
"""


class NginxFailed(AssertionError):
    """nginx exited or never became ready; the message carries the tail of its error log."""


class Nginx:
    """One nginx master: `start()` it, talk to `port` (where `conf_text` listens), `stop()` it by PID."""

    def __init__(self, nginx_bin: Path, workdir: Path, conf_text: str, *, port: int, workers: int = 2):
        self.bin = nginx_bin
        self.prefix = workdir / "nginx"
        self.workers = workers
        self.port = port
        # Workers of a master started as root drop to `nobody`, who cannot enter pytest's
        # private temporary directories: as root, they keep the runner's user.
        self.conf_text = ("user root;\n" if os.geteuid() == 0 else "") + conf_text
        self.proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def for_filter(cls, nginx_bin: Path, workdir: Path, filter_config: dict, *, upstream_port: int,
                   wasm: Path = FILTER_WASM, workers: int = 2) -> "Nginx":
        """The usual test server: `/` through Tollgate (`filter_config`) to the upstream."""
        port = free_port()
        conf = render_conf(filter_config, port=port, upstream_port=upstream_port, wasm=wasm, workers=workers)
        return cls(nginx_bin, workdir, conf, port=port, workers=workers)

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def error_log(self) -> Path:
        return self.prefix / "logs" / "error.log"

    @property
    def access_log(self) -> Path:
        return self.prefix / "logs" / "access.log"

    def spawn(self) -> "Nginx":
        """Start the master and return at once (for configurations the filter must refuse)."""
        for sub in ("conf", "logs", "temp"):
            (self.prefix / sub).mkdir(parents=True, exist_ok=True)
        conf = self.prefix / "conf" / "nginx.conf"
        conf.write_text(self.conf_text)
        with open(self.prefix / "logs" / "stdout.log", "wb") as out:
            self.proc = subprocess.Popen(
                [str(self.bin), "-p", f"{self.prefix}/", "-c", str(conf), "-g", "daemon off; master_process on;"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        return self

    def start(self, timeout: float = READY_TIMEOUT) -> "Nginx":
        """Spawn and wait until both workers run and `/__ready` answers."""
        self.spawn()
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while not self._ready():
            if self.proc.poll() is not None:
                raise NginxFailed(f"nginx exited with status {self.proc.returncode}\n{self.log_tail()}")
            if "exited with fatal code" in self.log():  # a worker failed its start (e.g. the filter's configure)
                self.stop()
                raise NginxFailed(f"a worker failed to start\n{self.log_tail()}")
            if time.monotonic() >= deadline:
                self.stop()
                raise NginxFailed(f"nginx not ready after {timeout:.0f}s\n{self.log_tail()}")
            time.sleep(0.05)
        return self

    def _ready(self) -> bool:
        if len(self.worker_pids()) != self.workers:
            return False
        # Any HTTP answer: a worker serves (the test servers answer /__ready themselves; the
        # example proxies it, and its API answers 404).
        try:
            return http.get(self.port, "/__ready", timeout=2).status > 0
        except OSError:
            return False

    def stop(self) -> None:
        """Graceful stop (SIGQUIT) of the master by PID; SIGKILL if it is still there 10 s later."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        workers = self._children(proc.pid)
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        for pid in workers:  # orphans of a killed master, by their PIDs
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not running"
        return self.proc.pid

    @staticmethod
    def _children(pid: int) -> list[int]:
        try:
            text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        except OSError:
            return []
        return [int(p) for p in text.split()]

    def worker_pids(self) -> list[int]:
        return self._children(self.proc.pid) if self.proc is not None else []

    # -- logs --------------------------------------------------------------------------------

    def log(self) -> str:
        return self.error_log.read_text(errors="replace") if self.error_log.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        tail = self.log().splitlines()[-lines:]
        return f"--- last {len(tail)} lines of {self.error_log} ---\n" + "\n".join(tail)

    def worker_crashes(self) -> list[str]:
        """Error-log lines of workers that died ('exited on signal 11') or whose Wasm instance
        trapped (which fails every request in flight on that instance)."""
        return [line for line in self.log().splitlines() if "exited on signal" in line or "trapped" in line]

    def served_by(self) -> dict[int, int]:
        """Requests per worker PID, from the access log."""
        counts: dict[int, int] = {}
        if self.access_log.exists():
            for line in self.access_log.read_text().splitlines():
                pid = int(line.split(" ", 1)[0])
                counts[pid] = counts.get(pid, 0) + 1
        return counts

    # -- processes ---------------------------------------------------------------------------

    def rss_kib(self) -> dict[int, int]:
        """VmRSS (KiB) of the master and of each worker, by PID."""
        found: dict[int, int] = {}
        for pid in [self.pid, *self.worker_pids()]:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        found[pid] = int(line.split()[1])
            except OSError:
                continue
        return found

    def cpu_seconds(self) -> float:
        """User + system CPU time of the workers so far."""
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for pid in self.worker_pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / ticks
        return total

    # -- traffic -----------------------------------------------------------------------------

    def get(self, path: str = "/api/x", headers: Mapping[str, str] | None = None) -> http.Response:
        return http.get(self.port, path, headers)

    def request(self, method: str, path: str, headers: Mapping[str, str] | None = None, body: bytes | None = None):
        return http.request(self.port, method, path, headers, body)

    def client(self) -> http.Client:
        return http.Client(self.port)

    def wait_served(self, n: int, timeout: float = 10.0) -> dict[int, int]:
        """The access log is written after the response: poll until it holds `n` requests."""
        return until(self.served_by, lambda c: sum(c.values()) >= n, timeout, f"{n} access log lines")
