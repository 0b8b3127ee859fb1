"""Fixtures: real Envoy processes and the demo API, started per test and stopped by PID afterwards."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import DemoApi, Envoy, paths  # noqa: E402
from harness.cluster import Cluster, start_cluster as _start_cluster  # noqa: E402
from harness.redis import RedisServer  # noqa: E402
from harness.sidecar import SidecarProcess  # noqa: E402
from harness.wait import clear_of_window_edge  # noqa: E402

StartEnvoy = Callable[..., Envoy]
StartSidecar = Callable[..., SidecarProcess]
StartCluster = Callable[..., Cluster]


# Most tests count in `fixed_window`/`sliding_window_counter` windows of an hour, aligned to the
# epoch; none runs longer than this, so starting this far from the hour's end keeps every count
# of a test inside one window.
HOUR_EDGE_MARGIN_S = 90.0


@pytest.fixture(autouse=True)
def clear_of_the_hour() -> None:
    """Every test starts at least HOUR_EDGE_MARGIN_S before the end of the hour (waiting at most
    that long, at most once an hour): an hour window never rolls over in the middle of a test's
    counts. Tests with longer windows or longer runs call `clear_of_window_edge` themselves."""
    clear_of_window_edge(3600, HOUR_EDGE_MARGIN_S)


@pytest.fixture(scope="session")
def envoy_bin() -> Path:
    """The pinned Envoy; missing, the test fails (never skips) naming the command to run."""
    try:
        return paths.envoy_bin()
    except paths.MissingArtifact as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture(scope="session")
def filter_wasm() -> Path:
    """The built filter (tests that load it through `config.tollgate` get the same check)."""
    try:
        return paths.wasm(paths.FILTER_WASM)
    except paths.MissingArtifact as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture(scope="session")
def noop_wasm() -> Path:
    try:
        return paths.wasm(paths.NOOP_WASM)
    except paths.MissingArtifact as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture
def start_envoy(tmp_path: Path, envoy_bin: Path) -> Iterator[StartEnvoy]:
    """`start_envoy(bootstrap_dict, concurrency=1)` → a ready Envoy, stopped after the test."""
    started: list[Envoy] = []

    def start(config: dict, *, concurrency: int = 1, name: str | None = None) -> Envoy:
        envoy = Envoy(config, tmp_path, concurrency=concurrency, name=name or f"envoy{len(started)}")
        started.append(envoy)
        return envoy.start()

    yield start
    for envoy in started:
        envoy.stop()


@pytest.fixture
def spawn_envoy(tmp_path: Path, envoy_bin: Path) -> Iterator[StartEnvoy]:
    """`spawn_envoy(bootstrap_dict)` → a started Envoy not waited for (for configs it must refuse)."""
    started: list[Envoy] = []

    def spawn(config: dict, *, concurrency: int = 1, name: str | None = None) -> Envoy:
        envoy = Envoy(config, tmp_path, concurrency=concurrency, name=name or f"envoy{len(started)}")
        started.append(envoy)
        return envoy.spawn()

    yield spawn
    for envoy in started:
        envoy.stop()


@pytest.fixture
def demo_api(tmp_path: Path) -> Iterator[DemoApi]:
    api = DemoApi(tmp_path).start()
    yield api
    api.stop()


@pytest.fixture
def sidecar(tmp_path: Path) -> Iterator[SidecarProcess]:
    """The built tollgate-sidecar (in-process counters) on a free port, stopped by PID afterwards."""
    proc = SidecarProcess(tmp_path / "sidecar")
    proc.workdir.mkdir(parents=True, exist_ok=True)
    try:
        try:
            proc.start()
        except paths.MissingArtifact as e:
            pytest.fail(str(e), pytrace=False)
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def start_sidecar(tmp_path: Path) -> Iterator[StartSidecar]:
    """`start_sidecar(redis_url=None)` → a running sidecar (Redis counters if `redis_url`), stopped by PID afterwards."""
    started: list[SidecarProcess] = []

    def start(redis_url: str | None = None) -> SidecarProcess:
        proc = SidecarProcess(tmp_path / f"sidecar{len(started)}", redis_url=redis_url)
        started.append(proc)
        try:
            return proc.start()
        except paths.MissingArtifact as e:
            pytest.fail(str(e), pytrace=False)

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis to share counters in: TOLLGATE_TEST_REDIS_URL when set, else a throw-away
    redis-server; missing, the test fails under CI=true and is skipped elsewhere. Tests that
    stop or restart Redis use `own_redis_server` instead."""
    server = RedisServer.from_env(tmp_path / "redis")
    yield server
    if server.restartable:
        server.kill()


@pytest.fixture
def own_redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """Always a throw-away redis-server (TOLLGATE_TEST_REDIS_URL ignored): the test may stop,
    kill and restart it on the same port. Stopped by PID afterwards."""
    server = RedisServer.throw_away(tmp_path / "redis")
    yield server
    server.kill()


@pytest.fixture
def start_cluster(start_envoy: StartEnvoy) -> StartCluster:
    """`start_cluster(filter_config, nodes=3, sidecar_ports=[port])` → N ready Envoys with one
    byte-identical filter configuration (stopped with the other Envoys of the test)."""

    def start(filter_config: dict, *, nodes: int = 3, sidecar_ports: list[int], concurrency: int = 1) -> Cluster:
        return _start_cluster(start_envoy, filter_config, nodes=nodes, sidecar_ports=sidecar_ports, concurrency=concurrency)

    return start


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    """Under CI=true nothing may skip: a skip becomes a failure."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") == "true" and report.skipped:
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, which is not allowed: {report.longrepr}"
