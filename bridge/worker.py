"""The backend in its own process: the HTTP edge answers Sentry, the worker does the rest.

One Python process runs one thing at a time. With the pipeline on the edge's event loop,
every classification, outbox transaction, Alertmanager request and re-send round delays
the next webhook's answer; in a storm the edge waits for the pipeline. ``serve`` therefore
starts the :class:`~bridge.backend.Backend` in a child process (``python -m bridge.worker``)
and talks to it over a socket pair:

    edge                                     worker
    ("accept", seq, alert,   ------------->  outbox.accept (group commit)
      digest)
    ("quarantine", seq,      ------------->  outbox.quarantine
      reason, detail, headers, body, digest)
                             <-------------  ("done", [(seq, result), ...]): True stored,
                                             False a duplicate body, or the error's text
    ("ping", seq)            ------------->
                             <-------------  ("pong", seq, whether the store is writable)
    ("ignored",)             ------------->  alerts{outcome="ignored"} += 1
    ("metrics", seq)         ------------->
                             <-------------  ("metrics", seq, text of its families)
    ("reload", seq, config)  ------------->  the pipeline takes the reloaded config
                             <-------------  ("reloaded", seq, error or None)
    ("status", seq, limit)   ------------->  what the outbox holds (bridge/status.py)
                             <-------------  ("status", seq, {...})
    ("requeue", seq)         ------------->  the dead letters queued again
                             <-------------  ("requeue", seq, {"requeued": n, ...})
    ("stop", grace)          ------------->  drain within grace, close the outbox
    ("hurry",)               ------------->  (during the drain) stop draining at once
                             <-------------  ("stopped",), then it exits

Frames are a 4-byte big-endian length, a codec byte and the message: ``marshal`` for
plain values (alerts travel as ``SentryAlert.to_tuple()``), ``pickle`` for anything
else. Both are only safe between trusted ends: both ends are this program, on a socket
pair nobody else holds. The first frame to the worker is the validated ``Config``
(secrets included, never on a command line or in the environment of ``ps``).

The 202 still means durable: the edge answers once the worker's group commit holds the
alert. If the worker dies, the edge stops being healthy and ready, answers 503 and exits
non-zero so the supervisor restarts both; what was accepted is in the outbox file. The
worker is dead to the edge however it goes: end-of-file, a reset or broken socket, or no
answer to the edge's ping within ``server.worker_timeout`` (stuck, or SIGSTOPped: then
the edge kills it, so it lets go of the outbox file). If the
edge dies (even SIGKILL), the worker reads end-of-file, closes the outbox and exits, so a
restarted bridge can open it. The worker ignores SIGINT, SIGTERM and SIGHUP: the edge
decides when it stops (after the in-flight webhooks are answered) and reloads.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
import marshal
import os
import pickle
import signal
import socket
import struct
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry

from bridge import logs
from bridge.config import Config
from bridge.errors import OutboxFull, WorkerFailed
from bridge.metrics import Metrics
from bridge.model import SentryAlert

if TYPE_CHECKING:
    from bridge.backend import Backend

log = logging.getLogger("bridge.worker")

_HEADER = struct.Struct("!I")
# How long the edge waits for the worker to open the outbox (it may wait for a previous
# bridge to let go of the file) and, beyond the grace period, for it to exit.
START_TIMEOUT = 60.0
EXIT_MARGIN = 10.0


def _frame(message: object) -> bytes:
    try:
        payload = b"m" + marshal.dumps(message)  # type: ignore[arg-type]
    except ValueError:  # not plain values
        payload = b"p" + pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(payload)) + payload


async def _read(reader: asyncio.StreamReader) -> Any:
    """The next message, or None at end-of-file."""
    try:
        (size,) = _HEADER.unpack(await reader.readexactly(_HEADER.size))
        payload = await reader.readexactly(size)
    except (asyncio.IncompleteReadError, OSError):
        # End-of-file, or the other end died with data unread (ConnectionResetError,
        # BrokenPipeError): either way there is nobody to talk to.
        return None
    # Trusted: the other end is this program, on a socket pair only the two hold.
    if payload[:1] == b"m":
        return marshal.loads(payload[1:])  # noqa: S302
    return pickle.loads(payload[1:])  # noqa: S301


class WorkerDied(OutboxFull):
    """503 while the worker is gone: nothing can be made durable."""

    def __init__(self) -> None:
        super().__init__("the pipeline worker is not running; retry later")


# --- the edge's side ---------------------------------------------------------------------


class WorkerIntake:
    """:class:`~bridge.backend.Intake` backed by a worker process."""

    def __init__(self, config: Config, *, on_failure: Callable[[], None] | None = None) -> None:
        self.config = config
        # Called once if the worker dies unasked: serve() then shuts the edge down, exit 1.
        self.on_failure = on_failure
        self.failed = False  # no worker to talk to (any more)
        self.crashed = False  # ... because it exited unasked
        self._proc: asyncio.subprocess.Process | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._seq = itertools.count()
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._ready: asyncio.Future[None] | None = None
        self._stopped: asyncio.Future[None] | None = None
        self._stopping = False
        self._store_ok = True  # as the worker last said in a pong
        self._heard = time.monotonic()  # when the worker last sent anything
        self._watchdog: asyncio.Task[None] | None = None
        # Frames written in one event-loop iteration go out in one send (one syscall per
        # iteration, not per webhook, under load).
        self._outgoing: list[bytes] = []

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        try:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bridge.worker",
                str(theirs.fileno()),
                pass_fds=(theirs.fileno(),),
            )
        finally:
            theirs.close()
        reader, self._writer = await asyncio.open_connection(sock=ours)
        self._ready = loop.create_future()
        self._stopped = loop.create_future()
        self._reader_task = asyncio.create_task(self._read_loop(reader), name="worker-reader")
        self._writer.write(_frame(self.config))
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), START_TIMEOUT)
        except BaseException:
            await self._kill()
            raise
        self._heard = time.monotonic()
        self._watchdog = asyncio.create_task(self._watch(), name="worker-watchdog")

    async def accept(self, alert: SentryAlert, digest: bytes | None = None) -> bool:
        result = await self._request(lambda seq: ("accept", seq, alert.to_tuple(), digest))
        if isinstance(result, str):
            raise OutboxFull(result)
        return bool(result)

    async def quarantine(
        self, reason: str, detail: str, headers: Mapping[str, str], body: bytes, digest: bytes
    ) -> bool:
        message = ("quarantine", reason, detail, dict(headers), body, digest)
        result = await self._request(lambda seq: (message[0], seq, *message[1:]))
        if isinstance(result, str):
            raise OutboxFull(result)
        return bool(result)

    def ignored(self) -> None:
        if self.healthy():
            self._send(("ignored",))

    async def exposition(self) -> bytes:
        if not self.healthy():
            return b""
        text: bytes = await self._request(lambda seq: ("metrics", seq))
        return text

    def healthy(self) -> bool:
        return self._writer is not None and not self.failed

    def store_ok(self) -> bool:
        return self._store_ok

    async def reload(self, config: Config) -> None:
        error = await self._request(lambda seq: ("reload", seq, config))
        if error is not None:
            raise WorkerFailed(error)
        self.config = config

    def hurry(self) -> None:
        if self.healthy():
            self._send(("hurry",))

    async def status(self, limit: int) -> dict[str, Any]:
        answer: dict[str, Any] = await self._request(lambda seq: ("status", seq, limit))
        return answer

    async def requeue_dead_letters(self) -> dict[str, int]:
        answer: dict[str, int] = await self._request(lambda seq: ("requeue", seq))
        return answer

    async def stop(self, grace: float) -> None:
        self._stopping = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self._proc is None:
            return
        if self.healthy() and self._stopped is not None:
            self._send(("stop", grace))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._stopped), grace + EXIT_MARGIN)
        try:
            await asyncio.wait_for(self._proc.wait(), EXIT_MARGIN)
        except TimeoutError:
            log.error("the pipeline worker did not exit; killing it")
            await self._kill()
        if self._writer is not None:
            self._writer.close()
        if self._reader_task is not None:
            self._reader_task.cancel()
            await asyncio.gather(self._reader_task, return_exceptions=True)

    async def _request(self, message: Callable[[int], tuple[Any, ...]]) -> Any:
        if not self.healthy():
            raise WorkerDied()
        assert self._writer is not None
        seq = next(self._seq)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[seq] = future
        try:
            self._send(message(seq))
            return await future
        finally:
            self._waiting.pop(seq, None)

    def _send(self, message: object) -> None:
        if not self._outgoing:
            asyncio.get_running_loop().call_soon(self._flush)
        self._outgoing.append(_frame(message))

    def _flush(self) -> None:
        frames, self._outgoing = self._outgoing, []
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(b"".join(frames))

    async def _watch(self) -> None:
        """Ping the worker; one that answers nothing within ``worker_timeout`` is stuck
        (a deadlock, SIGSTOP, swapped out): kill it and fail, as if it had died."""
        timeout = self.config.server.worker_timeout
        while not self.failed and not self._stopping:
            await asyncio.sleep(min(1.0, timeout / 4))
            if time.monotonic() - self._heard > timeout:
                log.error("the pipeline worker stopped answering; killing it")
                if self._proc is not None and self._proc.returncode is None:
                    self._proc.kill()
                self._died()
                return
            self._send(("ping", next(self._seq)))

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        try:
            await self._dispatch(reader)
        except Exception:
            log.exception("unreadable message from the pipeline worker")
        finally:
            self._died()

    async def _dispatch(self, reader: asyncio.StreamReader) -> None:
        while (message := await _read(reader)) is not None:
            self._heard = time.monotonic()
            kind = message[0]
            if kind == "pong":
                self._store_ok = bool(message[2])
            elif kind == "done":
                for seq, error in message[1]:
                    self._resolve(seq, error)
            elif kind in {"metrics", "reloaded", "status", "requeue"}:
                self._resolve(message[1], message[2])
            elif kind == "ready" and self._ready is not None and not self._ready.done():
                self._ready.set_result(None)
            elif kind == "failed" and self._ready is not None and not self._ready.done():
                self._ready.set_exception(WorkerFailed(message[1]))
            elif kind == "stopped" and self._stopped is not None and not self._stopped.done():
                self._stopped.set_result(None)

    def _resolve(self, seq: int, value: object) -> None:
        future = self._waiting.get(seq)
        if future is not None and not future.done():
            future.set_result(value)

    def _died(self) -> None:
        """The worker is gone (asked to, or not): end-of-file, a broken socket, or the
        watchdog killed it. Every webhook still waiting gets its 503."""
        if self.failed:
            return
        self.failed = True
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(WorkerDied())
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(WorkerFailed("the pipeline worker exited while starting"))
        if self._stopped is not None and not self._stopped.done():
            self._stopped.set_result(None)
        if not self._stopping:
            self.crashed = True
            log.error("the pipeline worker exited; stopping so the bridge is restarted")
            if self.on_failure is not None:
                self.on_failure()

    async def _kill(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.kill()
            await self._proc.wait()


# --- the worker's side -------------------------------------------------------------------


class _Worker:
    def __init__(self, backend: Backend, writer: asyncio.StreamWriter) -> None:
        self.backend = backend
        self.writer = writer
        self._done: list[tuple[int, bool | str]] = []
        self._accepting: set[asyncio.Task[None]] = set()

    async def serve(self, reader: asyncio.StreamReader) -> None:
        """Answer the edge until it says stop or goes away."""
        while (message := await _read(reader)) is not None:
            kind = message[0]
            if kind == "accept":
                alert = SentryAlert.from_tuple(message[2])
                task = asyncio.create_task(self._accept(message[1], alert, message[3]))
                self._accepting.add(task)
                task.add_done_callback(self._accepting.discard)
            elif kind == "quarantine":
                task = asyncio.create_task(self._quarantine(message[1], *message[2:]))
                self._accepting.add(task)
                task.add_done_callback(self._accepting.discard)
            elif kind == "ping":
                self.writer.write(_frame(("pong", message[1], self.backend.store_ok())))
            elif kind == "ignored":
                self.backend.ignored()
            elif kind == "metrics":
                text = await self.backend.exposition()
                self.writer.write(_frame(("metrics", message[1], text)))
            elif kind == "status":
                task = asyncio.create_task(self._answer(message, self.backend.status(message[2])))
                self._accepting.add(task)
                task.add_done_callback(self._accepting.discard)
            elif kind == "requeue":
                task = asyncio.create_task(
                    self._answer(message, self.backend.requeue_dead_letters())
                )
                self._accepting.add(task)
                task.add_done_callback(self._accepting.discard)
            elif kind == "hurry":  # before "stop": the drain, when it comes, ends at once
                self.backend.hurry()
            elif kind == "reload":
                self.writer.write(_frame(("reloaded", message[1], await self._reload(message[2]))))
            elif kind == "stop":
                # Still listening while draining: a "hurry" (or the edge going) cuts it short.
                listening = asyncio.create_task(self._until_hurry(reader))
                await self._settle()
                await self.backend.stop(float(message[1]))
                listening.cancel()
                self.writer.write(_frame(("stopped",)))
                await self.writer.drain()
                return
        # The edge is gone (SIGKILL, a crash): nobody is waiting for anything; close the
        # outbox at once so a restarted bridge can open it.
        log.warning("the HTTP edge went away; closing the outbox")
        await self._settle()
        await self.backend.stop(0.0)

    async def _reload(self, config: object) -> str | None:
        if not isinstance(config, Config):
            return "not a config"
        try:
            await self.backend.reload(config)
        except Exception as exc:
            log.exception("reload failed in the pipeline worker")
            return str(exc)
        logs.setup(config.server.log_level, config.server.log_format)  # the worker's own
        return None

    async def _answer(self, message: tuple[Any, ...], work: Awaitable[object]) -> None:
        """Answer ``(kind, seq, ...)`` with ``(kind, seq, result)`` once ``work`` is done,
        without holding up the read loop (accepts keep flowing meanwhile)."""
        try:
            result = await work
        except Exception as exc:  # answered, so the edge is not left waiting
            log.exception("request from the edge failed", extra={"kind": message[0]})
            result = {"error": str(exc)}
        self.writer.write(_frame((message[0], message[1], result)))

    async def _until_hurry(self, reader: asyncio.StreamReader) -> None:
        while (message := await _read(reader)) is not None:
            if message[0] == "hurry":
                break
        self.backend.hurry()  # asked to, or the edge is gone: nobody waits for the drain

    async def _accept(self, seq: int, alert: SentryAlert, digest: bytes | None) -> None:
        result: bool | str
        try:
            result = await self.backend.accept(alert, digest)
        except OutboxFull as exc:
            result = exc.detail
        self._done_with(seq, result)

    async def _quarantine(
        self,
        seq: int,
        reason: str,
        detail: str,
        headers: dict[str, str],
        body: bytes,
        digest: bytes,
    ) -> None:
        result: bool | str
        try:
            result = await self.backend.quarantine(reason, detail, headers, body, digest)
        except OutboxFull as exc:
            result = exc.detail
        self._done_with(seq, result)

    def _done_with(self, seq: int, result: bool | str) -> None:
        if not self._done:
            # One "done" frame for every request that finished in this loop iteration.
            asyncio.get_running_loop().call_soon(self._flush_done)
        self._done.append((seq, result))

    def _flush_done(self) -> None:
        done, self._done = self._done, []
        if done and not self.writer.is_closing():
            self.writer.write(_frame(("done", done)))

    async def _settle(self) -> None:
        await asyncio.gather(*self._accepting, return_exceptions=True)
        self._flush_done()


async def _main(fd: int) -> int:
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)  # the edge decides when we stop or reload
    sock = socket.socket(fileno=fd)
    reader, writer = await asyncio.open_connection(sock=sock)
    config = await _read(reader)
    if not isinstance(config, Config):
        return 2
    logs.setup(config.server.log_level, config.server.log_format)
    # Imported here: the edge imports this module too, and needs none of the backend.
    from bridge.backend import Backend

    try:
        metrics = Metrics(CollectorRegistry())
        metrics.add_process_collectors("worker")
        backend = Backend(config, metrics)
        await backend.start()
    except Exception as exc:
        # Say why (a locked or unwritable outbox, a bad TLS file) for the edge to report.
        writer.write(_frame(("failed", str(exc))))
        await writer.drain()
        writer.close()
        return 1
    gc.freeze()  # as the edge does (serve.py): start-up objects live as long as we do
    writer.write(_frame(("ready",)))
    log.info("pipeline worker ready", extra={"pid": os.getpid()})
    await _Worker(backend, writer).serve(reader)
    writer.close()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(_main(int(sys.argv[1]))))
