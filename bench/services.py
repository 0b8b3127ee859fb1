"""The processes `bench/sidecar` starts: a throw-away redis-server, the release sidecar (Redis or
in-memory counters) and Envoys built from any bootstrap. Each listens on a free loopback port,
is polled until it serves, and is stopped by its own PID."""

import json
import os
import re
import socket
import subprocess
import time
import urllib.error
import urllib.request

from envoys import free_ports
from load import BenchError


def _poll(ready, process, what, log_path, timeout):
    """Calls ready() every 50 ms until it is true; fails with the log if `process` exits or the
    time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"{what} exited with {process.returncode} at start:\n{_tail(log_path)}")
        try:
            if ready():
                return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.05)
    raise BenchError(f"{what} not ready after {timeout} s:\n{_tail(log_path)}")


def _tail(path, lines=20):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop(process):
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, response.read().decode()


class Redis:
    """redis-server on a free loopback port, no persistence, stopped by PID."""

    def __init__(self, workdir, binary="redis-server"):
        (self.port,) = free_ports(1)
        self.log_path = os.path.join(workdir, "redis.log")
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", workdir, "--logfile", self.log_path],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        self.pid = self.process.pid
        self.url = f"redis://127.0.0.1:{self.port}"
        _poll(lambda: self.command("PING") == "+PONG", self.process, "redis-server", self.log_path, 20)

    def command(self, *args):
        """One command over a fresh connection (RESP); the first line of the answer."""
        parts = [f"*{len(args)}\r\n".encode()]
        for arg in args:
            data = arg if isinstance(arg, bytes) else str(arg).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(b"".join(parts))
            answer = b""
            while not answer.endswith(b"\r\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                answer += chunk
        return answer.decode(errors="replace").split("\r\n", 1)[0]

    def commands(self):
        """Calls so far per command (INFO commandstats), e.g. {"get": 12, "evalsha": 12}."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(b"*2\r\n$4\r\nINFO\r\n$12\r\ncommandstats\r\n")
            data = b""
            while True:
                header, _, body = data.partition(b"\r\n")
                if header.startswith(b"$") and len(body) >= int(header[1:]):
                    break
                chunk = s.recv(65536)
                if not chunk:
                    raise BenchError("redis-server closed the connection during INFO")
                data += chunk
        return {m.group(1): int(m.group(2))
                for m in re.finditer(r"^cmdstat_(\w+):calls=(\d+)", body.decode(), re.M)}

    def stop(self):
        _stop(self.process)


class Sidecar:
    """The release `tollgate-sidecar`, counters in `redis` (a Redis) or in memory (None)."""

    def __init__(self, name, binary, workdir, redis=None):
        self.name = name
        (self.port,) = free_ports(1)
        self.log_path = os.path.join(workdir, f"sidecar-{name}.log")
        env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLGATE_")}
        env["TOLLGATE_LISTEN"] = f"127.0.0.1:{self.port}"
        env.setdefault("RUST_LOG", "warn")
        if redis is not None:
            env["TOLLGATE_REDIS_URL"] = redis.url
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen([binary], env=env, cwd=workdir, stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.pid = self.process.pid
        self.base = f"http://127.0.0.1:{self.port}"
        # /readyz answers 200 only once the store answers too (Redis pinged).
        _poll(lambda: _get(self.base + "/readyz")[0] == 200, self.process, f"sidecar ({name})",
              self.log_path, 30)

    def decisions(self):
        """tollgate_decisions_total by outcome (admitted, refused), summed over rules."""
        _, text = _get(self.base + "/metrics")
        totals = {"admitted": 0, "refused": 0}
        for line in text.splitlines():
            m = re.match(r'^tollgate_decisions_total\{[^}]*outcome="(\w+)"[^}]*\}\s+(\S+)', line)
            if m:
                totals[m.group(1)] = totals.get(m.group(1), 0) + int(float(m.group(2)))
        return totals

    def check(self, body):
        """One POST /v1/check: (status, parsed JSON answer)."""
        request = urllib.request.Request(self.base + "/v1/check", data=json.dumps(body).encode(),
                                         headers={"content-type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def stop(self):
        _stop(self.process)


class Envoy:
    """One Envoy with one worker (`--concurrency 1`) serving `bootstrap` (a dict whose admin and
    listener ports are set here), pinned to `core` when it is not None."""

    def __init__(self, name, bootstrap, envoy_bin, workdir, core=None):
        self.name = name
        self.port, self.admin_port = free_ports(2)
        bootstrap["admin"] = {"address": _address(self.admin_port)}
        bootstrap["static_resources"]["listeners"][0]["address"] = _address(self.port)
        self.config_path = os.path.join(workdir, f"envoy-{name}.json")
        self.log_path = os.path.join(workdir, f"envoy-{name}.log")
        with open(self.config_path, "w") as f:
            json.dump(bootstrap, f, indent=2)
        pin = ["taskset", "-c", str(core)] if core is not None else []
        # taskset execs Envoy, so the child's PID is Envoy's.
        self.process = subprocess.Popen(
            pin + [envoy_bin, "-c", self.config_path, "--concurrency", "1", "--use-dynamic-base-id",
                   "-l", "warning", "--log-path", self.log_path],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        self.pid = self.process.pid
        self.base = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout=60):
        _poll(lambda: _get(f"http://127.0.0.1:{self.admin_port}/ready")[0] == 200, self.process,
              f"Envoy ({self.name})", self.log_path, timeout)

    def get(self, path="/", headers=None):
        request = urllib.request.Request(self.base + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def log_tail(self):
        return _tail(self.log_path)

    def stop(self):
        _stop(self.process)


def _address(port):
    return {"socket_address": {"address": "127.0.0.1", "port_value": port}}


def stop_all(processes):
    """Stops every process in `processes` (newest first), whatever happens to the others."""
    for p in reversed(processes):
        try:
            p.stop()
        except Exception:  # noqa: BLE001 — keep stopping the rest
            pass
