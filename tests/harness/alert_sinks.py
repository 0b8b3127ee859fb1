"""Stand-ins for what alerts reach but tests cannot: a customer's webhook receiver and an SMTP server.

`WebhookReceiver` is a real HTTP server on a free loopback port that records every request
(headers, raw body, time) and answers from a script (`script(500, "timeout", 200)`; then 204 by
default): it checks nothing itself, the tests verify the Standard Webhooks signature of each
recorded request with the `standardwebhooks` package. `SmtpSink` is aiosmtpd's SMTP server
(a real SMTP implementation) keeping each message it accepts.
"""

from __future__ import annotations

import email
import email.policy
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler

from aiosmtpd.controller import Controller

from .serve import serve_in_thread
from .sidecar import free_port


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    answered: int | str


@dataclass
class WebhookReceiver:
    timeout_s: float = 5.0
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._script: deque[int | str] = deque()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with receiver._lock:
                    action = receiver._script.popleft() if receiver._script else 204
                    receiver.received.append(Received(self.path, {k.lower(): v for k, v in self.headers.items()},
                                                      body, time.time(), action))
                if action == "timeout":
                    time.sleep(receiver.timeout_s)
                    return
                self.send_response(int(action))
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_args) -> None:
                pass

        self.server, self.thread = serve_in_thread(("127.0.0.1", free_port()), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def script(self, *actions: int | str) -> None:
        """The answers to the next requests, in order: a status, or "timeout" (no answer)."""
        with self._lock:
            self._script.extend(actions)

    def requests(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Keep:
    def __init__(self, refuse: set[str]) -> None:
        self.messages: list[tuple[str, list[str], EmailMessage]] = []
        self.refuse = refuse
        self.lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options) -> str:  # noqa: N802
        if address in self.refuse:
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 (aiosmtpd's name)
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 Message accepted for delivery"


class SmtpSink:
    """aiosmtpd on a free loopback port (no TLS, no login): `url` for TOLLGATE_SMTP_URL. Mail to
    an address of `refuse` is refused for good (`550`), as a server does for an unknown user."""

    def __init__(self, refuse: set[str] | None = None) -> None:
        self._keep = _Keep(refuse or set())
        self.port = free_port()
        self.controller = Controller(self._keep, hostname="127.0.0.1", port=self.port)
        self.controller.start()

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}"

    def messages(self) -> list[tuple[str, list[str], EmailMessage]]:
        with self._keep.lock:
            return list(self._keep.messages)

    def stop(self) -> None:
        self.controller.stop()
