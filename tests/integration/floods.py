"""Bounded floods against a bridge on loopback, and the signed webhooks sent alongside
them, for tests/integration/test_floods.py and ``bench/run floods``.

The floods that need CPU (many clients in a loop, hundreds of bodies pushed) run in a
process of their own (``python -m tests.integration.floods ...``, stopped with SIGTERM,
printing what it did as JSON), so the test's own thread that times the signed webhooks
does not wait for the GIL behind them. Sockets that only sit there are held in the
caller's process.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.integration import procs
from tests.integration.conftest import CLIENT_SECRET, fixture, sign

ROOT = Path(__file__).resolve().parents[2]
_TEMPLATE = json.dumps(fixture("event_alert.json"))
_TEMPLATE_ISSUE = "1117540176"
SENTRY_TIMEOUT = 1.0  # seconds: Sentry gives up on a webhook after this


def issue_of(n: int) -> str:
    return str(9_100_000_000 + n)


def signed(n: int) -> tuple[bytes, dict[str, str]]:
    """event_alert.json for issue ``issue_of(n)``, signed as Sentry signs it."""
    body = _TEMPLATE.replace(_TEMPLATE_ISSUE, issue_of(n)).encode()
    headers = {
        "Content-Type": "application/json",
        "Sentry-Hook-Resource": "event_alert",
        "Sentry-Hook-Signature": sign(body, CLIENT_SECRET),
    }
    return body, headers


@dataclass
class Answer:
    n: int
    status: int | str  # the status code, or the exception's name
    seconds: float


@dataclass
class Prober:
    """Signed webhooks from a thread, one after the other every ``interval`` seconds, each
    on a connection of its own (as Sentry sends them), each answer timed."""

    url: str
    first: int = 0
    interval: float = 0.02
    answers: list[Answer] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = self.first
        # No connection kept: each webhook opens its own, as Sentry's do.
        no_reuse = httpx.Limits(max_keepalive_connections=0)
        with procs.client(base_url=self.url, timeout=10, limits=no_reuse) as client:
            while not self._stop.is_set():
                body, headers = signed(n)
                started = time.monotonic()
                try:
                    status: int | str = client.post(
                        "/webhooks/sentry", content=body, headers=headers
                    ).status_code
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                self.answers.append(Answer(n, status, time.monotonic() - started))
                n += 1
                self._stop.wait(self.interval)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def wait_for(self, count: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.answers) < count:
            assert time.monotonic() < deadline, f"only {len(self.answers)} webhooks answered"
            self._stop.wait(0.05)

    def accepted(self) -> set[str]:
        return {issue_of(a.n) for a in self.answers if a.status == 202}

    def summary(self) -> str:
        times = sorted(a.seconds for a in self.answers) or [0.0]
        p50, p99 = times[len(times) // 2], times[min(len(times) - 1, len(times) * 99 // 100)]
        statuses = dict(Counter(a.status for a in self.answers))
        return (
            f"{len(self.answers)} signed webhooks {statuses}: p50 {p50 * 1000:.0f} ms, "
            f"p99 {p99 * 1000:.0f} ms, max {times[-1] * 1000:.0f} ms"
        )

    def check(self) -> None:
        """Sentry's contract: every signed webhook answered 202 within its timeout."""
        assert self.answers, "no webhook was sent"
        refused = [a for a in self.answers if a.status != 202]
        assert not refused, f"not all answered 202: {refused[:5]} ({self.summary()})"
        slowest = max(a.seconds for a in self.answers)
        assert slowest < SENTRY_TIMEOUT, f"a webhook took {slowest:.2f}s ({self.summary()})"


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def idle(port: int, count: int) -> list[socket.socket]:
    """``count`` connections that send nothing."""
    return [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]


def kept_alive(port: int, count: int) -> list[socket.socket]:
    """``count`` connections that made one request (GET /-/healthy), read the answer and
    stay open, idle (HTTP/1.1 keep-alive)."""
    held = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(b"GET /-/healthy HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.endswith(b"}"):
            chunk = sock.recv(4096)
            assert chunk, "the bridge closed a connection before answering"
            answer += chunk
        held.append(sock)
    return held


def is_open(sock: socket.socket) -> bool:
    """Whether the bridge still holds ``sock`` open (nothing to read and no EOF)."""
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        sock.setblocking(True)


