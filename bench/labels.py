"""Micro-benchmark of what every forwarded alert pays in ``bridge.labels``.

``python -m bench.labels`` reads the captured ``event_alert`` fixture (about 8 KB) into
one alert, then times ``scrub`` of its title, ``build_labels``, ``build_annotations`` and
``firing`` plus ``wire_json``, and ``bridge.scrub.scrub`` of hostile titles of growing
length (emails, IPv6, runs of local-part characters, credentials), printing microseconds
per call. Scrubbing works on capped input, so the hostile lines should stay flat as the
input grows.
"""

from __future__ import annotations

import time
import timeit
from collections.abc import Callable

from bridge import labels as L
from bridge import scrub as S
from bridge.alertmanager import wire_json
from bridge.classify import classify
from bridge.config import Classification
from bridge.model import SentryAlert, Severity
from bridge.sentry import read
from tests.factories import START
from tests.sentry_payloads import FIXTURES

_HEADERS = {"Sentry-Hook-Resource": "event_alert"}


def _alert() -> SentryAlert:
    body = (FIXTURES / "event_alert.json").read_bytes()
    _, alert = read(_HEADERS, body, base_url="https://sentry.io")
    assert isinstance(alert, SentryAlert)
    return alert


def _us(fn: Callable[[], object], number: int) -> float:
    # CPU time, not wall time: the figures should not depend on what else the machine runs.
    best = min(timeit.repeat(fn, number=number, repeat=5, timer=time.process_time))
    return best / number * 1e6


def main(hostile_sizes: tuple[int, ...] = (12_500, 25_000, 50_000, 100_000, 200_000)) -> None:
    alert = _alert()
    decision = classify(alert, Classification())
    severity = decision.severity or Severity.MEDIUM

    def labels() -> dict[str, str]:
        return L.build_labels(alert, decision, severity, escalated=False, severity_labels={})

    def annotations() -> dict[str, str]:
        return L.build_annotations(alert, decision)

    built_labels, built_annotations = labels(), annotations()

    def fire() -> str:
        return wire_json(
            L.firing(
                alert,
                built_labels,
                built_annotations,
                starts_at=START,
                now=START,
                lifetime=3600.0,
            )
        )

    print(f"captured event_alert: title {len(alert.title)} chars")
    for name, fn, number in (
        ("scrub(title)", lambda: S.scrub(alert.title), 20_000),
        ("build_labels", labels, 20_000),
        ("build_annotations", annotations, 20_000),
        ("firing + wire_json", fire, 20_000),
    ):
        print(f"  {name:<24} {_us(fn, number):8.2f} µs/call")
    hostile = {
        "emails": "mail jane.doe+x@example.com or ",
        "ipv6": "from 2001:db8::1 and fe80::1%eth0 ",
        "local-part run": "a.",
        "at signs": "a@",
        "credentials": "x_token: a https://u:p@h ",
    }
    for size in hostile_sizes:
        cells = []
        for name, unit in hostile.items():
            text = (unit * (size // len(unit) + 1))[:size]
            cells.append(f"{name} {_us(lambda t=text: S.scrub(t), 5):9.1f}")  # type: ignore[misc]
        print(f"  scrub {size:>7} chars: " + ", ".join(cells) + " µs/call")
    # The patterns themselves, uncapped: doubling the input should double the time.
    for size in hostile_sizes:
        cells = []
        for name, unit in hostile.items():
            text = (unit * (size // len(unit) + 1))[:size]

            def patterns(t: str = text) -> None:
                S._EMAIL.sub("[email]", t)
                S._IPV6.sub(S._ipv6, t)
                S._IPV4.sub("[ip]", t)
                S._PARAM.sub(r"\1[secret]", t)
                S._USERINFO.sub(r"\1[secret]@", t)

            cells.append(f"{name} {_us(patterns, 2) / 1000:7.2f}")
        print(f"  patterns, uncapped, {size:>7} chars: " + ", ".join(cells) + " ms/call")


if __name__ == "__main__":
    import sys

    main(() if "--fast-paths-only" in sys.argv else (12_500, 25_000, 50_000, 100_000, 200_000))
