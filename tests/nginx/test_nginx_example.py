"""examples/nginx/nginx.conf as shipped (only its loopback ports and the filter's path replaced)
loads, proxies, and enforces its policy with the real sidecar."""

from __future__ import annotations

from harness.paths import REPO
from harness.sidecar import free_port
from nginx_launcher import Nginx

EXAMPLE = REPO / "examples" / "nginx" / "nginx.conf"
PRO = {"X-Api-Key": "key-pro-0001"}


def example_conf(*, port: int, upstream_port: int, sidecar_port: int, wasm) -> str:
    text = EXAMPLE.read_text()
    for old, new in [
        ("module tollgate /opt/tollgate/tollgate_filter.wasm;", f"module tollgate {wasm};"),
        ("listen 127.0.0.1:10000;", f"listen 127.0.0.1:{port};"),
        ("server 127.0.0.1:8000;", f"server 127.0.0.1:{upstream_port};"),
        ('"cluster": "127.0.0.1:8080"', f'"cluster": "127.0.0.1:{sidecar_port}"'),
    ]:
        assert text.count(old) == 1, f"{EXAMPLE} should name {old} once"
        text = text.replace(old, new)
    return text


def test_the_example_configuration_enforces_its_policy(nginx_bin, nginx_wasm, demo_api, sidecar, tmp_path):
    port = free_port()
    conf = example_conf(port=port, upstream_port=demo_api.port, sidecar_port=sidecar.port, wasm=nginx_wasm)
    nginx = Nginx(nginx_bin, tmp_path, conf, port=port).start()
    try:
        first = nginx.get("/api/hello", PRO)
        assert first.status == 200 and first.json()["path"] == "/api/hello", first
        assert first.header("ratelimit-limit") and first.header("ratelimit-remaining"), first
        # `reports` is strict (10 a minute, asked of the sidecar); the tenant's global token
        # bucket holds a burst of 10 as well: the 11th request is refused by one of the two.
        statuses = [nginx.get("/api/reports/daily", PRO).status for _ in range(12)]
        assert statuses[:9] == [200] * 9 and statuses[-1] == 429, statuses
        refused = nginx.get("/api/reports/daily", PRO)
        assert refused.status == 429 and refused.json()["rule"] in {"reports", "per-tenant"}, refused
        assert sidecar.decisions(rule="reports") >= 9
        assert not nginx.worker_crashes(), nginx.worker_crashes()
    finally:
        nginx.stop()
