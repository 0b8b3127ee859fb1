"""What ships: envoy/envoy.yaml validates and embeds the shared fixture; the fixture serves;
the README's main command (scripts/demo) works end to end."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess

from harness import DemoApi, config, http, paths, policy

FREE, PRO = {"x-api-key": "key-free-0001"}, {"x-api-key": "key-pro-0001"}


def test_envoy_yaml_validates(envoy_bin, filter_wasm):
    proc = subprocess.run(
        [str(envoy_bin), "--mode", "validate", "-c", "envoy/envoy.yaml", "-l", "warn"],
        cwd=paths.REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OK" in proc.stdout + proc.stderr


def test_envoy_yaml_embeds_the_shared_fixture():
    text = paths.ENVOY_YAML.read_text()
    # The block scalar after `value: |` up to the next line indented less than its content.
    match = re.search(r"^(\s*)value: \|\n((?:\1\s+.*\n)+)", text, re.M)
    assert match, "no `value: |` block in envoy/envoy.yaml"
    embedded = json.loads(match.group(2))
    assert embedded == policy.shared(), "envoy/envoy.yaml's plugin configuration drifted from the shared fixture"


def test_shared_fixture_loads_and_serves(start_envoy, demo_api: DemoApi):
    envoy = start_envoy(
        config.tollgate(
            policy.shared(),
            routes=[config.to_cluster("/api/"), config.direct("/")],
            clusters=[config.static_cluster(config.DEMO_CLUSTER, demo_api.port)],
        )
    )
    resp = envoy.get("/api/hello", FREE)
    assert resp.status == 200, resp
    assert resp.json()["path"] == "/api/hello", resp
    for name in ("ratelimit-limit", "ratelimit-remaining", "ratelimit-reset", "ratelimit-policy"):
        assert resp.header(name), resp
    # exports: 5 an hour for a free tenant (its per-tenant burst of 10 still has 9).
    exports = http.burst(envoy.port, 6, "/api/export/csv", FREE)
    assert http.statuses(exports) == [200] * 5 + [429], [str(r) for r in exports]
    assert exports[-1].json()["rule"] == "exports", exports[-1]
    # reports is strict; with the sidecar down and failure_mode open it admits.
    reports = envoy.get("/api/reports/daily", PRO)
    assert reports.status == 200, reports
    # search-shadow never refuses.
    assert set(http.statuses(http.burst(envoy.port, 3, "/api/search?q=x", PRO))) == {200}
    # Anonymous traffic only meets the per-IP rule.
    anonymous = envoy.get("/api/hello")
    assert anonymous.status == 200 and anonymous.header("ratelimit-limit"), anonymous


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_demo_check(envoy_bin, filter_wasm, tmp_path):
    env = dict(os.environ)
    env.update(
        TOLLGATE_DEMO_PORT=str(free_port()),
        TOLLGATE_DEMO_ADMIN_PORT=str(free_port()),
        TOLLGATE_DEMO_API_PORT=str(free_port()),
        TOLLGATE_DEMO_SIDECAR_PORT=str(free_port()),
        TOLLGATE_DEMO_STATE=str(tmp_path / "demo"),
    )
    proc = subprocess.run(
        ["scripts/demo", "--check"], cwd=paths.REPO, env=env, capture_output=True, text=True, timeout=900,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "demo check: OK" in output, output
    assert re.search(r"429 at request 1[123]:", output), output
    # The sidecar the demo starts decides the strict rule.
    assert "demo check: strict rule reports: 429 at request 11 from the sidecar" in output, output
    # It prints a dashboard link for its demo tenant, which signs in once.
    assert "demo check: dashboard link signs in as t-pro once" in output, output
    assert "demo check: dashboard OK" in output, output
