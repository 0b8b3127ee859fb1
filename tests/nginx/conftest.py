"""Fixtures for the nginx suite: the nginx binary from TOLLGATE_NGINX_BIN, the filter build to load
(TOLLGATE_NGINX_WASM, else target/wasm32-wasip1/release/tollgate_filter.wasm), and nginx
processes stopped by PID after each test. The demo API, sidecar and Redis fixtures are the
Envoy suite's (tests/conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator

import pytest

from harness import paths
from nginx_launcher import Nginx

StartNginx = Callable[..., Nginx]

NGINX_BIN_HELP = (
    "TOLLGATE_NGINX_BIN is not set (or not an executable): set it to an nginx binary built with "
    "Kong's ngx_wasm_module on wasmtime, e.g. TOLLGATE_NGINX_BIN=/opt/nginx-wasm/sbin/nginx "
    "scripts/test-nginx (examples/nginx/README.md says what it needs)"
)


@pytest.fixture(scope="session")
def nginx_bin() -> Path:
    explicit = os.environ.get("TOLLGATE_NGINX_BIN", "")
    path = Path(explicit)
    if not explicit or not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"{NGINX_BIN_HELP}; got {explicit!r}", pytrace=False)
    return path


@pytest.fixture(scope="session")
def nginx_wasm() -> Path:
    explicit = os.environ.get("TOLLGATE_NGINX_WASM")
    try:
        return paths.wasm(Path(explicit) if explicit else paths.FILTER_WASM)
    except paths.MissingArtifact as e:
        pytest.fail(str(e), pytrace=False)


@pytest.fixture
def idle_seconds() -> float:
    """How long the idle test leaves nginx alone: $TOLLGATE_NGINX_IDLE_SECONDS (600)."""
    return float(os.environ.get("TOLLGATE_NGINX_IDLE_SECONDS", "600"))


@pytest.fixture
def start_nginx(tmp_path: Path, nginx_bin: Path, nginx_wasm: Path) -> Iterator[StartNginx]:
    """`start_nginx(filter_config, upstream_port=...)` → a ready nginx (2 workers; `wait=False`:
    just spawned), stopped after the test; a worker that died during the test fails it here, with the error log's tail."""
    started: list[Nginx] = []

    def start(filter_config: dict, *, upstream_port: int, workers: int = 2, wait: bool = True) -> Nginx:
        nginx = Nginx.for_filter(nginx_bin, tmp_path / f"n{len(started)}", filter_config,
                                 upstream_port=upstream_port, wasm=nginx_wasm, workers=workers)
        started.append(nginx)
        return nginx.start() if wait else nginx.spawn()

    yield start
    crashes = []
    for nginx in started:
        crashes += nginx.worker_crashes()
        nginx.stop()
    if crashes:
        pytest.fail("nginx workers died:\n" + "\n".join(crashes[:20]), pytrace=False)
