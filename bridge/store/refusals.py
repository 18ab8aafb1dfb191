"""What one Alertmanager refused: its own business, for every engine (issue 15).

A refusal for an alert's content (400, 413, 422, or the bridge's own wire check) is a dead
letter of the Alertmanager that refused it. It never changes what the identity holds, nor
what the other Alertmanagers receive: the next resolve or re-fire is computed against the
alert as it was posted. The refusing Alertmanager's re-sends skip the very alerts it
refused (the same alert, compared as JSON values, since an engine may store the text
differently from how it queued it), so a refused alert does not take its page down with it
every round; a changed alert (fired again, resolved) is posted to it afresh.

Only a refusal for the content is skipped (``for_content``: the reason delivery wrote,
``invalid: ...`` or ``HTTP 400|413|422: ...``): one about the request (401, 403, 404: an
auth front or a path) would refuse any alert, and once fixed the re-sends bring that
Alertmanager up to date. The engines keep a content refusal with the identity of its
alert (``owner``; None for the others), so a page looks up only the refusals of the
identities on it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from bridge.alertmanager import PostableAlert
from bridge.labels import identity_from_labels

# Statuses that depend on the alerts sent (Alertmanager's 400 and 422, a 413 for the size).
CONTENT_STATUSES = frozenset({400, 413, 422})


def reason(status: int, message: str) -> str:
    """A refusal's reason as dead letters keep it."""
    return f"HTTP {status}: {message}"


def for_content(why: str) -> bool:
    """Whether a dead letter's reason refused the alert itself (not the request)."""
    if why.startswith("invalid: "):
        return True
    head = why.removeprefix("HTTP ").partition(":")[0]
    return why.startswith("HTTP ") and head.isdigit() and int(head) in CONTENT_STATUSES


def owner(body: str) -> str | None:
    """The Sentry identity of a wire alert the bridge built (None: not one of its own)."""
    try:
        labels = json.loads(body).get("labels")
    except (ValueError, AttributeError):
        return None
    return identity_from_labels(labels) if isinstance(labels, dict) else None


def kept_under(body: str, why: str) -> str | None:
    """The identity a dead letter is kept under: only a refusal for the content counts."""
    return owner(body) if for_content(why) else None


def owners(bodies: Iterable[str]) -> list[str]:
    """The identities of ``bodies``, once each."""
    return list(dict.fromkeys(o for body in bodies if (o := owner(body)) is not None))


def not_refused(bodies: Sequence[str], refused: Iterable[str]) -> list[str]:
    """``bodies`` without those equal, as JSON values, to one of ``refused``."""
    gone = [_value(body) for body in refused]
    if not gone:
        return list(bodies)
    return [body for body in bodies if _value(body) not in gone]


def new_dead(dead: Sequence[tuple[str, str]], before: Iterable[str]) -> list[tuple[str, str]]:
    """What of ``dead`` (wire JSON, reason) a refusal newly dead-letters: not refused
    ``before``, once each (its first reason), in order."""
    new: dict[str, tuple[str, str]] = {}
    for body, why in dead:
        if body not in new and not_refused([body], before):
            new[body] = (body, why)
    return list(new.values())


def _value(body: str) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return body


def requeue(
    dead: Sequence[str], active: Callable[[str], str | None], now: datetime
) -> tuple[list[str], dict[str, int]]:
    """What requeueing the dead letters (wire JSON, oldest first) queues again, for every
    Alertmanager, and the counts by outcome: a resolve as it was; a firing alert only while
    it is still its identity's active alert (``active(identity)``: its wire JSON or None),
    and then as it is now, so a late re-send never re-fires what was resolved or replaced
    since; each alert once, though several Alertmanagers refused it."""
    counts = {"requeued": 0, "superseded": 0}
    queued: list[str] = []
    for body in dead:
        alert = PostableAlert.model_validate_json(body)
        if alert.ends_at is None or alert.ends_at > now:  # firing: only as it is now
            current = active(identity_from_labels(alert.labels) or "")
            if current is None or json.loads(current).get("labels") != alert.labels:
                counts["superseded"] += 1
                continue
            body = current
        if body not in queued:
            queued.append(body)
            counts["requeued"] += 1
    return queued, counts
