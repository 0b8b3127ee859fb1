"""A throw-away PostgreSQL (`bench/usage` flushes into it), made the way the sidecar's tests make theirs
(`sidecar/tests/support/postgres.rs`): `initdb` into a directory of its own, `postgres` on a
free loopback port (as the `postgres` user when run as root: PostgreSQL refuses root), polled
with `pg_isready`, stopped by its PID (SIGINT, a fast shutdown). Settings are the defaults
(fsync on) but for the port, the socket directory and `listen_addresses=127.0.0.1`."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import time

from .sidecar import free_port

INSTALL_HINT = "apt-get install -y postgresql"
STARTUP = 30


def find_binary(name):
    """`name` on the PATH, else in the newest /usr/lib/postgresql/*/bin (Debian's place)."""
    found = shutil.which(name)
    if found:
        return found
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                  key=lambda d: int(d.split("/")[-2]) if d.split("/")[-2].isdigit() else 0, reverse=True)
    for d in dirs:
        if os.path.isfile(os.path.join(d, name)):
            return os.path.join(d, name)
    raise RuntimeError(f"no {name} on the PATH or in /usr/lib/postgresql/*/bin ({INSTALL_HINT})")


class Postgres:
    """One throw-away server; `url` is its `postgres` database as the superuser."""

    def __init__(self, workdir):
        self.initdb, self.postgres, self.pg_isready = (find_binary(n) for n in ("initdb", "postgres", "pg_isready"))
        self.psql_bin = find_binary("psql")
        self.port = free_port()
        self.dir = os.path.join(workdir, "postgres")
        os.makedirs(self.dir, exist_ok=True)
        self.user = None
        if os.getuid() == 0:
            try:
                entry = pwd.getpwnam("postgres")
            except KeyError as e:
                raise RuntimeError("running as root needs a postgres user to run PostgreSQL as") from e
            self.user = (entry.pw_uid, entry.pw_gid)
            os.chown(self.dir, *self.user)
        self.log_path = os.path.join(self.dir, "postgres.log")
        data = os.path.join(self.dir, "data")
        done = subprocess.run([self.initdb, "-D", data, "-A", "trust", "-U", "postgres", "--no-sync"],
                              cwd=self.dir, capture_output=True, text=True, preexec_fn=self._as_user, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stderr.strip()}")
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [self.postgres, "-D", data, "-p", str(self.port), "-k", self.dir,
                 "-c", "listen_addresses=127.0.0.1"],
                cwd=self.dir, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=self._as_user)
        self.pid = self.process.pid
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/postgres"
        deadline = time.monotonic() + STARTUP
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.process.returncode} at start-up (log: {self.log_path})")
            ready = subprocess.run([self.pg_isready, "-q", "-h", "127.0.0.1", "-p", str(self.port),
                                    "-U", "postgres", "-d", "postgres"], timeout=10)
            if ready.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"postgres did not accept connections within {STARTUP} s")
            time.sleep(0.05)

    def _as_user(self):
        if self.user:
            os.setgid(self.user[1])
            os.setuid(self.user[0])

    def query(self, sql):
        """One statement through psql: the rows, `|`-separated fields."""
        done = subprocess.run([self.psql_bin, "-X", "-At", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                               "-d", "postgres", "-c", sql], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"psql {sql!r} failed: {done.stderr.strip()}")
        return [line.split("|") for line in done.stdout.splitlines()]

    def stop(self):
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGINT)
            try:
                self.process.wait(timeout=STARTUP)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
