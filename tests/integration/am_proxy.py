"""A fault-injecting HTTP proxy in front of Alertmanager, on a loopback port.

It forwards every request to the upstream Alertmanager, except while told to
fail: then it answers the given status itself, without forwarding, for a
number of requests or until told to stop. It runs in a thread of the test
process, so the code under test sees a real socket and real HTTP.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

from tests import fake_http
from tests.integration import procs


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.requests = 0
        self.failed = 0
        self._lock = threading.Lock()
        self._fail_status: int | None = None
        self._fail_left: int | None = None
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._client = procs.client(timeout=10)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def fail(self, status: int, times: int | None = None) -> None:
        """Answer ``status`` to the next ``times`` requests (all, if None)."""
        with self._lock:
            self._fail_status, self._fail_left = status, times

    def heal(self) -> None:
        with self._lock:
            self._fail_status = self._fail_left = None

    def _should_fail(self) -> int | None:
        with self._lock:
            self.requests += 1
            status = self._fail_status
            if status is None:
                return None
            if self._fail_left is not None:
                self._fail_left -= 1
                if self._fail_left <= 0:
                    self._fail_status = self._fail_left = None
            self.failed += 1
            return status

    def _forward(
        self, method: str, path: str, body: bytes, content_type: str | None
    ) -> httpx.Response:
        headers = {"Content-Type": content_type} if content_type else {}
        return self._client.request(method, self.upstream + path, content=body, headers=headers)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(fake_http.Handler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                status = proxy._should_fail()
                if status is not None:
                    payload, content_type = b'"injected failure"', "application/json"
                else:
                    try:
                        response = proxy._forward(
                            self.command, self.path, body, self.headers.get("Content-Type")
                        )
                    except httpx.HTTPError:
                        status, payload, content_type = 502, b'"upstream down"', "application/json"
                    else:
                        status, payload = response.status_code, response.content
                        content_type = response.headers.get("Content-Type", "application/json")
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _serve

            def log_message(self, format: str, *args: object) -> None:
                pass  # keep pytest output clean

        return Handler

    @contextlib.contextmanager
    def running(self) -> Iterator[FaultProxy]:
        thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._server.shutdown()
            self._server.server_close()
            thread.join(timeout=5)
            self._client.close()