def peak_rss(pid: int) -> int:
    """The process's peak resident memory so far (VmHWM), bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM for {pid}")


def populate(url: str, first: int, count: int) -> None:
    """``count`` distinct signed webhooks, 8 at a time: active alerts for /-/status."""

    def post(n: int) -> int:
        body, headers = signed(n)
        return procs.post(f"{url}/webhooks/sentry", content=body, headers=headers).status_code

    with ThreadPoolExecutor(8) as pool:
        statuses = Counter(pool.map(post, range(first, first + count)))
    assert statuses == {202: count}, statuses


# --- the floods that run in a process of their own --------------------------------------


@contextlib.contextmanager
def flood(*args: str) -> Iterator[dict[str, Any]]:
    """Run ``python -m tests.integration.floods ARGS`` while the block runs; the dict is
    filled with what it reports when stopped."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.floods", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    report: dict[str, Any] = {}
    try:
        assert proc.stdout is not None
        started = proc.stdout.readline()  # the flood says when it is going
        assert started.strip() == b"going", started + (proc.stderr.read() if proc.stderr else b"")
        yield report
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
        report.update(json.loads(out))


def _hammer(url: str, method: str, threads: int, stop: threading.Event) -> dict[str, object]:
    """``threads`` clients sending ``method url`` in a loop, each on a kept-alive
    connection; every answer counted."""
    counts: Counter[str] = Counter()
    lock = threading.Lock()
    ready = threading.Barrier(threads + 1)  # clients made (that costs CPU) before "going"

    def loop() -> None:
        with procs.client(timeout=30) as client:
            ready.wait()
            while not stop.is_set():
                try:
                    key = str(client.request(method, url).status_code)
                except httpx.HTTPError as exc:
                    key = type(exc).__name__
                with lock:
                    counts[key] += 1

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    for worker in workers:
        worker.start()
    ready.wait()
    print("going", flush=True)
    for worker in workers:
        worker.join()
    return {"answers": dict(counts)}


def _slow_bodies(
    port: int, count: int, size: int, rate: float, stop: threading.Event
) -> dict[str, object]:
    """``count`` webhooks with a bogus signature declaring ``size`` bytes, opened at
    ``rate`` a second, each sending all but the last byte as fast as the bridge reads it
    and then nothing; at the end, what the bridge answered each (``held``: nothing yet)."""
    head = (
        f"POST /webhooks/sentry HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Sentry-Hook-Resource: event_alert\r\nSentry-Hook-Signature: 00\r\n"
        f"Content-Length: {size}\r\n\r\n"
    ).encode()
    chunk = b"x" * 65536
    selector = selectors.DefaultSelector()
    left: dict[socket.socket, int] = {}
    pushed = 0
    started = time.monotonic()
    print("going", flush=True)
    while not stop.is_set():
        due = min(count, int((time.monotonic() - started) * rate) + 1)
        while len(left) < due:
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(head)
            sock.setblocking(False)
            left[sock] = size - 1
            selector.register(sock, selectors.EVENT_WRITE, sock)
        if len(left) == count and not selector.get_map():
            break
        for key, _ in selector.select(timeout=0.01):
            sock = key.data
            try:
                sent = sock.send(chunk[: min(len(chunk), left[sock])])
            except OSError:
                sent = -1
            if sent > 0:
                pushed += sent
                left[sock] -= sent
            if sent < 0 or left[sock] == 0:
                selector.unregister(sock)
    stop.wait()
    answers: Counter[str] = Counter()
    for sock in left:
        try:  # what the bridge said before closing it, if it did
            answers[sock.recv(12).decode(errors="replace")[9:12] or "closed"] += 1
        except BlockingIOError:
            answers["held"] += 1
        except OSError:
            answers["closed"] += 1
        sock.close()
    return {"opened": len(left), "pushed_bytes": pushed, "answers": dict(answers)}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m tests.integration.floods")
    sub = p.add_subparsers(dest="kind", required=True)
    h = sub.add_parser("hammer")
    h.add_argument("method")
    h.add_argument("url")
    h.add_argument("--threads", type=int, default=64)
    s = sub.add_parser("slow-bodies")
    s.add_argument("port", type=int)
    s.add_argument("--count", type=int, default=900)
    s.add_argument("--size", type=int, default=1_048_576)
    s.add_argument("--rate", type=float, default=300.0, help="connections opened a second")
    args = p.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if args.kind == "hammer":
        report = _hammer(args.url, args.method, args.threads, stop)
    else:
        report = _slow_bodies(args.port, args.count, args.size, args.rate, stop)
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
