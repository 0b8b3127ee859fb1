"""A tiny HTTP/1.1 client over the standard library: one request per connection, or keep-alive."""

from __future__ import annotations

import http.client
import json
import time
from dataclasses import dataclass, field
from typing import Any, Mapping


@dataclass
class Response:
    status: int
    # Lower-case names; a repeated field is joined with ", " (RFC 9110 §5.3).
    headers: dict[str, str]
    body: bytes
    sent_at: float = 0.0
    done_at: float = 0.0
    raw_headers: list[tuple[str, str]] = field(default_factory=list)

    def __iter__(self):
        """Unpacks as `status, headers, body = response`."""
        return iter((self.status, self.headers, self.body))

    def json(self) -> Any:
        return json.loads(self.body)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def ratelimit_headers(self) -> dict[str, str]:
        """Every RateLimit-ish field: ratelimit*, x-ratelimit*, retry-after."""
        return {
            k: v for k, v in self.headers.items() if k.startswith(("ratelimit", "x-ratelimit")) or k == "retry-after"
        }

    def __str__(self) -> str:
        return f"{self.status} {self.headers} {self.body[:300]!r}"


def _collect(resp: http.client.HTTPResponse, sent_at: float) -> Response:
    body = resp.read()
    raw = [(k.lower(), v) for k, v in resp.getheaders()]
    headers: dict[str, str] = {}
    for k, v in raw:
        headers[k] = f"{headers[k]}, {v}" if k in headers else v
    return Response(resp.status, headers, body, sent_at, time.monotonic(), raw)


class Client:
    """One keep-alive connection (http.client reconnects by itself if the server closed it)."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout: float = 15.0):
        self.conn = http.client.HTTPConnection(host, port, timeout=timeout)

    def request(
        self, method: str, path: str, headers: Mapping[str, str] | None = None, body: bytes | None = None
    ) -> Response:
        sent_at = time.monotonic()
        self.conn.request(method, path, body=body, headers=dict(headers or {}))
        return _collect(self.conn.getresponse(), sent_at)

    def get(self, path: str, headers: Mapping[str, str] | None = None) -> Response:
        return self.request("GET", path, headers)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def request(
    port: int,
    method: str,
    path: str,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    timeout: float = 15.0,
) -> Response:
    """One request on a fresh connection, closed afterwards."""
    with Client(port, timeout=timeout) as client:
        return client.request(method, path, headers, body)


def get(port: int, path: str, headers: Mapping[str, str] | None = None, timeout: float = 15.0) -> Response:
    return request(port, "GET", path, headers, timeout=timeout)


def burst(port: int, n: int, path: str = "/", headers: Mapping[str, str] | None = None) -> list[Response]:
    """`n` requests one after another on one keep-alive connection."""
    with Client(port) as client:
        return [client.get(path, headers) for _ in range(n)]


def statuses(responses: list[Response]) -> list[int]:
    return [r.status for r in responses]


def json_call(url: str, method: str, path: str, body: Any = None, token: str | None = None,
              timeout: float = 5.0) -> tuple[int, Any]:
    """`method url+path` with a JSON `body` (None: no body) and `Authorization: Bearer token`
    (None: none); the status and the answer's JSON (None when empty), errors included."""
    import urllib.error
    import urllib.request

    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{url}{path}", data=data, method=method,
                                     headers={"content-type": "application/json"})
    if token is not None:
        request.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    return status, json.loads(raw) if raw else None
