"""A round-robin TCP proxy on a loopback port: what a Kubernetes Service is to the pods
behind it, for the replica tests.

Each accepted connection goes to the next backend in turn, and its bytes are copied both
ways until either side closes; HTTP is not parsed, so a client that wants one request per
backend in turn sends ``Connection: close`` (Sentry opens a connection per delivery). A
backend that refuses the connection (a killed pod) is skipped and the next one tried, as a
Service stops routing to a pod that is gone; only when every backend refuses is the client's
connection closed unanswered, which the client sees as a failed delivery and retries, as
Sentry would. A backend that dies with a request in flight cuts that connection: the request
fails on the client's side, like any connection to a dying pod.

It runs its own event loop in a thread of the test process, so synchronous and asynchronous
tests can use it alike, and the code under test sees real sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from urllib.parse import urlsplit


class RoundRobin:
    """``with RoundRobin([a.url, b.url]).running() as proxy: procs.post(proxy.url + ...)``."""

    def __init__(self, backends: Sequence[str]) -> None:
        self.backends = [_address(url) for url in backends]
        self.routed: Counter[str] = Counter()  # connections handed to each backend, by URL
        self.refused: Counter[str] = Counter()  # connections a backend refused, by URL
        self.unrouted = 0  # connections no backend took
        self._turn = itertools.count()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._stop: asyncio.Event | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rr-proxy", daemon=True)
        self._lock = threading.Lock()  # the counters are read from the test's thread

    @property
    def url(self) -> str:
        assert self._server is not None, "not running"
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    def counts(self) -> tuple[dict[str, int], dict[str, int], int]:
        """A consistent copy of (routed, refused, unrouted)."""
        with self._lock:
            return dict(self.routed), dict(self.refused), self.unrouted

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, backlog=1024)
        self._ready.set()
        await self._stop.wait()
        self._server.close()
        # Connections still open when the test is over are cut, and closed properly.
        open_connections = list(self._connections)
        for task in open_connections:
            task.cancel()
        await asyncio.gather(*open_connections, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)
        try:
            upstream = await self._connect()
            if upstream is None:
                with self._lock:
                    self.unrouted += 1
                return
            up_reader, up_writer = upstream
            try:
                await asyncio.gather(_copy(reader, up_writer), _copy(up_reader, writer))
            finally:
                up_writer.close()
        finally:
            writer.close()

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        first = next(self._turn)
        for step in range(len(self.backends)):
            host, port, url = self.backends[(first + step) % len(self.backends)]
            try:
                connection = await asyncio.open_connection(host, port)
            except OSError:  # ECONNREFUSED from a dead backend: route around it
                with self._lock:
                    self.refused[url] += 1
                continue
            with self._lock:
                self.routed[url] += 1
            return connection
        return None

    @contextlib.contextmanager
    def running(self) -> Iterator[RoundRobin]:
        self._thread.start()
        if not self._ready.wait(timeout=10):
            raise RuntimeError("the proxy did not start")
        try:
            yield self
        finally:
            assert self._stop is not None
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout=10)
            self._loop.close()


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Bytes from ``reader`` to ``writer`` until EOF, then a half-close, so the other
    direction can still finish (HTTP/1.1: the response after the request's last byte)."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:  # a reset on either side (a killed backend): the connection is over
        writer.close()


def _address(url: str) -> tuple[str, int, str]:
    parts = urlsplit(url)
    host, port = parts.hostname, parts.port
    assert host is not None, url
    assert port is not None, url
    return host, port, url
