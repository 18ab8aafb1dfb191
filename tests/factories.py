"""Shared test factories: internal alerts and Alertmanager alerts, one definition each."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from bridge.alertmanager import PostableAlert
from bridge.model import Kind, SentryAlert, State

START = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def sentry_alert(**overrides: Any) -> SentryAlert:
    """An issue alert (``event_alert`` / ``triggered`` for issue 42) with ``overrides``."""
    values: dict[str, Any] = {
        "resource": "event_alert",
        "action": "triggered",
        "kind": Kind.ISSUE,
        "state": State.FIRING,
        "identity": "issue:42",
        "issue_id": "42",
        "title": "ValueError: bad input",
    }
    values.update(overrides)
    return SentryAlert(**values)


def issue(n: int, state: State = State.FIRING, **overrides: Any) -> SentryAlert:
    """The ``issue`` webhook of issue ``n``, titled ``Error n``."""
    values: dict[str, Any] = {
        "resource": "issue",
        "action": "created" if state is State.FIRING else "resolved",
        "state": state,
        "identity": f"issue:{n}",
        "issue_id": str(n),
        "title": f"Error {n}",
    }
    return sentry_alert(**(values | overrides))


def postable(
    n: int | str,
    *,
    ends_in: float = 3600.0,
    start: datetime = START,
    labels: dict[str, str] | None = None,
    generator_url: str | None = None,
) -> PostableAlert:
    """A firing alert for issue ``n`` from ``start``, ending ``ends_in`` seconds later."""
    return PostableAlert(
        labels={"alertname": "SentryIssue", "sentry_issue_id": str(n), **(labels or {})},
        annotations={"summary": f"Error {n}"},
        starts_at=start,
        ends_at=start + timedelta(seconds=ends_in),
        generator_url=generator_url or f"https://sentry.example/issues/{n}/",
    )
