"""A loopback HTTP server that answers every GET with one status, for probing health checks."""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Iterator

from tests import fake_http


@contextlib.contextmanager
def serve_status(status: int) -> Iterator[int]:
    """A loopback HTTP server answering every GET with ``status``; yields its port."""

    class Handler(fake_http.Handler):
        def do_GET(self) -> None:
            body = b'{"status": "x"}'
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
