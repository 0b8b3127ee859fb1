"""RateLimit headers in every style, on allowed and refused responses alike.

The structured-field styles (draft-7, draft-8, ietf) are parsed with http-sf, a real RFC 9651
parser, so a value that only looks right fails here.
"""

from __future__ import annotations

import time

import http_sf
import pytest

from harness import config, http, policy

LIMIT, WINDOW = 3, 3600


def start(start_envoy, style: str, *rules: dict):
    rules = rules or (policy.rule("api", "fixed_window", LIMIT, "1h"),)
    return start_envoy(config.tollgate(policy.config(*rules, headers=style)))


def burst(envoy) -> list[http.Response]:
    responses = http.burst(envoy.port, LIMIT + 1)
    assert http.statuses(responses) == [200] * LIMIT + [429], [str(r) for r in responses]
    return responses


def sf(resp: http.Response, name: str, kind: str):
    value = resp.header(name)
    assert value is not None, f"no {name}: {resp}"
    return http_sf.parse(value.encode(), tltype=kind)


def reset_ok(seconds: object) -> bool:
    return isinstance(seconds, int) and 0 < seconds <= WINDOW


def test_draft_6(start_envoy):
    for i, resp in enumerate(burst(start(start_envoy, "draft-6"))):
        assert sf(resp, "ratelimit-limit", "item") == (LIMIT, {}), resp
        assert sf(resp, "ratelimit-remaining", "item") == (max(LIMIT - 1 - i, 0), {}), resp
        reset, _ = sf(resp, "ratelimit-reset", "item")
        assert reset_ok(reset), resp
        assert sf(resp, "ratelimit-policy", "list") == [(LIMIT, {"w": WINDOW})], resp


def test_draft_6_is_the_default(start_envoy):
    envoy = start_envoy(config.tollgate(policy.config(policy.rule("api", "fixed_window", LIMIT, "1h"))))
    resp = envoy.get("/")
    assert resp.status == 200
    assert resp.header("ratelimit-limit") == str(LIMIT) and resp.header("ratelimit-policy"), resp


def test_draft_7(start_envoy):
    for i, resp in enumerate(burst(start(start_envoy, "draft-7"))):
        value = sf(resp, "ratelimit", "dictionary")
        assert set(value) == {"limit", "remaining", "reset"}, resp
        assert value["limit"] == (LIMIT, {}) and value["remaining"] == (max(LIMIT - 1 - i, 0), {}), resp
        assert reset_ok(value["reset"][0]), resp
        assert sf(resp, "ratelimit-policy", "list") == [(LIMIT, {"w": WINDOW})], resp
        assert resp.header("ratelimit-limit") is None, resp


@pytest.mark.parametrize("style", ["draft-8", "ietf"])
def test_list_styles(start_envoy, style: str):
    for i, resp in enumerate(burst(start(start_envoy, style))):
        [(name, params)] = sf(resp, "ratelimit-policy", "list")
        assert str(name) == "api", resp
        assert params["q"] == LIMIT and params["w"] == WINDOW, resp
        [(name, live)] = sf(resp, "ratelimit", "list")
        assert str(name) == "api", resp
        assert live["r"] == max(LIMIT - 1 - i, 0) and reset_ok(live["t"]), resp
        if style == "ietf":
            # draft-10: quota unit (a String, "requests") and partition key (a Byte Sequence).
            assert params["qu"] == "requests", resp
            assert isinstance(params["pk"], bytes) and isinstance(live["pk"], bytes), resp
            assert params["pk"] == live["pk"], resp
        else:
            assert "qu" not in params and "pk" not in live, resp


def test_ietf_partition_keys_differ_per_bucket(start_envoy):
    envoy = start(start_envoy, "ietf")
    a = envoy.get("/", {"x-forwarded-for": "198.51.100.1"})
    b = envoy.get("/", {"x-forwarded-for": "198.51.100.2"})
    assert a.status == b.status == 200
    # xff_trusted_hops defaults to 0, so both count against the peer, 127.0.0.1 ...
    assert sf(a, "ratelimit", "list")[0][1]["pk"] == sf(b, "ratelimit", "list")[0][1]["pk"]
    cfg = policy.config(policy.rule("api", "fixed_window", LIMIT, "1h"), headers="ietf",
                        identity={"client_ip": {"xff_trusted_hops": 2}})  # fmt: skip
    envoy = start_envoy(config.tollgate(cfg))
    a = envoy.get("/", {"x-forwarded-for": "198.51.100.1"})
    b = envoy.get("/", {"x-forwarded-for": "198.51.100.2"})
    assert a.status == b.status == 200
    # ... and trusting the proxy in front of Envoy (Envoy itself appends the second hop),
    # they are two partitions.
    assert sf(a, "ratelimit", "list")[0][1]["pk"] != sf(b, "ratelimit", "list")[0][1]["pk"]


def test_legacy(start_envoy):
    for i, resp in enumerate(burst(start(start_envoy, "legacy"))):
        now = time.time()
        assert resp.header("x-ratelimit-limit") == str(LIMIT), resp
        assert resp.header("x-ratelimit-remaining") == str(max(LIMIT - 1 - i, 0)), resp
        # A Unix timestamp, not delta seconds.
        assert now - 2 <= int(resp.header("x-ratelimit-reset") or 0) <= now + WINDOW + 2, resp
        assert not [h for h in resp.headers if h.startswith("ratelimit")], resp


def test_none(start_envoy):
    responses = burst(start(start_envoy, "none"))
    for resp in responses:
        assert not [h for h in resp.headers if h.startswith(("ratelimit", "x-ratelimit"))], resp
    # A refusal still says when to come back.
    assert int(responses[-1].header("retry-after") or 0) >= 1, responses[-1]


def two_rules() -> tuple[dict, dict]:
    return (
        policy.rule("wide", "fixed_window", 10, "1h"),
        policy.rule("narrow", "fixed_window", 2, "1m"),
    )


def test_single_value_styles_describe_the_most_restrictive_rule(start_envoy):
    envoy = start(start_envoy, "draft-6", *two_rules())
    resp = envoy.get("/")
    assert resp.status == 200
    assert (resp.header("ratelimit-limit"), resp.header("ratelimit-remaining")) == ("2", "1"), resp
    assert sf(resp, "ratelimit-policy", "list") == [(2, {"w": 60})], resp


def test_list_styles_name_every_rule(start_envoy):
    envoy = start(start_envoy, "draft-8", *two_rules())
    resp = envoy.get("/")
    assert resp.status == 200
    policies = {str(name): params for name, params in sf(resp, "ratelimit-policy", "list")}
    assert policies == {"wide": {"q": 10, "w": 3600}, "narrow": {"q": 2, "w": 60}}, resp
    live = {str(name): params["r"] for name, params in sf(resp, "ratelimit", "list")}
    assert live == {"wide": 9, "narrow": 1}, resp
