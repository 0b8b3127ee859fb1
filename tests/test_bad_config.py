"""A bad filter config stops Envoy at start-up, with the filter's message naming field and fix.

Every fixture in filter/tests/fixtures/bad-config (NAME.json with its message in NAME.expected,
the same files the Rust config tests use) goes through a real Envoy.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import Envoy, config, paths, policy

FIXTURES = sorted(paths.BAD_CONFIG_DIR.glob("*.json"))


def assert_rejected(envoy: Envoy, message: str) -> None:
    status = envoy.wait_exit()
    log = envoy.log()
    assert status == 1, f"Envoy exited with {status}, want 1\n{envoy.log_tail()}"
    lines = [line for line in log.splitlines() if "wasm log" in line and message in line]
    assert lines, f"no 'wasm log ...: {message}' line\n{envoy.log_tail()}"


def test_fixtures_exist():
    assert len(FIXTURES) >= 10, f"bad-config fixtures missing under {paths.BAD_CONFIG_DIR}"
    for fixture in FIXTURES:
        assert fixture.with_suffix(".expected").is_file(), f"{fixture.name} has no .expected"


@pytest.mark.parametrize("fixture", FIXTURES, ids=[f.stem for f in FIXTURES])
def test_fixture_is_rejected_with_its_message(spawn_envoy, fixture: Path):
    message = fixture.with_suffix(".expected").read_text().strip()
    envoy = spawn_envoy(config.tollgate(fixture.read_text()))
    assert_rejected(envoy, message)


def test_bad_window(spawn_envoy):
    cfg = policy.config(policy.rule("r", "fixed_window", 5, "90x"))
    envoy = spawn_envoy(config.tollgate(json.dumps(cfg)))
    assert_rejected(envoy, 'rules[0].window: "90x" is not a duration (use 1s, 1m, 1h, 1d)')

