"""nginx left idle with every tick-driven feature on (global sync, usage batches, strict rules):
its memory stays flat and the workers stay quiet. The idle time is
$TOLLGATE_NGINX_IDLE_SECONDS (600 by default); RSS and CPU are sampled every 10 s and printed."""

from __future__ import annotations

import time

from harness import policy

SAMPLE_EVERY = 10.0
# What an idle nginx may gain after its warm-up, all workers together, and the CPU it may use.
RSS_GROWTH_KIB = 2048
CPU_SHARE = 0.05


def busy_config(sidecar_port: int) -> dict:
    return policy.config(
        policy.rule("per-tenant", "fixed_window", 1000, "1h", key=["tenant"], scope="global"),
        policy.rule("strict", "fixed_window", 1000, "1h", key=["tenant"], scope="strict"),
        policy.rule("per-ip", "token_bucket", 100, "1m"),
        tenants=policy.TENANTS,
        sidecar={"cluster": f"127.0.0.1:{sidecar_port}", "timeout_ms": 500, "sync_interval_ms": 200},
        usage={"interval_ms": 1000},
    )


def test_idle_nginx_keeps_flat_memory_and_quiet_workers(start_nginx, demo_api, sidecar, idle_seconds):
    nginx = start_nginx(busy_config(sidecar.port), upstream_port=demo_api.port)
    for i in range(20):  # every feature has something to do once
        assert nginx.get(f"/api/warm/{i}", {"x-api-key": "key-pro-0001"}).status == 200
    samples: list[tuple[float, int, float]] = []
    start = time.monotonic()
    warm_cpu = nginx.cpu_seconds()
    next_at = start
    while True:
        elapsed = time.monotonic() - start
        rss = nginx.rss_kib()
        assert len(rss) == 3, f"master and 2 workers expected, found {rss}\n{nginx.log_tail()}"
        samples.append((elapsed, sum(rss.values()), nginx.cpu_seconds() - warm_cpu))
        if elapsed >= idle_seconds:
            break
        next_at += SAMPLE_EVERY
        time.sleep(max(0.0, min(next_at, start + idle_seconds) - time.monotonic()))
    for t, kib, cpu in samples:
        print(f"idle {t:6.0f} s  rss {kib / 1024:7.1f} MiB  worker cpu {cpu:6.2f} s")
    # The first minute may still allocate lazily (buffers, first ticks); after it, nothing grows.
    base = next((kib for t, kib, _ in samples if t >= min(60.0, idle_seconds / 2)), samples[0][1])
    last_t, last_kib, last_cpu = samples[-1]
    print(f"rss from {samples[0][1]} KiB (start) / {base} KiB (after warm-up) to {last_kib} KiB; "
          f"worker cpu {last_cpu:.2f} s in {last_t:.0f} s; sidecar sync batches "
          f"{sidecar.metric('tollgate_sync_batches_total'):.0f}, usage batches "
          f"{sidecar.metric('tollgate_usage_batches_total'):.0f}")
    assert last_kib - base <= RSS_GROWTH_KIB, f"RSS grew by {last_kib - base} KiB while idle"
    assert last_cpu <= CPU_SHARE * last_t, f"workers used {last_cpu:.1f} s of CPU in {last_t:.0f} s idle"
    # Still serving afterwards.
    assert nginx.get("/api/after", {"x-api-key": "key-pro-0001"}).status == 200
