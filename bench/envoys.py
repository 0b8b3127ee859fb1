"""Starting, probing and stopping the benchmark's Envoys (one per configuration, all on one core)."""

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request

import configs
from load import BenchError


def free_ports(n):
    """n distinct free loopback ports (held open together so that none repeats)."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class Envoy:
    """One Envoy with one worker thread, pinned to opts.envoy_core, serving configuration `name`."""

    def __init__(self, name, opts, workdir):
        self.name = name
        self.port, self.admin_port = free_ports(2)
        self.config_path = os.path.join(workdir, f"envoy-{name}.json")
        self.log_path = os.path.join(workdir, f"envoy-{name}.log")
        bootstrap = configs.bootstrap(name, self.port, self.admin_port, opts.noop_wasm, opts.tollgate_wasm)
        with open(self.config_path, "w") as f:
            json.dump(bootstrap, f, indent=2)
        self.url = f"http://127.0.0.1:{self.port}{configs.REQUEST_PATH}"
        # taskset execs Envoy, so the child's PID is Envoy's: its /proc/PID/stat is what we read.
        self.process = subprocess.Popen(
            ["taskset", "-c", str(opts.envoy_core), opts.envoy, "-c", self.config_path,
             "--concurrency", "1", "--use-dynamic-base-id", "-l", "warning", "--log-path", self.log_path],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.pid = self.process.pid

    def log_tail(self, lines=20):
        try:
            with open(self.log_path) as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return "(no log)"

    def wait_ready(self, timeout=60):
        """Polls the admin /ready until Envoy serves, or fails with its log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(f"Envoy ({self.name}) exited with {self.process.returncode} at start:\n"
                                 f"{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise BenchError(f"Envoy ({self.name}) not ready after {timeout} s:\n{self.log_tail()}")

    def get(self):
        """One request as the load sends it: (status, headers, body)."""
        request = urllib.request.Request(self.url, headers={configs.API_KEY_HEADER: configs.API_KEY})
        try:
            with urllib.request.urlopen(request, timeout=5) as r:
                return r.status, r.headers, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read().decode()

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def probe(envoy):
    """Checks by hand that the configuration does what its name says before any load."""
    status, headers, body = envoy.get()
    if envoy.name in "abc":
        if status != 200:
            raise BenchError(f"({envoy.name}) answered {status}, expected 200: {body}")
    elif envoy.name == "d":
        if status != 200 or headers.get("RateLimit-Limit") is None:
            raise BenchError(f"(d) answered {status} with headers {dict(headers)}: expected 200 "
                             "with RateLimit-Limit")
    elif envoy.name == "e":
        # The tenant's one request a day is this first one; from the second on, all are refused.
        if status != 200:
            raise BenchError(f"(e) answered {status} to the first request of the day, expected 200")
        status, headers, body = envoy.get()
        try:
            error = json.loads(body).get("error")
        except ValueError:
            error = None
        if status != 429 or headers.get("Retry-After") is None or error != "rate_limit_exceeded":
            raise BenchError(f"(e) answered {status} {dict(headers)} {body!r}: expected 429 with "
                             "Retry-After and error rate_limit_exceeded")
