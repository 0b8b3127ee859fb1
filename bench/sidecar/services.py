"""What the parts of `bench/sidecar` share: the work directory and the processes they run, all
started through tests.harness's launchers on free loopback ports and stopped by PID. Redis and
the two long-lived sidecars (on Redis, in memory) start on a part's first use; `stop_all()`
between parts gives every part a fresh set."""

from pathlib import Path

from tests.harness.envoy import Envoy
from tests.harness.redis import RedisServer
from tests.harness.sidecar import SidecarProcess
from tests.harness.wait import until


class Services:
    def __init__(self, opts, workdir):
        self.opts = opts
        self.workdir = workdir
        self.started = []  # every process, newest last
        self._redis = None
        self._sidecars = {}

    def redis(self):
        """The throw-away redis-server (no persistence), started once."""
        if self._redis is None:
            self._redis = RedisServer.launch(Path(self.workdir) / "redis", binary=self.opts.redis_server)
            self.started.append(self._redis)
        return self._redis

    def fresh_redis(self, name):
        """Another throw-away redis-server (no persistence), started now."""
        redis = RedisServer.launch(Path(self.workdir) / f"redis-{name}", binary=self.opts.redis_server)
        self.started.append(redis)
        return redis

    def sidecar(self, store):
        """The release sidecar with its counters in Redis (`"redis"`) or in memory (`"memory"`), started once."""
        if store not in self._sidecars:
            redis = self.redis() if store == "redis" else None
            self._sidecars[store] = self.start_sidecar(store, redis)
        return self._sidecars[store]

    def start_sidecar(self, name, redis=None):
        """A new release sidecar (counters in `redis`, else in memory), ready: /readyz 200 once its store answers."""
        sidecar = SidecarProcess(Path(self.workdir) / f"sidecar-{name}", redis_url=redis.url if redis else None,
                                 env={"RUST_LOG": "warn"}, binary=self.opts.sidecar_bin)
        self.started.append(sidecar)
        sidecar.start()
        until(sidecar.ready, lambda status: status == 200, 30, f"sidecar ({name}) /readyz")
        return sidecar

    def spawn_envoy(self, name, bootstrap, core=None, workers=1):
        """Envoy with `workers` workers (1) serving `bootstrap`, pinned to `core` if given; not waited for."""
        prefix = ["taskset", "-c", str(core)] if core is not None else []
        envoy = Envoy(bootstrap, Path(self.workdir), concurrency=workers, name=f"envoy-{name}",
                      binary=self.opts.envoy, prefix=prefix, log_level="warning")
        self.started.append(envoy)
        return envoy.spawn()

    def stop_all(self):
        """Stops every process (newest first), whatever happens to the others."""
        for process in reversed(self.started):
            try:
                process.stop()
            except Exception:  # noqa: BLE001 — keep stopping the rest
                pass
        self.started, self._redis, self._sidecars = [], None, {}
