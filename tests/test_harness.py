"""The harness itself, with the do-nothing wasm filter: Envoy starts, serves, reports, stops.

These pass whatever state the Tollgate filter is in, so a red run elsewhere is about the filter.
"""

from __future__ import annotations

from pathlib import Path

from harness import DemoApi, Envoy, config, http, paths


def noop(**kw) -> dict:
    return config.tollgate(None, wasm=paths.NOOP_WASM, root_id="noop", **kw)


def test_envoy_with_a_wasm_filter_serves_direct_responses(start_envoy, noop_wasm: Path):
    envoy = start_envoy(noop())
    resp = envoy.get("/anything")
    assert resp.status == 200, resp
    assert resp.json() == {"ok": True}
    assert envoy.stats("wasm.envoy.wasm.runtime.v8.created")["wasm.envoy.wasm.runtime.v8.created"] >= 1


def test_demo_api_as_upstream(start_envoy, demo_api: DemoApi, noop_wasm: Path):
    envoy = start_envoy(
        noop(
            routes=[config.to_cluster("/api/"), config.to_cluster("/healthz"), config.direct("/")],
            clusters=[config.static_cluster(config.DEMO_CLUSTER, demo_api.port)],
        )
    )
    resp = envoy.get("/api/orders/42?status=201&bytes=10")
    assert resp.status == 201, resp
    body = resp.json()
    assert body["method"] == "GET" and body["path"] == "/api/orders/42"
    assert body["padding"] == "x" * 10
    resp = envoy.request("POST", "/api/upload", {"content-type": "application/octet-stream"}, b"12345")
    assert resp.status == 200, resp
    assert resp.json()["received_bytes"] == 5
    resp = envoy.get("/healthz")
    assert resp.status == 200 and resp.json() == {"status": "ok"}, resp
    resp = envoy.get("/api/x?status=abc")
    assert resp.status == 400 and resp.json()["error"] == "bad_query", resp


def test_keep_alive_and_per_worker_stats(start_envoy, noop_wasm: Path):
    envoy = start_envoy(noop(), concurrency=2)
    with envoy.client() as client:
        responses = [client.get("/") for _ in range(5)]
    assert http.statuses(responses) == [200] * 5
    workers = envoy.worker_connections()
    assert set(workers) == {"worker_0", "worker_1"}, workers
    assert sum(workers.values()) == 1, f"5 requests on one keep-alive connection: {workers}"


def test_stop_ends_the_process(tmp_path: Path, envoy_bin: Path, noop_wasm: Path):
    envoy = Envoy(noop(), tmp_path).start()
    proc = envoy.proc
    assert envoy.get("/").status == 200
    envoy.stop()
    assert proc is not None and proc.poll() is not None


def test_a_config_envoy_rejects_fails_with_its_log(tmp_path: Path, envoy_bin: Path, noop_wasm: Path):
    bad = noop()
    bad["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]["codec_type"] = "NOPE"
    envoy = Envoy(bad, tmp_path).spawn()
    assert envoy.wait_exit() != 0
    assert "NOPE" in envoy.log()
