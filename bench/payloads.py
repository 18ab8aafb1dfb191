"""Distinct, signed, realistic Sentry webhooks for the benchmarks.

Issue alerts start from the captured ``event_alert`` fixture (several KB with
its event, breadcrumbs-free but with tags, contexts, exception and request),
metric alerts from the ``metric_alert`` fixture; each copy gets its own issue
id or alert rule id so the dedup window does not collapse them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.sentry_payloads import FIXTURES, load_fixture

SECRET = "bench-client-secret"


def sign(body: bytes, secret: str = SECRET) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


FIRST_ISSUE_ID = 9_000_000_000


def _issue_alert(template: str, old_id: str, n: int) -> bytes:
    new_id = str(FIRST_ISSUE_ID + n)
    return template.replace(old_id, new_id).encode()


def _metric_alert(template: dict[str, Any], n: int) -> bytes:
    data = json.loads(json.dumps(template))
    rule = data["data"]["metric_alert"]["alert_rule"]
    rule["id"] = 8_000_000 + n
    rule["name"] = f"{rule['name']} #{n}"
    return json.dumps(data).encode()


def webhooks(
    count: int, *, metric_share: float = 0.25, start: int = 0
) -> Iterator[tuple[str, bytes]]:
    """``count`` (resource, body) pairs, all distinct; a quarter of them metric alerts.
    ``start``: the first copy's number, so separate calls make distinct identities."""
    # The captured body as it is on disk (about 8 KB), not re-serialised smaller.
    issue_text = (FIXTURES / "event_alert.json").read_text(encoding="utf-8")
    issue_id = str(json.loads(issue_text)["data"]["event"]["issue_id"])
    metric = load_fixture("metric_alert_critical.json")
    every = round(1 / metric_share) if metric_share else 0
    for n in range(start, start + count):
        if every and n % every == every - 1:
            yield "metric_alert", _metric_alert(metric, n)
        else:
            yield "event_alert", _issue_alert(issue_text, issue_id, n)


def issue_identity(n: int) -> str:
    """The identity (as ``bench/recorder.py`` names it) of ``webhooks``' n-th issue alert."""
    return f"issue:{FIRST_ISSUE_ID + n}"


def write_wrk_records(
    path: Path, count: int, *, metric_share: float = 0.25, start: int = 0
) -> dict[str, float]:
    """The records bench/wrk.lua replays; returns the mean body size per resource.

    Written to disk before it returns: left to the kernel, the file (270 MB for 40,000) was
    written back some 30 s later (``vm.dirty_expire_centisecs``), during the first measured
    run of the bridge, whose fsyncs then waited behind it (ext4's ordered journal): the
    first round's p99 of 636 to 905 ms that the rounds after it never showed (issue 15)."""
    sizes: dict[str, list[int]] = {}
    with path.open("wb") as out:
        for resource, body in webhooks(count, metric_share=metric_share, start=start):
            out.write(f"{resource} {sign(body)} {len(body)}\n".encode())
            out.write(body)
            sizes.setdefault(resource, []).append(len(body))
        out.flush()
        os.fsync(out.fileno())
    return {resource: sum(v) / len(v) for resource, v in sizes.items()}
