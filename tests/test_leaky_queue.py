"""Leaky bucket with a queue: over-rate requests wait and leave at the rule's spacing."""

from __future__ import annotations

import statistics
import threading

from harness import config, http, policy


def parallel(port: int, n: int, path: str = "/") -> list[http.Response]:
    """`n` requests sent at once, each on its own connection."""
    barrier = threading.Barrier(n)
    results: list[http.Response | BaseException] = [RuntimeError("not run")] * n

    def one(i: int) -> None:
        try:
            client = http.Client(port, timeout=30)
            barrier.wait(timeout=10)
            results[i] = client.get(path)
            client.close()
        except BaseException as e:  # reported below
            results[i] = e

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors
    return results  # type: ignore[return-value]


def test_queued_requests_leave_at_the_rules_spacing(start_envoy):
    # 5 a second = one every 200 ms; up to 10 may wait.
    rule = policy.rule("drip", "leaky_bucket", 5, "1s", queue=10)
    envoy = start_envoy(config.tollgate(policy.config(rule)))
    n = 8
    responses = parallel(envoy.port, n)
    assert http.statuses(responses) == [200] * n, [str(r) for r in responses]
    done = sorted(r.done_at for r in responses)
    gaps = [b - a for a, b in zip(done, done[1:])]
    span = done[-1] - done[0]
    report = f"gaps (ms): {[round(g * 1000) for g in gaps]}, span {span * 1000:.0f} ms"
    print(report)
    # 7 releases 200 ms apart: 1.4 s. Allow for a busy 2-core machine.
    assert 1.4 * 0.75 <= span <= 1.4 * 1.6, report
    assert 0.15 <= statistics.median(gaps) <= 0.30, report
    assert min(gaps) >= 0.08, report
    assert envoy.wait_tollgate_counter("drip", "queued", n - 1) == n - 1


def test_queue_overflow_is_refused_at_once(start_envoy):
    # One a second; 2 may wait: of 6 at once, 1 passes, 2 wait (1 s, 2 s), 3 are refused now.
    rule = policy.rule("drip", "leaky_bucket", 2, "2s", queue=2)
    envoy = start_envoy(config.tollgate(policy.config(rule)))
    responses = parallel(envoy.port, 6)
    assert sorted(http.statuses(responses)) == [200] * 3 + [429] * 3, [str(r) for r in responses]
    start = min(r.sent_at for r in responses)
    refused = [r for r in responses if r.status == 429]
    admitted = sorted(r.done_at - start for r in responses if r.status == 200)
    assert all(r.done_at - start < 0.5 for r in refused), [r.done_at - start for r in refused]
    assert admitted[0] < 0.5, admitted
    assert 0.7 <= admitted[1] <= 1.6 and 1.6 <= admitted[2] <= 3.0, admitted
    for r in refused:
        assert r.json()["rule"] == "drip" and int(r.header("retry-after") or 0) >= 1, r


def test_without_a_queue_over_rate_is_refused(start_envoy):
    rule = policy.rule("drip", "leaky_bucket", 5, "1s")
    envoy = start_envoy(config.tollgate(policy.config(rule)))
    responses = parallel(envoy.port, 4)
    assert sorted(http.statuses(responses)) == [200] + [429] * 3, [str(r) for r in responses]
