#!/usr/bin/env python3
"""A tiny JSON API to put behind Tollgate in the demo and the tests (standard library only).

    python3 examples/demo-api/server.py [PORT]      # or DEMO_API_PORT=8000; 0 picks a free port

    GET  /healthz                    {"status": "ok"}
    ANY  /api/<anything>             {"method": ..., "path": ..., "query": {...}, "received_bytes": N}
         ?status=NNN                 answer with that status instead of 200
         ?bytes=N                    pad the JSON body with N bytes ("padding")
    anything else                    404 {"error": "not_found"}

The first line on stdout is `demo-api listening on http://127.0.0.1:PORT`.
"""

from __future__ import annotations

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

MAX_PADDING = 10 * 1024 * 1024


class Server(ThreadingHTTPServer):
    # socketserver's default backlog is 5: a proxy opening a few hundred upstream connections at
    # once (a burst of admitted requests) would see most of them dropped and retried for seconds.
    request_queue_size = 1024


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "tollgate-demo-api/1"

    def handle_any(self) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("content-length") or 0)
        received = len(self.rfile.read(length)) if length else 0
        if url.path == "/healthz":
            self.reply(200, {"status": "ok"})
        elif url.path.startswith("/api/"):
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            try:
                status = int(query.get("status", 200))
                padding = min(int(query.get("bytes", 0)), MAX_PADDING)
            except ValueError:
                self.reply(400, {"error": "bad_query", "message": "status and bytes must be integers"})
                return
            if not 200 <= status <= 599:
                self.reply(400, {"error": "bad_query", "message": "status must be 200..599"})
                return
            body = {"method": self.command, "path": url.path, "query": query, "received_bytes": received}
            if padding > 0:
                body["padding"] = "x" * padding
            self.reply(status, body)
        else:
            self.reply(404, {"error": "not_found", "message": f"no route for {url.path}"})

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = handle_any

    def do_HEAD(self) -> None:
        self.handle_any()

    def reply(self, status: int, body: dict) -> None:
        data = (json.dumps(body) + "\n").encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        if os.environ.get("DEMO_API_QUIET") != "1":
            super().log_message(format, *args)


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else int(os.environ.get("DEMO_API_PORT", "8000"))
    host = os.environ.get("DEMO_API_HOST", "127.0.0.1")
    server = Server((host, port), Handler)
    server.daemon_threads = True
    print(f"demo-api listening on http://{host}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
