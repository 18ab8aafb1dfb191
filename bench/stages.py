"""``bench/run stages``: the CPU each pure stage of the webhook path spends per webhook.

In this process, on the shipped config and the bench's records (``bench.payloads``: a
quarter metric alerts), each stage runs over every record in turn; the figure is the
best of several passes of process CPU time (``time.process_time``: what other processes
on a shared machine take is not counted), divided by the records. What the edge does
(signature, body digest, reading the body into a ``SentryAlert``: the typed model, then
the mapping to the alert's fields), what the store does with the alert (its JSON, and
reading it back where the alert is not kept in memory), and ``decide`` (the alert in its
context, classification, the identity's step, for identities seen for the first time).
Issue 15's profile says where these sit among the rest (Uvicorn, the store's thread).
"""

from __future__ import annotations

import gc
import hashlib
import json
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import payloads
from bridge import config, sentry
from bridge.classify import classify
from bridge.model import SentryAlert, State
from bridge.pipeline import read_in_context
from bridge.sentry import formats
from bridge.serve import tune_gc
from bridge.state import Policy, step
from bridge.store import jsontext
from bridge.store.contract import Entry
from tests.integration import procs


def _best(run: Callable[[], object], passes: int) -> float:
    """The least process CPU time of ``passes`` runs, seconds."""
    times = []
    for _ in range(passes):
        started = time.process_time()
        run()
        times.append(time.process_time() - started)
    return min(times)


def run(*, quick: bool = False) -> None:
    count, passes = (200, 2) if quick else (2000, 7)
    with tempfile.TemporaryDirectory() as tmp:
        path = procs.write_config(Path(tmp) / "config.yaml", ["http://127.0.0.1:9"])
        cfg = config.load(path, env={"SENTRY_CLIENT_SECRET": payloads.SECRET})
    policy = Policy.from_config(cfg)
    base_url, org = cfg.sentry.base_url, cfg.sentry.organization
    requests = [
        (
            sentry.LowerHeaders(
                {
                    "sentry-hook-resource": resource,
                    "sentry-hook-signature": payloads.sign(body),
                    "content-type": "application/json",
                }
            ),
            body,
        )
        for resource, body in payloads.webhooks(count)
    ]

    def read() -> list[Any]:
        return [sentry.read(h, b, base_url=base_url, organization=org)[1] for h, b in requests]

    alerts: list[SentryAlert] = [a for a in read() if isinstance(a, SentryAlert)]
    assert len(alerts) == count, "every bench record is an alert"
    texts = [jsontext.dumps(a.to_json()) for a in alerts]
    now = datetime.now(UTC)
    entries = [Entry(inbox_id=n, accepted_at=now, alert=a) for n, a in enumerate(alerts)]
    in_context = [read_in_context(e, None, now)[0] for e in entries]
    decisions = [classify(a, cfg.classification) for a in in_context]
    envelopes = [formats._RESOURCES[h["sentry-hook-resource"]].envelope for h, _ in requests]
    # The typed models, each with the resource's spec and what its action means: what the
    # mapping to the alert's fields starts from.
    site = formats._site(base_url, org)
    typed = []
    for (headers, body), envelope in zip(requests, envelopes, strict=True):
        resource = headers["sentry-hook-resource"]
        spec, validated = formats._RESOURCES[resource], envelope.model_validate_json(body)
        state = formats._state(spec, resource, validated.action)
        assert isinstance(state, State), "every bench record's action makes an alert"
        typed.append((spec, validated, state))

    stages: list[tuple[str, Callable[[], object]]] = [
        (
            "edge: signature (HMAC-SHA256)",
            lambda: [sentry.authenticate(h, b, None, cfg.sentry) for h, b in requests],
        ),
        ("edge: body digest (SHA-256)", lambda: [hashlib.sha256(b).digest() for _, b in requests]),
        ("edge: read (all of it)", read),
        (
            "edge: read, the typed model only",
            lambda: [
                m.model_validate_json(b) for m, (_, b) in zip(envelopes, requests, strict=True)
            ],
        ),
        (
            "edge: read, the mapping only",
            lambda: [
                formats._alert(spec.mapper(m.data, m.action, state, site), None)
                for spec, m, state in typed
            ],
        ),
        ("store: the alert's JSON", lambda: [jsontext.dumps(a.to_json()) for a in alerts]),
        (
            "store: the alert read back",
            lambda: [SentryAlert.from_json(json.loads(t)) for t in texts],
        ),
        ("decide: in context", lambda: [read_in_context(e, None, now) for e in entries]),
        ("decide: classify", lambda: [classify(a, cfg.classification) for a in in_context]),
        (
            "decide: step (a new identity)",
            lambda: [
                step(None, a, d, now, policy) for a, d in zip(in_context, decisions, strict=True)
            ],
        ),
    ]
    print(
        f"stages: {count} bench records, best of {passes} passes, process CPU time, "
        "the bridge's GC settings"
    )
    # The cyclic GC as the bridge runs it (bridge.serve.tune_gc): with the interpreter's
    # defaults, young collections over these thousands of records' objects made the read
    # some 20 % dearer here than in the bridge, its mapping alone some 70 % (issue 15).
    thresholds = gc.get_threshold()
    tune_gc()
    try:
        for name, stage in stages:
            print(f"  {name:36} {_best(stage, passes) / count * 1e6:7.1f} us/webhook")
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
