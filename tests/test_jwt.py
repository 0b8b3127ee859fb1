"""JWT tenants: only a token Envoy's jwt_authn verified picks a tenant; a forged one never does."""

from __future__ import annotations

from harness import config, http, jwt, policy

SECRET = b"tollgate-test-secret-0123456789abcdef"
ISSUER = "https://issuer.tollgate.test"


def bearer(token: str) -> dict:
    return {"authorization": f"Bearer {token}"}


def start(start_envoy):
    cfg = policy.config(
        policy.rule("per-ip", "fixed_window", 100, "1h", key=["client_ip"]),
        policy.rule("per-tenant", "fixed_window", {"plan": {"free": 2, "pro": 4}, "default": 2}, "1h", key=["tenant"]),
        identity={"jwt": {"header": "authorization", "tenant_claim": "tenant", "plan_claim": "plan"}},
    )
    return start_envoy(config.tollgate(cfg, before=[config.jwt_authn_filter(SECRET, ISSUER)]))


def test_verified_token_picks_tenant_and_plan(start_envoy):
    envoy = start(start_envoy)
    free = jwt.sign({"iss": ISSUER, "sub": "u1", "tenant": "t-jwt-a", "plan": "free"}, SECRET)
    responses = http.burst(envoy.port, 3, "/api/x", bearer(free))
    assert http.statuses(responses) == [200, 200, 429], [str(r) for r in responses]
    assert responses[0].header("ratelimit-limit") == "2", responses[0]
    assert responses[2].json()["rule"] == "per-tenant", responses[2]
    # Another verified tenant, on the pro plan, has its own, larger quota.
    pro = jwt.sign({"iss": ISSUER, "sub": "u2", "tenant": "t-jwt-b", "plan": "pro"}, SECRET)
    responses = http.burst(envoy.port, 5, "/api/x", bearer(pro))
    assert http.statuses(responses) == [200] * 4 + [429], [str(r) for r in responses]


def test_forged_token_never_picks_a_tenant(start_envoy):
    envoy = start(start_envoy)
    genuine = jwt.sign({"iss": ISSUER, "tenant": "t-victim", "plan": "free"}, SECRET)
    assert http.statuses(http.burst(envoy.port, 3, "/", bearer(genuine))) == [200, 200, 429]
    # Signed with another key, claiming the exhausted tenant: jwt_authn lets it through
    # (allow_missing_or_failed) but verified nothing, so only the per-IP rule applies.
    forged = jwt.sign({"iss": ISSUER, "tenant": "t-victim", "plan": "free"}, b"not-the-secret-key-at-all-000000")
    responses = http.burst(envoy.port, 4, "/", bearer(forged))
    assert http.statuses(responses) == [200] * 4, [str(r) for r in responses]
    assert {r.header("ratelimit-limit") for r in responses} == {"100"}, [str(r) for r in responses]
    # Unsigned ("alg": "none") and garbage tokens: the same.
    header, payload, _ = forged.split(".")
    for token in (f"{header}.{payload}.", "not.a.jwt"):
        resp = envoy.get("/", bearer(token))
        assert resp.status == 200 and resp.header("ratelimit-limit") == "100", resp
    # The genuine tenant is still exhausted.
    assert envoy.get("/", bearer(genuine)).status == 429
