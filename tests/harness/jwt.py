"""HS256 JSON Web Tokens signed with the standard library, for Envoy's jwt_authn."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

from .config import b64url


def sign(claims: dict, secret: bytes, kid: str = "k1") -> str:
    header = {"alg": "HS256", "typ": "JWT", "kid": kid}
    now = int(time.time())
    payload = {"iat": now, "exp": now + 3600, **claims}
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"
