"""The HTTP edge under faults, for real: the bridge (one process) under Uvicorn, a real
Alertmanager, and the faults a production bridge meets: a pipeline stuck on Sentry's API
that never answers, the process SIGKILLed under load, thousands of idle connections,
clients that send a byte a second. Whatever happens, every webhook gets a documented
answer in bounded time, none hangs, a stuck pipeline turns /-/healthy red (the liveness
probe restarts the pod), and every webhook answered 202 reaches Alertmanager after a
restart on the same data directory."""

from __future__ import annotations

import contextlib
import json
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
from tests.sentry_api import FakeSentryAPI

TEMPLATE = json.dumps(fixture("event_alert.json"))
TEMPLATE_ISSUE = "1117540176"


def body_for(n: int) -> bytes:
    """event_alert.json for issue 8000000000 + n: a distinct identity and body each."""
    return TEMPLATE.replace(TEMPLATE_ISSUE, str(8_000_000_000 + n)).encode()


def issue_of(n: int) -> str:
    return str(8_000_000_000 + n)


@contextlib.contextmanager
def running(
    tmp_path: Path, am_url: str, sentry: dict[str, str] | None = None, **server: str | int
) -> Iterator[Bridge]:
    config = procs.write_config(tmp_path / "config.yaml", [am_url])
    data = yaml.safe_load(config.read_text(encoding="utf-8"))
    data["server"].update(server)
    data["sentry"].update(sentry or {})
    config.write_text(yaml.safe_dump(data), encoding="utf-8")
    with (
        procs.bridge(config, tmp_path / "data", tmp_path / "bridge.log", ENV) as process,
        procs.client(base_url=process.url, timeout=20) as client,
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
        self.slowest = 0.0  # seconds, of any answer
        self.pool = ThreadPoolExecutor(threads)
        self.futures = [self.pool.submit(self._post_until_stopped) for _ in range(threads)]

    def _post_until_stopped(self) -> None:
        # 20 s: far beyond any bound of the edge (store_timeout 5 s), so a hang shows.
        with procs.client(base_url=self.url, timeout=20) as client:
            while not self.stop.is_set():
                with self.lock:
                    n, self.next = self.next, self.next + 1
                body = body_for(n)
                headers = {
                    "Sentry-Hook-Resource": "event_alert",
                    "Sentry-Hook-Signature": sign(body, CLIENT_SECRET),
                }
                started = time.monotonic()
                try:
                    status: int | str = client.post(
                        "/webhooks/sentry", content=body, headers=headers
                    ).status_code
                except httpx.TransportError as exc:
                    status = type(exc).__name__
                    time.sleep(0.05)  # the bridge is gone; do not spin
                else:
                    self.slowest = max(self.slowest, time.monotonic() - started)
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


def test_sigkilled_under_load_then_restarted_every_202_is_delivered(
    tmp_path: Path, alertmanager: Alertmanager
) -> None:
    """SIGKILL (an OOM kill, a node loss) in the middle of a stream of webhooks, three
    times: no answer hangs, and a bridge started again on the same data directory
    delivers every webhook any of them answered 202."""
    accepted: set[str] = set()
    for round_ in range(3):
        with running(tmp_path, alertmanager.url) as bridge:
            load = Load(bridge.url, first=round_ * 100_000)
            wait_for(load.going, 60, "no load went through")
            bridge.process.kill()
            answers = load.finish()
            print(f"\nround {round_}: {dict(answers)}")
            accepted |= load.accepted()
            assert "ReadTimeout" not in answers, f"a webhook hung: {answers}"
            assert set(answers) <= {202, 503, "ConnectError", "RemoteProtocolError",
                                    "ReadError"}, answers  # fmt: skip
    with running(tmp_path, alertmanager.url):
        wait_until_delivered(alertmanager, accepted)


def test_a_stuck_pipeline_turns_health_red_while_the_edge_answers_within_a_second(
    tmp_path: Path, alertmanager: Alertmanager
) -> None:
    """Sentry's API accepts the look-up of one issue and never answers (api_timeout far
    away): the pipeline's batch never completes. Within progress_timeout /-/healthy turns
    503 and the log says why, while every webhook posted meanwhile is still answered
    (202, or 503) within a second. Once the API answers, health is green again and
    everything answered 202 reaches Alertmanager."""
    with FakeSentryAPI() as api:
        api.issue(issue_of(0), users=5, events=9, delay=120.0)
        sentry = {"base_url": api.url, "api_token": "t0ken", "api_timeout": "120s"}
        with running(tmp_path, alertmanager.url, sentry, progress_timeout="2s") as bridge:
            assert bridge.client.get("/-/healthy").status_code == 200
            assert bridge.post(body_for(0), resource="event_alert").status_code == 202
            assert api.wait_for_requests(1, timeout=10), "the pipeline never asked Sentry"
            load = Load(bridge.url, first=1, threads=4)
            started = time.monotonic()
            wait_for(
                lambda: bridge.client.get("/-/healthy").status_code == 503,
                20,
                "/-/healthy stayed green with the pipeline stuck",
            )
            red_after = time.monotonic() - started
            health = bridge.client.get("/-/healthy").json()["status"]
            assert "the pipeline completed no batch" in health
            assert "the bridge is unhealthy" in bridge.process.logs()
            wait_for(lambda: len(load.accepted()) >= 50, 30, "the edge stopped accepting")
            answers = load.finish()
            print(
                f"\nstuck pipeline: /-/healthy red after {red_after:.1f}s; meanwhile "
                f"{dict(answers)}, slowest answer {load.slowest * 1000:.0f} ms"
            )
            assert set(answers) <= {202, 503}, answers
            assert load.slowest < 1.0, f"an answer took {load.slowest:.2f}s"
            assert bridge.client.get("/-/ready").status_code == 200  # still accepting
            api.stop()  # the held look-up is answered now: the batch completes
            wait_for(
                lambda: bridge.client.get("/-/healthy").status_code == 200,
                30,
                "/-/healthy stayed red after the pipeline moved again",
            )
            wait_until_delivered(alertmanager, {issue_of(0)} | load.accepted())


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
        # The slow bodies first, so they are in flight (admitted, server.max_concurrency)
        # while the idle and slow-head connections arrive.
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
