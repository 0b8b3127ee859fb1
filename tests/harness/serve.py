"""The stand-ins' HTTP servers (Stripe, webhook sinks, the tests' fake sidecar and registry
feed): the standard library's threaded server, with a backlog that holds a burst."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog is 5: a sidecar opening a few dozen connections at once
    # (billing's concurrent Stripe calls) had handshakes dropped and retried for seconds, and
    # its calls timed out.
    request_queue_size = 1024


def serve_in_thread(address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> tuple[Server, threading.Thread]:
    """A server bound to `address` (port 0: a free one), already serving: (server, thread)."""
    server = Server(address, handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread
