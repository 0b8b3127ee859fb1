"""Builders for Tollgate filter configs (see the README's configuration reference), so tests state only what matters."""

from __future__ import annotations

import copy
import json
from typing import Any

from .paths import shared_fixture

# Static tenants the tests use: two free tenants (isolation between equals) and a pro one.
TENANTS = {
    "key-free-0001": {"id": "t-free", "plan": "free"},
    "key-free-0002": {"id": "t-free-2", "plan": "free"},
    "key-pro-0001": {"id": "t-pro", "plan": "pro"},
}


def rule(name: str, algorithm: str, limit: Any, window: str, key: list[str] | None = None, **extra: Any) -> dict:
    """One rule; `extra` takes match, burst, queue, cost, scope, shadow. Scope defaults to local."""
    return {
        "name": name,
        "key": key or ["client_ip"],
        "algorithm": algorithm,
        "limit": limit,
        "window": window,
        "scope": extra.pop("scope", "local"),
        **extra,
    }


def config(*rules: dict, **top: Any) -> dict:
    """A filter config with the given rules; `top` sets headers, tenants, identity, plans, ..."""
    cfg: dict[str, Any] = {"rules": list(rules)}
    cfg.update(top)
    return cfg


def shared() -> dict:
    """The shared fixture every build must accept (a fresh copy)."""
    return copy.deepcopy(json.loads(shared_fixture().read_text()))
