"""Polling instead of sleeping: wait until a condition holds, or fail saying what was last seen."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


class Timeout(AssertionError):
    pass


def until(probe: Callable[[], T], ok: Callable[[T], bool], timeout: float, what: str, interval: float = 0.05) -> T:
    """Call `probe` until `ok(value)`; return that value, or raise with the last one seen."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if ok(value):
            return value
        if time.monotonic() >= deadline:
            raise Timeout(f"timed out after {timeout:.0f}s waiting for {what}; last seen: {value!r}")
        time.sleep(interval)


def clear_of_window_edge(window_s: int, margin_s: float = 120.0) -> None:
    """Fixed windows are aligned to the epoch: if one ends within `margin_s`, wait until it has
    (at most `margin_s`), so that the counts of one test never straddle two windows. A wait for
    the clock itself, not for a state: the one sleep the harness allows."""
    left = window_s - time.time() % window_s
    if left < margin_s:
        time.sleep(left + 0.5)
