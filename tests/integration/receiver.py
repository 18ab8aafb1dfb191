"""Alertmanager's side of a page, for the tests: a webhook receiver on loopback that records
every notification Alertmanager's ``webhook_configs`` post to it (the body Alertmanager
sends any webhook: its receiver, group key and labels, and the alerts of the group).

``with recording() as receiver:`` serves on a free port; point a receiver's
``webhook_configs`` at ``receiver.url``, then wait on what arrived
(``receiver.wait_for``) or on nothing more arriving (``receiver.wait_quiet``).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests import fake_http


@dataclass(frozen=True)
class Notification:
    """One notification: what a pager or a chat channel would have shown once."""

    receiver: str
    group_key: str
    group_labels: dict[str, str]
    status: str
    alerts: list[dict[str, Any]]
    at: float  # time.monotonic() when it arrived

    def labels(self, name: str) -> set[str]:
        """The values of label ``name`` across the notification's alerts."""
        return {a["labels"][name] for a in self.alerts if name in a["labels"]}


class Receiver:
    def __init__(self) -> None:
        self.url = ""  # set once the server has its port
        self._seen: list[Notification] = []
        self._changed = threading.Condition()

    def record(self, body: dict[str, Any]) -> None:
        notification = Notification(
            receiver=body["receiver"],
            group_key=body["groupKey"],
            group_labels=dict(body["groupLabels"]),
            status=body["status"],
            alerts=list(body["alerts"]),
            at=time.monotonic(),
        )
        with self._changed:
            self._seen.append(notification)
            self._changed.notify_all()

    def notifications(self) -> list[Notification]:
        with self._changed:
            return list(self._seen)

    def wait_for(
        self, predicate: Callable[[list[Notification]], bool], timeout: float
    ) -> list[Notification]:
        """Every notification so far, once ``predicate`` holds for them; fails after
        ``timeout`` seconds saying what did arrive."""
        with self._changed:
            if not self._changed.wait_for(lambda: predicate(self._seen), timeout=timeout):
                got = [(n.receiver, n.group_labels, len(n.alerts)) for n in self._seen]
                raise AssertionError(f"notifications never reached the expected state: {got}")
            return list(self._seen)

    def wait_quiet(self, seconds: float) -> list[Notification]:
        """Every notification, once none has arrived for ``seconds``: the way to show that
        nothing more comes (an absence has no event to wait on)."""
        start = time.monotonic()
        with self._changed:
            while True:
                last = self._seen[-1].at if self._seen else start
                remaining = last + seconds - time.monotonic()
                if remaining <= 0:
                    return list(self._seen)
                self._changed.wait(timeout=remaining)


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(fake_http.Handler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            receiver.record(json.loads(self.rfile.read(length)))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass  # Alertmanager posts often; the test reads the record, not a log

    return Handler


@contextlib.contextmanager
def recording() -> Iterator[Receiver]:
    """A receiver serving on ``127.0.0.1`` (a free port) until the block ends."""
    receiver = Receiver()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(receiver))
    receiver.url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
