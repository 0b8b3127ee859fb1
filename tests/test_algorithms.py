"""Each algorithm's admitted count for a burst, in the real Envoy: exactly what the rule allows."""

from __future__ import annotations

import time

import pytest

from harness import config, http, policy, until

# (algorithm, rule options, admitted out of a quick burst). Windows are long so nothing refills
# while the burst runs.
BURSTS = [
    ("fixed_window", {"limit": 5, "window": "1h"}, 5),
    ("sliding_window_log", {"limit": 5, "window": "1h"}, 5),
    ("sliding_window_counter", {"limit": 5, "window": "1h"}, 5),
    # Capacity = burst; refills 60 an hour = one a minute.
    ("token_bucket", {"limit": 60, "window": "1h", "burst": 4}, 4),
    # A strict output rate, one every 20 minutes, no queue: only the first of a burst passes.
    ("leaky_bucket", {"limit": 3, "window": "1h"}, 1),
]


@pytest.mark.parametrize(("algorithm", "options", "admitted"), BURSTS, ids=[b[0] for b in BURSTS])
def test_burst_admits_exactly_the_limit(start_envoy, algorithm: str, options: dict, admitted: int):
    options = dict(options)
    envoy = start_envoy(config.tollgate(policy.config(policy.rule("r", algorithm, options.pop("limit"), **options))))
    responses = http.burst(envoy.port, admitted + 5, "/api/items")
    assert http.statuses(responses) == [200] * admitted + [429] * 5, [str(r) for r in responses]
    for resp in responses[admitted:]:
        assert int(resp.header("retry-after") or -1) >= 1, resp
        assert resp.json()["rule"] == "r", resp


def test_fixed_window_remaining_counts_down(start_envoy):
    envoy = start_envoy(config.tollgate(policy.config(policy.rule("r", "fixed_window", 4, "1h"))))
    responses = http.burst(envoy.port, 6)
    assert http.statuses(responses) == [200] * 4 + [429] * 2
    assert [r.header("ratelimit-remaining") for r in responses] == ["3", "2", "1", "0", "0", "0"]
    assert {r.header("ratelimit-limit") for r in responses} == {"4"}


@pytest.mark.parametrize(
    ("algorithm", "options"),
    [
        # Refill 1 token a second.
        ("token_bucket", {"limit": 2, "window": "2s"}),
        # The oldest admitted request leaves the log after 1 s.
        ("sliding_window_log", {"limit": 2, "window": "1s"}),
    ],
    ids=["token_bucket", "sliding_window_log"],
)
def test_capacity_comes_back_with_time(start_envoy, algorithm: str, options: dict):
    options = dict(options)
    envoy = start_envoy(config.tollgate(policy.config(policy.rule("r", algorithm, options.pop("limit"), **options))))
    with envoy.client() as client:
        first = [client.get("/") for _ in range(3)]
        assert http.statuses(first) == [200, 200, 429], [str(r) for r in first]
        assert first[2].header("retry-after") == "1", first[2]
        spent_at = first[1].done_at
        seen: list[int] = []

        def probe() -> int:
            resp = client.get("/")
            assert resp.status in (200, 429), resp
            seen.append(resp.status)
            return resp.status

        until(probe, lambda s: s == 200, 5.0, f"{algorithm} to admit again", interval=0.05)
        waited = time.monotonic() - spent_at
    # Nothing came back early, and it came back within the window (plus scheduling slack).
    assert 0.5 <= waited <= 2.5, (waited, seen)
    assert seen[:-1] and set(seen[:-1]) == {429}, seen
