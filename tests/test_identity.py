"""Who a request counts against: tenants and plans from API keys, spoofed X-Forwarded-For."""

from __future__ import annotations

from harness import config, http, policy

PER_PLAN = {"plan": {"free": 3, "pro": 6}, "default": 1}


def key(api_key: str) -> dict:
    return {"x-api-key": api_key}


def test_tenants_are_isolated_and_plans_differ(start_envoy):
    cfg = policy.config(
        policy.rule("per-tenant", "fixed_window", PER_PLAN, "1h", key=["tenant"]),
        tenants=policy.TENANTS,
    )
    envoy = start_envoy(config.tollgate(cfg))
    free = http.burst(envoy.port, 5, "/api/x", key("key-free-0001"))
    assert http.statuses(free) == [200] * 3 + [429] * 2, [str(r) for r in free]
    assert free[0].header("ratelimit-limit") == "3", free[0]
    # Another tenant on the same plan still has its whole quota.
    other = http.burst(envoy.port, 4, "/api/x", key("key-free-0002"))
    assert http.statuses(other) == [200] * 3 + [429], [str(r) for r in other]
    # The pro plan's limit is the pro one.
    pro = http.burst(envoy.port, 8, "/api/x", key("key-pro-0001"))
    assert http.statuses(pro) == [200] * 6 + [429] * 2, [str(r) for r in pro]
    assert pro[0].header("ratelimit-limit") == "6", pro[0]
    # No API key: no tenant, so the tenant rule does not apply at all.
    anonymous = http.burst(envoy.port, 8, "/api/x")
    assert http.statuses(anonymous) == [200] * 8, [str(r) for r in anonymous]
    # The first tenant is still refused: the others' traffic did not reset it.
    again = envoy.get("/api/x", key("key-free-0001"))
    assert again.status == 429 and again.json()["rule"] == "per-tenant", again


def test_limit_plan_uses_the_plans_requests_per_minute(start_envoy):
    cfg = policy.config(
        policy.rule("per-tenant", "token_bucket", "plan", "1m", key=["tenant"]),
        plans={"free": {"requests_per_minute": 3}, "pro": {"requests_per_minute": 5}},
        tenants={k: v for k, v in policy.TENANTS.items() if k != "key-free-0002"},
    )
    envoy = start_envoy(config.tollgate(cfg))
    free = http.burst(envoy.port, 4, "/", key("key-free-0001"))
    assert http.statuses(free) == [200] * 3 + [429], [str(r) for r in free]
    pro = http.burst(envoy.port, 6, "/", key("key-pro-0001"))
    assert http.statuses(pro) == [200] * 5 + [429], [str(r) for r in pro]


def xff(value: str) -> dict:
    return {"x-forwarded-for": value}


# The harness's Envoy is an edge proxy (use_remote_address: true): it appends the peer it
# saw, 127.0.0.1, to X-Forwarded-For. So with a load balancer in front, `xff_trusted_hops: 2`
# trusts Envoy's entry and the load balancer's, which is the real client; the tests send
# what that load balancer would have forwarded.


def test_spoofed_x_forwarded_for_does_not_pick_a_bucket(start_envoy):
    cfg = policy.config(
        policy.rule("per-ip", "fixed_window", 2, "1h", key=["client_ip"]),
        identity={"client_ip": {"xff_trusted_hops": 2}},
    )
    envoy = start_envoy(config.tollgate(cfg))
    # The same real client (198.51.100.10, appended by the load balancer) forging a
    # different left part each time.
    spoofed = [envoy.get("/", xff(f"203.0.113.{i}, 198.51.100.10")) for i in range(1, 5)]
    assert http.statuses(spoofed) == [200, 200, 429, 429], [str(r) for r in spoofed]
    # A long forged chain does not help either.
    forged = envoy.get("/", xff("1.1.1.1, 2.2.2.2, 3.3.3.3, 198.51.100.10"))
    assert forged.status == 429, forged
    # A different real client has its own bucket.
    assert envoy.get("/", xff("203.0.113.1, 198.51.100.11")).status == 200
    # Without the header (no load balancer: fewer entries than trusted hops) the peer,
    # 127.0.0.1, counts.
    assert http.statuses(http.burst(envoy.port, 3)) == [200, 200, 429]


def test_three_trusted_hops_take_the_third_from_the_right(start_envoy):
    cfg = policy.config(
        policy.rule("per-ip", "fixed_window", 1, "1h", key=["client_ip"]),
        identity={"client_ip": {"xff_trusted_hops": 3}},
    )
    envoy = start_envoy(config.tollgate(cfg))
    first = envoy.get("/", xff("6.6.6.6, 192.0.2.7, 10.0.0.1"))
    assert first.status == 200, first
    # Same client behind another inner proxy, different forged part: same bucket.
    second = envoy.get("/", xff("7.7.7.7, 192.0.2.7, 10.0.0.2"))
    assert second.status == 429, second
    third = envoy.get("/", xff("6.6.6.6, 192.0.2.8, 10.0.0.1"))
    assert third.status == 200, third


def test_one_trusted_hop_is_envoys_own_entry(start_envoy):
    # Envoy at the edge: the client is the peer Envoy appended, whatever it wrote itself.
    cfg = policy.config(
        policy.rule("per-ip", "fixed_window", 2, "1h", key=["client_ip"]),
        identity={"client_ip": {"xff_trusted_hops": 1}},
    )
    envoy = start_envoy(config.tollgate(cfg))
    responses = [envoy.get("/", xff(f"198.51.100.{i}")) for i in range(1, 5)]
    assert http.statuses(responses) == [200, 200, 429, 429], [str(r) for r in responses]


def test_zero_trusted_hops_ignores_x_forwarded_for(start_envoy):
    cfg = policy.config(
        policy.rule("per-ip", "fixed_window", 2, "1h", key=["client_ip"]),
        identity={"client_ip": {"xff_trusted_hops": 0}},
    )
    envoy = start_envoy(config.tollgate(cfg))
    responses = [envoy.get("/", xff(f"198.51.100.{i}, 203.0.113.{i}")) for i in range(1, 5)]
    assert http.statuses(responses) == [200, 200, 429, 429], [str(r) for r in responses]


def test_header_values_that_are_not_utf8_neither_crash_nor_pick_a_tenant(start_envoy):
    """HTTP allows obs-text bytes in header values; the proxy-wasm SDK's String helpers would
    panic on them and kill the worker's VM. The filter reads them as absent instead."""
    import socket

    cfg = policy.config(
        policy.rule("per-tenant", "fixed_window", 2, "1h", key=["tenant"]),
        policy.rule("per-key", "fixed_window", 3, "1h", key=["header:x-client"]),
        tenants=policy.TENANTS,
    )
    envoy = start_envoy(config.tollgate(cfg))
    raw = (b"GET /api/x HTTP/1.1\r\nHost: t\r\nx-api-key: key-free-0001\xff\r\n"
           b"x-client: \xfe\xff\r\nConnection: close\r\n\r\n")
    for _ in range(4):
        with socket.create_connection(("127.0.0.1", envoy.port), timeout=10) as s:
            s.sendall(raw)
            reply = b""
            while chunk := s.recv(65536):
                reply += chunk
        # An unknown key and an unreadable x-client: neither rule applies, nothing is refused.
        assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
    # The VM is alive and still limiting: the tenant's own key is counted as before.
    burst = http.burst(envoy.port, 3, "/api/x", key("key-free-0001"))
    assert http.statuses(burst) == [200, 200, 429], [str(r) for r in burst]
    assert "panic" not in envoy.log(), envoy.log_tail()
