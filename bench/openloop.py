"""An open-loop HTTP/1.1 load generator light enough to timestamp answers on a busy machine.

Requests go out at their scheduled times whatever happened to earlier ones (a slow answer
does not slow the load down, unlike a closed loop such as wrk's), each on an idle kept-alive
connection, or a new one when all are busy. Bodies are built before the clock starts; an
answer is timestamped in ``data_received``, when its first bytes arrive, with no HTTP client
library between the socket and the clock (httpx costs about a millisecond of CPU a request,
enough on two shared cores to read a 202 after Alertmanager already has the alert).
Responses are parsed only as far as the status and ``Content-Length`` (RFC 9112 6.3).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass
class Answer:
    scheduled: float
    first_byte: float = 0.0
    status: int = 0
    attempts: int = 0


class _Connection(asyncio.Protocol):
    def __init__(self, idle: deque[_Connection], lost: asyncio.Queue[Answer]) -> None:
        self.idle = idle
        self.lost = lost
        self.transport: asyncio.Transport | None = None
        self.current: Answer | None = None
        self.buffer = bytearray()
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def send(self, request: bytes, answer: Answer) -> None:
        assert self.transport is not None
        self.current, self.buffer = answer, bytearray()
        answer.attempts += 1
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        answer = self.current
        if answer is None:
            return
        if not self.buffer:
            answer.first_byte = now
        self.buffer += data
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return
        head = bytes(self.buffer[:head_end]).decode("latin-1").split("\r\n")
        length, close = 0, False
        for line in head[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
            elif name.strip().lower() == "connection" and "close" in value.lower():
                close = True
        if len(self.buffer) < head_end + 4 + length:
            return
        answer.status = int(head[0].split()[1])
        self.current = None
        if close:
            self.closed = True
            assert self.transport is not None
            self.transport.close()
        else:
            self.idle.append(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        with_answer, self.current = self.current, None
        if with_answer is not None and with_answer.status == 0:
            self.lost.put_nowait(with_answer)  # closed under a request: send it again


def http_request(host: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def run(url: str, requests: list[bytes], rate: float, connections: int = 32) -> list[Answer]:
    """Send ``requests`` (built by :func:`http_request`) at ``rate`` per second; returns
    when every one has its answer (a request whose connection closed under it is sent once
    more, as Sentry would)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    loop = asyncio.get_running_loop()
    idle: deque[_Connection] = deque()
    lost: asyncio.Queue[Answer] = asyncio.Queue()
    every: list[_Connection] = []

    async def connection() -> _Connection:
        _, protocol = await loop.create_connection(lambda: _Connection(idle, lost), host, port)
        every.append(protocol)
        return protocol

    async def send(index: int, answer: Answer) -> None:
        while idle and idle[0].closed:
            idle.popleft()
        conn = idle.popleft() if idle else await connection()
        conn.send(requests[index], answer)

    for _ in range(connections):
        idle.append(await connection())
    answers = [Answer(0.0) for _ in requests]
    index_of = {id(a): n for n, a in enumerate(answers)}
    begin = time.monotonic() + 0.05
    for n, answer in enumerate(answers):
        answer.scheduled = begin + n / rate
        while not lost.empty():
            again = lost.get_nowait()
            if again.attempts < 2:
                await send(index_of[id(again)], again)
        delay = answer.scheduled - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)  # the schedule itself, not a wait for a condition
        await send(n, answer)
    deadline = time.monotonic() + 60
    while any(a.status == 0 for a in answers) and time.monotonic() < deadline:
        while not lost.empty():
            again = lost.get_nowait()
            if again.attempts < 2:
                await send(index_of[id(again)], again)
        await asyncio.sleep(0.01)  # polling for the last answers, with a deadline
    for conn in every:
        if conn.transport is not None:
            conn.transport.close()
    return answers
