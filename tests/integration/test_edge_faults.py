"""The HTTP edge under faults, for real: the bridge under Uvicorn with its worker process,
a real Alertmanager, and the faults a production edge meets: its worker SIGKILLed under
load or SIGSTOPped (stuck), thousands of idle connections, clients that send a byte a
second. Whatever happens, every webhook gets a documented answer in bounded time, none
hangs, the bridge exits non-zero for its supervisor when its worker is lost, and every
webhook answered 202 reaches Alertmanager after the restart."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import yaml

from tests.integration import procs
from tests.integration.conftest import CLIENT_SECRET, ENV, Alertmanager, Bridge, fixture, sign

TEMPLATE = json.dumps(fixture("event_alert.json"))
TEMPLATE_ISSUE = "1117540176"


def body_for(n: int) -> bytes:
    """event_alert.json for issue 8000000000 + n: a distinct identity and body each."""
    return TEMPLATE.replace(TEMPLATE_ISSUE, str(8_000_000_000 + n)).encode()


def issue_of(n: int) -> str:
    return str(8_000_000_000 + n)


@contextlib.contextmanager
def running(tmp_path: Path, am_url: str, **server: str | int) -> Iterator[Bridge]:
    config = procs.write_config(tmp_path / "config.yaml", [am_url])
    data = yaml.safe_load(config.read_text(encoding="utf-8"))
    data["server"].update(server)
    config.write_text(yaml.safe_dump(data), encoding="utf-8")
    with (
        procs.bridge(config, tmp_path / "data", tmp_path / "bridge.log", ENV) as process,
        httpx.Client(base_url=process.url, timeout=20) as client,
    ):
        yield Bridge(process, client)


def seen_issues(am: Alertmanager) -> set[str]:
    return {a["labels"].get("sentry_issue_id", "") for a in am.sentry_alerts()}


def wait_until_delivered(am: Alertmanager, issues: set[str], timeout: float = 60.0) -> None:
    am.wait_for(lambda alerts: issues <= seen_issues(am), timeout=timeout)


class Load:
    """Threads posting distinct signed webhooks until stopped; every answer recorded."""

    def __init__(self, url: str, first: int, threads: int = 12) -> None:
        self.url = url
        self.next = first
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.answers: list[tuple[int, int | str]] = []  # (n, status or exception name)
        self.pool = ThreadPoolExecutor(threads)
        self.futures = [self.pool.submit(self._post_until_stopped) for _ in range(threads)]

    def _post_until_stopped(self) -> None:
        # 20 s: far beyond any bound of the edge (store_timeout 5 s), so a hang shows.
        with httpx.Client(base_url=self.url, timeout=20) as client:
            while not self.stop.is_set():
                with self.lock:
                    n, self.next = self.next, self.next + 1
                body = body_for(n)
                headers = {
                    "Sentry-Hook-Resource": "event_alert",
                    "Sentry-Hook-Signature": sign(body, CLIENT_SECRET),
                }
                try:
                    status: int | str = client.post(
                        "/webhooks/sentry", content=body, headers=headers
                    ).status_code
                except httpx.TransportError as exc:
                    status = type(exc).__name__
                    time.sleep(0.05)  # the edge is gone; do not spin
                self.answers.append((n, status))

    def going(self) -> bool:
        return len(self.accepted()) >= 100

    def accepted(self) -> set[str]:
        return {issue_of(n) for n, status in self.answers if status == 202}

    def finish(self) -> Counter[int | str]:
        self.stop.set()
        for future in self.futures:
            future.result(timeout=60)
        self.pool.shutdown()
        return Counter(status for _, status in self.answers)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_worker_sigkilled_under_load_never_wedges_the_edge(
    tmp_path: Path, alertmanager: Alertmanager
) -> None:
    """Killed with frames unread in its socket, the worker resets it (the edge's read
    raises ConnectionResetError, not end-of-file). Five rounds: each time the edge answers
    every webhook (202 or 503), exits 1, and nothing answered 202 is lost."""
    accepted: set[str] = set()
    for round_ in range(5):
        with running(tmp_path, alertmanager.url) as bridge:
            load = Load(bridge.url, first=round_ * 100_000)
            wait_for(load.going, 60, "no load went through")
            [worker] = bridge.process.children()
            os.kill(worker, signal.SIGKILL)
            assert bridge.process.proc.wait(timeout=30) == 1, "the edge did not exit"
            answers = load.finish()
            print(f"\nround {round_}: {dict(answers)}")
            accepted |= load.accepted()
            assert "ReadTimeout" not in answers, f"a webhook hung: {answers}"
            assert set(answers) <= {202, 503, "ConnectError", "RemoteProtocolError",
                                    "ReadError"}, answers  # fmt: skip
    with running(tmp_path, alertmanager.url):
        wait_until_delivered(alertmanager, accepted)


def test_a_stopped_worker_is_killed_and_the_waiting_webhooks_get_503(
    tmp_path: Path, alertmanager: Alertmanager
) -> None:
    """SIGSTOP: the worker is alive, holds the outbox and answers nothing. A waiting
    webhook gets 503 at store_timeout; the watchdog kills the worker at worker_timeout;
    the edge exits 1."""
    with running(tmp_path, alertmanager.url, store_timeout="1s", worker_timeout="3s") as bridge:
        for n in range(5):
            assert bridge.post(body_for(n), resource="event_alert").status_code == 202
        [worker] = bridge.process.children()
        os.kill(worker, signal.SIGSTOP)
        started = time.monotonic()
        response = bridge.post(body_for(5), resource="event_alert")
        took = time.monotonic() - started
        assert (response.status_code, response.json()["reason"]) == (503, "store_timeout")
        assert took < 3
        assert bridge.process.proc.wait(timeout=30) == 1
        exited = time.monotonic() - started
        print(f"\nstopped worker: 503 after {took:.1f}s, the edge exited 1 after {exited:.1f}s")
        assert exited < 15
        assert "the pipeline worker stopped answering" in bridge.process.logs()
        wait_for(lambda: not Path(f"/proc/{worker}").exists(), 15, "the worker still runs")
    with running(tmp_path, alertmanager.url):
        wait_until_delivered(alertmanager, {issue_of(n) for n in range(5)})


def test_idle_and_slow_clients_are_cut_off_and_webhooks_still_get_through(
    tmp_path: Path, alertmanager: Alertmanager
) -> None:
    """2,000 connections that send nothing, 200 that send their headers a byte a second,
    200 that send their body a byte a second: all closed by the bridge within
    read_timeout (the slow bodies answered 408 first), then webhooks go through."""
    with running(tmp_path, alertmanager.url, read_timeout="2s") as bridge:
        port = int(bridge.url.rsplit(":", 1)[1])
        body = body_for(1)
        head = (
            f"POST /webhooks/sentry HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
            f"Sentry-Hook-Resource: event_alert\r\n"
            f"Sentry-Hook-Signature: {sign(body, CLIENT_SECRET)}\r\n\r\n"
        ).encode()
        # The slow bodies first: admitted before the idle connections exceed
        # max_concurrency (beyond it Uvicorn answers 503 at once, which is a bound too).
        slow_body = [socket.create_connection(("127.0.0.1", port)) for _ in range(200)]
        for sock in slow_body:
            sock.sendall(head)
        time.sleep(0.2)
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(2000)]
        slow_head = [socket.create_connection(("127.0.0.1", port)) for _ in range(200)]
        answers: dict[socket.socket, bytes] = {}
        sockets = idle + slow_head + slow_body
        for sock in sockets:
            sock.setblocking(False)
        started = time.monotonic()
        open_ = set(sockets)
        sent = 0
        while open_ and time.monotonic() - started < 15:
            for sock in list(open_):
                try:
                    if sock in slow_head or sock in slow_body:
                        data = head if sock in slow_head else body
                        if sent < len(data):
                            sock.send(data[sent : sent + 1])
                    chunk = sock.recv(65536)
                    answers[sock] = answers.get(sock, b"") + chunk
                    if not chunk:
                        open_.discard(sock)
                except BlockingIOError:
                    pass
                except OSError:
                    open_.discard(sock)
            sent += 1
            time.sleep(0.5)
        took = time.monotonic() - started
        print(f"\n{len(sockets)} idle and slow connections all closed after {took:.1f}s")
        for sock in sockets:
            sock.close()
        assert not open_, f"{len(open_)} connections still held after {took:.1f}s"
        assert took < 2 + 4  # read_timeout and one round of the loop, with slack
        assert all(answers.get(s, b"").startswith(b"HTTP/1.1 408") for s in slow_body)
        assert not any(answers.get(s) for s in idle + slow_head)  # closed, no answer
        response = bridge.post(body_for(2), resource="event_alert")
        assert response.status_code == 202
        assert bridge.client.get("/-/ready").status_code == 200
        wait_until_delivered(alertmanager, {issue_of(2)})
