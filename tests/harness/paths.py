"""Where the things under test live: the repository, the pinned Envoy and the built filter."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RELEASE = REPO / "target" / "wasm32-wasip1" / "release"
FILTER_WASM = RELEASE / "tollgate_filter.wasm"
NOOP_WASM = RELEASE / "tollgate_noop_filter.wasm"
DEMO_API = REPO / "examples" / "demo-api" / "server.py"
ENVOY_YAML = REPO / "envoy" / "envoy.yaml"
BAD_CONFIG_DIR = REPO / "filter" / "tests" / "fixtures" / "bad-config"
# The contract fixture: the configuration every build must accept (the repository's own copy).
SHARED_FIXTURE = REPO / "filter" / "tests" / "fixtures" / "filter-config.json"


class MissingArtifact(RuntimeError):
    """Something scripts/setup produces is not there."""


def envoy_bin() -> Path:
    """The Envoy to test: $ENVOY_BIN, else the pinned one in .venv."""
    explicit = os.environ.get("ENVOY_BIN")
    path = Path(explicit) if explicit else REPO / ".venv" / "bin" / "envoy"
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise MissingArtifact(f"Envoy not found at {path}: run scripts/setup (or set ENVOY_BIN)")
    return path


def wasm(path: Path = FILTER_WASM) -> Path:
    """A built filter; fails with the command that builds it."""
    if not path.is_file():
        shown = path.relative_to(REPO) if path.is_relative_to(REPO) else path
        raise MissingArtifact(f"{shown} is missing: run scripts/setup (it runs cargo build-filter)")
    return path


def shared_fixture() -> Path:
    if not SHARED_FIXTURE.is_file():
        raise MissingArtifact(f"contract fixture {SHARED_FIXTURE} is missing")
    return SHARED_FIXTURE
