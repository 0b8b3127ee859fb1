"""End-to-end harness: the pinned Envoy with the built filter on free loopback ports.

    env = envoy(config.tollgate(policy.config(policy.rule("r", "fixed_window", 3, "1h"))))
    resp = env.get("/")            # Response(status, headers, body)
    env.wait_tollgate_counter("r", "allowed", 1)
"""

from . import config, http, jwt, paths, policy
from .demo_api import DemoApi
from .envoy import Envoy, EnvoyFailed
from .wait import Timeout, until

__all__ = ["DemoApi", "Envoy", "EnvoyFailed", "Timeout", "config", "http", "jwt", "paths", "policy", "until"]
