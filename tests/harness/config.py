"""Envoy bootstrap configs for the tests, built as Python dicts and written as JSON.

Everything listens on 127.0.0.1 port 0; `EnvoyProcess` reads the ports Envoy actually bound,
so parallel tests never race for a port.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from .paths import FILTER_WASM, wasm as built

WASM_FILTER = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
JWT_AUTHN = "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
STRING_VALUE = "type.googleapis.com/google.protobuf.StringValue"

# The listener's stat prefix: per-worker stats read `listener.main.worker_N.*`.
LISTENER_STATS = "main"
DEMO_CLUSTER = "demo_api"
SIDECAR_CLUSTER = "tollgate_sidecar"


def socket(port: int = 0) -> dict:
    return {"socket_address": {"address": "127.0.0.1", "port_value": port}}


def direct(prefix: str = "/", status: int = 200, body: str = '{"ok":true}\n') -> dict:
    """A route that Envoy answers itself: no upstream in the way."""
    return {
        "match": {"prefix": prefix},
        "direct_response": {"status": status, "body": {"inline_string": body}},
    }


def to_cluster(prefix: str, cluster: str = DEMO_CLUSTER) -> dict:
    return {"match": {"prefix": prefix}, "route": {"cluster": cluster, "timeout": "15s"}}


def static_cluster(name: str, port: int) -> dict:
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": socket(port)}}]}],
        },
    }


def wasm_filter(configuration: dict | str | None, wasm: Path | str = FILTER_WASM, root_id: str = "tollgate") -> dict:
    """The Tollgate filter as the README loads it; `configuration` a dict (sent as JSON) or raw text."""
    config: dict[str, Any] = {
        "name": "tollgate",
        "root_id": root_id,
        "vm_config": {
            "vm_id": "tollgate",
            "runtime": "envoy.wasm.runtime.v8",
            "code": {"local": {"filename": str(built(Path(wasm)))}},
        },
    }
    if configuration is not None:
        text = configuration if isinstance(configuration, str) else json.dumps(configuration)
        config["configuration"] = {"@type": STRING_VALUE, "value": text}
    return {"name": "envoy.filters.http.wasm", "typed_config": {"@type": WASM_FILTER, "config": config}}


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def jwt_authn_filter(secret: bytes, issuer: str, kid: str = "k1") -> dict:
    """Envoy's jwt_authn verifying HS256 tokens with one `oct` key.

    `allow_missing_or_failed` lets every request through (forged ones too), so the test can
    check that Tollgate itself ignores tokens jwt_authn did not verify. Verified payloads land
    in dynamic metadata under `jwt_payload`.
    """
    jwks = {"keys": [{"kty": "oct", "alg": "HS256", "kid": kid, "k": b64url(secret)}]}
    return {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": JWT_AUTHN,
            "providers": {
                "tollgate": {
                    "issuer": issuer,
                    "local_jwks": {"inline_string": json.dumps(jwks)},
                    "payload_in_metadata": "jwt_payload",
                    "forward": True,
                }
            },
            "rules": [{"match": {"prefix": "/"}, "requires": {"allow_missing_or_failed": {}}}],
        },
    }


def bootstrap(
    *,
    http_filters: list[dict],
    routes: list[dict] | None = None,
    clusters: list[dict] | None = None,
    sidecar_port: int = 9,
    codec: str = "AUTO",
) -> dict:
    """A single-listener Envoy: HCM → `http_filters` → router → `routes` (default: direct 200).

    The HCM is configured as an edge proxy should be: `use_remote_address: true`, so the
    downstream address the filter reads is the real peer and Envoy appends it to
    X-Forwarded-For (one more trusted hop). With Envoy's default (`false`) the "downstream
    address" is taken from X-Forwarded-For itself, which a client writes.

    The `tollgate_sidecar` cluster always exists (configs name it) and points at a port with
    no server, like a sidecar that is down.
    """
    hcm = {
        "@type": HCM,
        "stat_prefix": "ingress",
        "codec_type": codec,
        "use_remote_address": True,
        "route_config": {
            "name": "local",
            "virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes or [direct()]}],
        },
        "http_filters": [*http_filters, {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}],
    }
    return {
        "admin": {"address": socket()},
        "static_resources": {
            "listeners": [
                {
                    "name": "main",
                    "stat_prefix": LISTENER_STATS,
                    "address": socket(),
                    "filter_chains": [
                        {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
                    ],
                }
            ],
            "clusters": [static_cluster(SIDECAR_CLUSTER, sidecar_port), *(clusters or [])],
        },
    }


def tollgate(
    filter_config: dict | str | None,
    *,
    routes: list[dict] | None = None,
    clusters: list[dict] | None = None,
    before: list[dict] | None = None,
    wasm: Path = FILTER_WASM,
    root_id: str = "tollgate",
    sidecar_port: int = 9,
) -> dict:
    """The usual test config: [`before` filters, e.g. jwt_authn] → Tollgate → router."""
    return bootstrap(
        http_filters=[*(before or []), wasm_filter(filter_config, wasm=wasm, root_id=root_id)],
        routes=routes,
        clusters=clusters,
        sidecar_port=sidecar_port,
    )
