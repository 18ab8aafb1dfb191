"""The model-based test's shorter twin: seeded random webhooks for two issues and a metric
alert, signed, through the real bridge under Uvicorn into a real Alertmanager, with a
restart of the bridge in between; Alertmanager's own ``GET /api/v2/alerts`` must show what
the reference model (tests/model.py, issue 8's rules) predicts."""

from __future__ import annotations

import copy
import random
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from starlette.datastructures import Headers

from bridge import sentry
from bridge.model import SentryAlert
from tests.integration import procs
from tests.integration.conftest import ENV, Alertmanager, Bridge, fixture
from tests.model import SETTINGS, Reference, identity_of, shown_of

ISSUES = ("9001", "9002")
RULE = "7011"
OUTCOMES = ("forwarded", "resolved", "duplicate", "stale", "dropped", "ignored")


def event_alert(
    issue: str,
    environment: str | None = None,
    when: datetime | None = None,
    received: datetime | None = None,
) -> dict[str, Any]:
    """The captured issue alert, for ``issue``; its own environment and event time unless
    given. ``when`` is the client's clock (the event's ``timestamp``), ``received``
    Sentry's (``received``; ``when`` unless given)."""
    body = copy.deepcopy(fixture("event_alert.json"))
    event = body["data"]["event"]
    event.update(
        issue_id=issue,
        issue_url=f"https://sentry.io/api/0/issues/{issue}/",
        web_url=f"https://sentry.io/organizations/acme/issues/{issue}/",
        event_id=uuid.uuid4().hex,
    )
    if environment is not None:
        event["environment"] = environment
    if when is not None:
        event.update(timestamp=when.timestamp(), datetime=when.isoformat().replace("+00:00", "Z"))
    if received or when:
        event["received"] = (received or when or datetime.now(UTC)).timestamp()
    return body


def issue_webhook(name: str, issue: str) -> dict[str, Any]:
    body = copy.deepcopy(fixture(name))
    body["data"]["issue"]["id"] = issue
    return body


def metric_alert(name: str) -> dict[str, Any]:
    body = copy.deepcopy(fixture(name))
    body["data"]["metric_alert"]["alert_rule"]["id"] = RULE
    return body


class Run:
    """Sends webhooks one at a time (each processed before the next is made, so event
    times and resolve times are ordered as Sentry would order them) and keeps the model."""

    def __init__(self) -> None:
        self.bridge: Bridge | None = None
        self.sent: list[tuple[dict[str, Any], str]] = []
        self.references: dict[str, Reference] = {}
        self.processed = 0

    def restarted(self, bridge: Bridge) -> None:
        """A new bridge process on the same store; its counters start at zero."""
        self.bridge, self.processed = bridge, 0

    def send(self, body: dict[str, Any], resource: str) -> None:
        assert self.bridge is not None
        response = self.bridge.post(body, resource=resource)
        if (body, resource) in self.sent:
            # The same signed body again: acknowledged, no effect (issue 8's retention).
            assert (response.status_code, response.json()) == (200, {"status": "duplicate"})
            return
        assert response.status_code == 202
        self.sent.append((body, resource))
        alert = sentry.normalise(
            Headers({"sentry-hook-resource": resource}), body, base_url="https://sentry.io"
        )
        assert isinstance(alert, SentryAlert)
        self.processed += 1
        deadline = time.monotonic() + 20
        while self._outcomes() < self.processed:
            assert time.monotonic() < deadline, "the bridge never processed the webhook"
            time.sleep(0.02)
        self.references.setdefault(alert.identity, Reference()).apply(alert, datetime.now(UTC))

    def _outcomes(self) -> float:
        assert self.bridge is not None
        return sum(
            self.bridge.metric("sentry_bridge_alerts_total", {"outcome": o}) for o in OUTCOMES
        )

    def expected(self) -> dict[str, list[Any]]:
        now = datetime.now(UTC)
        return {
            identity: [shown]
            for identity, reference in self.references.items()
            if (shown := reference.active(now)) is not None
        }


def shown(alerts: list[dict[str, Any]]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for alert in alerts:
        out.setdefault(identity_of(alert["labels"]), []).append(shown_of(alert["labels"]))
    return out


def config(path: Path, am_url: str) -> Path:
    procs.write_config(path, [am_url])
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["classification"] = SETTINGS["classification"]
    data["dedup"] = SETTINGS["dedup"]
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def random_webhook(rng: random.Random, run: Run) -> tuple[dict[str, Any], str]:
    issue = rng.choice(ISSUES)
    kind = rng.choice(["fire", "fire", "fire", "created", "resolve", "metric", "retry", "late"])
    now = datetime.now(UTC)
    if kind == "fire":
        env = rng.choice(["production", "staging", "dev"])
        return event_alert(issue, env, now), "event_alert"
    if kind == "created":
        return issue_webhook(
            rng.choice(["issue_created.json", "issue_unresolved.json"]), issue
        ), "issue"
    if kind == "resolve":
        return issue_webhook("issue_resolved.json", issue), "issue"
    if kind == "metric":
        name = rng.choice(
            [
                "metric_alert_critical.json",
                "metric_alert_warning_p95.json",
                "metric_alert_resolved.json",
            ]
        )
        return metric_alert(name), "metric_alert"
    if kind == "retry" and run.sent:  # something sent before, unchanged
        return rng.choice(run.sent)
    # An event from minutes ago delivered late (a distinct body: Sentry's own retries of one
    # delivery are the same body, acknowledged as duplicates above).
    env = rng.choice(["production", "staging"])
    return event_alert(issue, env, now - timedelta(minutes=rng.choice([1, 5]))), "event_alert"


@pytest.mark.parametrize("seed", [1, 2])
def test_alertmanager_shows_what_the_rules_predict(
    seed: int, alertmanager: Alertmanager, tmp_path: Path
) -> None:
    rng = random.Random(seed)
    path = config(tmp_path / "config.yaml", alertmanager.url)
    run = Run()
    for _start in range(2):  # a restart in between: the state is in the store
        with (
            procs.bridge(path, tmp_path / "data", tmp_path / "bridge.log", ENV) as process,
            procs.client(base_url=process.url, timeout=10) as client,
        ):
            run.restarted(Bridge(process, client))
            for _step in range(12):
                run.send(*random_webhook(rng, run))
            alertmanager.wait_for(lambda alerts: shown(alerts) == run.expected())
