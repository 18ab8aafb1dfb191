"""A fake of Sentry's issue API: a real HTTP server on 127.0.0.1, port from the OS.

It runs in a background thread, so sync tests, async tests and a bridge under
Uvicorn in another process can all talk to it, and a delayed answer never
blocks the test's own event loop::

    with FakeSentryAPI(token="t0ken") as api:
        api.issue("42", users=12, events=340)          # both issue URL forms
        api.reply("/api/0/issues/7/", status=500)       # any path, any answer
        api.issue("9", users=1, events=1, delay=5.0)    # held up to 5 s (or until stop)
        ...  # point the bridge at api.url
        assert api.requests[0].authorization == "Bearer t0ken"

Answers follow Sentry's ``GET /api/0/issues/{id}/`` ("Retrieve an Issue"):
``userCount`` is a number and ``count`` a string, as Sentry's issue serializer
sends them. Unknown paths answer 404 ``{"detail": ...}`` like Sentry; with
``token`` set, a request without ``Authorization: Bearer <token>`` gets 401.

For the reconciler (bridge/reconcile.py), issue status, as Sentry keeps it::

    api.status("42", "unresolved")                      # both issue URLs and the list
    api.status("42", "unresolved", substatus="escalating")
    api.fail(Reply(429, {"detail": "..."}, headers={"Retry-After": "2"}), times=3)

``GET /api/0/organizations/{org}/issues/?group=1&group=2`` is "List an Organization's
Issues" (``OrganizationGroupIndexEndpoint.get`` in getsentry/sentry's
src/sentry/issues/endpoints/organization_group_index.py): with ``group`` ids it skips the
search and answers a JSON list of those groups, whatever their status, leaving out the ones
it does not have; a ``group`` that is not an integer is a 400. Each issue carries the
serializer's ``status`` and ``substatus`` (src/sentry/api/serializers/models/group.py).
``fail`` answers the next requests, whatever their path, with a canned failure (Sentry's
rate limiter answers 429 with ``Retry-After`` in seconds).
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections import deque
from collections.abc import Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from tests import fake_http


@dataclasses.dataclass(frozen=True)
class Reply:
    """One canned answer. ``body`` is sent as JSON unless it is ``bytes``
    (sent as is, e.g. broken JSON); ``delay`` holds the answer that many
    seconds, cut short when the server stops."""

    status: int = 200
    body: Any = None
    delay: float = 0.0
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Seen:
    """One request the server received."""

    method: str
    path: str  # with the query string, as sent
    headers: Mapping[str, str]  # names lower-cased
    at: float = 0.0  # time.monotonic() when it arrived
    status: int = 0  # what it was answered

    @property
    def authorization(self) -> str | None:
        return self.headers.get("authorization")


NOT_FOUND = Reply(404, {"detail": "The requested resource does not exist"})
UNAUTHORIZED = Reply(401, {"detail": "Invalid token"})


def issue_body(issue_id: str, *, users: int | None, events: int | str | None) -> dict[str, Any]:
    """The fields of Sentry's issue details answer that matter here, plus a
    few around them so a parser that reads too much would notice. ``None``
    leaves a count out (as Sentry does when stats are collapsed)."""
    body: dict[str, Any] = {
        "id": issue_id,
        "shortId": f"BACKEND-{issue_id}",
        "title": "ZeroDivisionError: division by zero",
        "culprit": "app.views in index",
        "level": "error",
        "status": "unresolved",
        "project": {"id": "2", "name": "backend", "slug": "backend", "platform": "python"},
        "firstSeen": "2024-05-01T10:00:00.000000Z",
        "lastSeen": "2024-05-01T12:00:00.000000Z",
        "numComments": 0,
        "userReportCount": 0,
        "stats": {"24h": [[1714557600, 3]]},
    }
    if users is not None:
        body["userCount"] = users
    if events is not None:
        body["count"] = str(events) if isinstance(events, int) else events
    return body


class FakeSentryAPI:
    """Start with ``with FakeSentryAPI() as api:`` (or ``start()`` / ``stop()``)."""

    def __init__(self, *, token: str | None = None, organization: str = "acme") -> None:
        self.token = token
        self.organization = organization
        self._replies: dict[str, Reply] = {}
        self._statuses: dict[str, tuple[str, str | None]] = {}
        self._failures: deque[Reply] = deque()
        self._seen: list[Seen] = []
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> Self:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        server.daemon_threads = True
        self._server = server
        # A short poll interval: stop() waits up to one interval for the loop to notice.
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.01}, name="fake-sentry-api"
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # releases delayed answers
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:40123`` (what ``sentry.base_url`` takes)."""
        if self._server is None:
            raise RuntimeError("the fake Sentry API is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    # --- answers --------------------------------------------------------------------------

    def reply(
        self,
        path: str,
        *,
        status: int = 200,
        body: Any = None,
        delay: float = 0.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer ``GET path`` (matched without the query string) with this."""
        with self._changed:
            self._replies[path] = Reply(status, body, delay, dict(headers or {}))

    def issue(
        self,
        issue_id: str,
        *,
        users: int | None = None,
        events: int | str | None = None,
        status: int = 200,
        body: Any = None,
        delay: float = 0.0,
    ) -> None:
        """Answer for one issue on both of Sentry's issue URLs (``/api/0/issues/{id}/``
        and ``/api/0/organizations/{org}/issues/{id}/``). With ``body`` unset and
        status 200 the body is :func:`issue_body`; for another status, Sentry's
        ``{"detail": ...}``."""
        if body is None:
            body = (
                issue_body(issue_id, users=users, events=events)
                if status == 200
                else {"detail": HTTPStatus(status).phrase}
            )
        for path in (self.issue_path(issue_id), self.issue_path(issue_id, org=True)):
            self.reply(path, status=status, body=body, delay=delay)

    def status(self, issue_id: str, status: str, *, substatus: str | None = None) -> None:
        """Sentry now holds the issue in ``status`` (``resolved``, ``unresolved``,
        ``ignored``...): the issue's own URLs and the organization's list answer it."""
        with self._changed:
            self._statuses[issue_id] = (status, substatus)
            for path in (self.issue_path(issue_id), self.issue_path(issue_id, org=True)):
                self._replies.pop(path, None)

    def fail(self, reply: Reply, *, times: int = 1) -> None:
        """The next ``times`` requests, to any path, get ``reply``."""
        with self._changed:
            self._failures.extend([reply] * times)

    def list_path(self) -> str:
        return f"/api/0/organizations/{self.organization}/issues/"

    def index(self, scopes: list[str]) -> None:
        """Answer ``GET /api/0/`` as Sentry's ``IndexEndpoint`` does for a token
        (getsentry/sentry src/sentry/api/endpoints/index.py): ``{"version": "0", "auth":
        {"scopes": request.auth.get_scopes()}, "user": ...}``; ``sentry-bridge doctor``
        reads the token's scopes there."""
        self.reply("/api/0/", body={"version": "0", "auth": {"scopes": scopes}, "user": None})

    def issue_path(self, issue_id: str, *, org: bool = False) -> str:
        if org:
            return f"/api/0/organizations/{self.organization}/issues/{issue_id}/"
        return f"/api/0/issues/{issue_id}/"

    def issue_url(self, issue_id: str, *, org: bool = False) -> str:
        """The absolute issue URL, as an event alert's ``issue_url`` carries it."""
        return self.url + self.issue_path(issue_id, org=org)

    # --- what was seen --------------------------------------------------------------------

    @property
    def requests(self) -> list[Seen]:
        with self._changed:
            return list(self._seen)

    def requests_to(self, path: str) -> list[Seen]:
        return [seen for seen in self.requests if seen.path.split("?", 1)[0] == path]

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> bool:
        """Block until at least ``count`` requests arrived; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: len(self._seen) >= count, timeout)

    def clear(self) -> None:
        with self._changed:
            self._seen.clear()

    # --- used by the handler thread -------------------------------------------------------

    def _answer(self, seen: Seen) -> Reply:
        with self._changed:
            reply = self._reply(seen)
            self._seen.append(dataclasses.replace(seen, status=reply.status))
            self._changed.notify_all()
            return reply

    def _reply(self, seen: Seen) -> Reply:
        """The answer to ``seen`` (called with the lock held)."""
        if seen.method != "GET":
            return Reply(405, {"detail": f'Method "{seen.method}" not allowed.'})
        if self.token is not None and seen.authorization != f"Bearer {self.token}":
            return UNAUTHORIZED
        if self._failures:
            return self._failures.popleft()
        path = seen.path.split("?", 1)[0]
        if path in self._replies:
            return self._replies[path]
        if path == self.list_path():
            return self._list(seen.path)
        for issue_id in self._statuses:
            if path in (self.issue_path(issue_id), self.issue_path(issue_id, org=True)):
                return Reply(200, self._issue(issue_id))
        return NOT_FOUND

    def _issue(self, issue_id: str) -> dict[str, Any]:
        status, substatus = self._statuses[issue_id]
        return {**issue_body(issue_id, users=1, events=1), "status": status, "substatus": substatus}

    def _list(self, path: str) -> Reply:
        groups = parse_qs(urlsplit(path).query).get("group", [])
        if not all(group.isdigit() for group in groups):
            return Reply(400, {"detail": "Group ids must be integers"})
        return Reply(200, [self._issue(g) for g in dict.fromkeys(groups) if g in self._statuses])

    def _hold(self, seconds: float) -> None:
        if seconds > 0:
            self._stopping.wait(seconds)


def _handler(api: FakeSentryAPI) -> type[BaseHTTPRequestHandler]:
    class Handler(fake_http.Handler):
        server_version = "FakeSentry/1"

        def _serve(self) -> None:
            headers = {name.lower(): value for name, value in self.headers.items()}
            reply = api._answer(Seen(self.command, self.path, headers, time.monotonic()))
            api._hold(reply.delay)
            if isinstance(reply.body, bytes):
                data, ctype = reply.body, "application/octet-stream"
            else:
                data, ctype = json.dumps(reply.body).encode(), "application/json"
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a timeout test); nothing to answer

        do_GET = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass  # tests read api.requests instead

    return Handler
