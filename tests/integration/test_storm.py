"""A storm pages a bounded number of times, and a lone issue pages once, through the routes
the docs recommend (examples/alertmanager.yml) in a real Alertmanager whose receivers post
to a recording webhook receiver, with the bridge in front.

Timers: every ``group_wait`` and ``group_interval`` of the example is divided by
``TIME_SCALE``, so the test takes half a minute, not five. The storm still lasts 10 s, so
against the timers it is ten times longer than a 10 s storm under the shipped ones: the
harder case (more of it arrives after a group's first page)."""

from __future__ import annotations

import math
import re
import time
from pathlib import Path
from typing import Any

import yaml

from bench.payloads import issue_identity, webhooks
from tests.integration import procs
from tests.integration.am import start_alertmanager
from tests.integration.conftest import BridgeFactory
from tests.integration.receiver import Notification, Receiver, recording

EXAMPLE = procs.ROOT / "examples" / "alertmanager.yml"
TIME_SCALE = 10
STORM = 200  # distinct issues of one project (web-frontend: critical by the shipped policy)
STORM_SECONDS = 10.0
LONE_PROJECT = "checkout-web"
# Alertmanager flushes every group once per group_interval: a notification still owed
# would come within one; the margin covers its HTTP round trip on a busy machine.
MARGIN = 3.0
_UNITS = {"s": 1, "m": 60, "h": 3600}


def seconds(duration: str) -> float:
    return float(duration[:-1]) * _UNITS[duration[-1]]


def _scale(route: dict[str, Any]) -> None:
    for key in ("group_wait", "group_interval"):
        if key in route:
            route[key] = f"{seconds(route[key]) / TIME_SCALE:g}s"
    for child in route.get("routes", []):
        _scale(child)


# What the storm's alerts are routed on (the bridge's labels for a critical issue).
CRITICAL = {"source": "sentry", "page": "true", "severity": "critical"}


def _interval(route: dict[str, Any], labels: dict[str, str], inherited: float = 300.0) -> float:
    """The group_interval Alertmanager gives alerts with ``labels``: that of the route
    they land in (the first child whose matchers all hold, recursively), or what it
    inherits (Alertmanager's default is 5m). The example uses equality matchers only."""
    interval = seconds(route["group_interval"]) if "group_interval" in route else inherited
    for child in route.get("routes", []):
        matchers = [re.fullmatch(r'(\w+)="([^"]*)"', m) for m in child.get("matchers", [])]
        assert all(matchers), child
        if all(labels.get(m[1]) == m[2] for m in matchers if m):
            return _interval(child, labels, interval)
    return interval


def example_recorded_by(receiver: Receiver) -> tuple[str, float]:
    """The example's routes and inhibitions as shipped, timers scaled, every receiver a
    webhook to ``receiver``; and the group_interval critical alerts now get."""
    config = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    _scale(config["route"])
    for entry in config["receivers"]:
        entry["webhook_configs"] = [{"url": f"{receiver.url}/{entry['name']}"}]
    return yaml.safe_dump(config), _interval(config["route"], CRITICAL)


def issue_ids(notifications: list[Notification]) -> set[str]:
    return {i for n in notifications for i in n.labels("sentry_issue_id")}


def of_project(notifications: list[Notification], project: str) -> list[Notification]:
    return [n for n in notifications if n.labels("project") == {project}]


def test_a_storm_pages_a_handful_of_times_and_a_lone_issue_once(
    tmp_path: Path, bridge_factory: BridgeFactory
) -> None:
    storm = list(webhooks(STORM, metric_share=0))
    [(_, lone)] = webhooks(1, metric_share=0, start=STORM)
    lone = lone.replace(b"web-frontend", LONE_PROJECT.encode())
    storm_ids = {issue_identity(n).partition(":")[2] for n in range(STORM)}
    lone_id = issue_identity(STORM).partition(":")[2]

    with recording() as receiver:
        config, interval = example_recorded_by(receiver)
        am = start_alertmanager(tmp_path / "alertmanager", procs.free_port(), config)
        with am as am_url, bridge_factory([am_url]) as bridge:
            assert bridge.post(lone, resource="event_alert").status_code == 202
            start = time.monotonic()
            for n, (resource, body) in enumerate(storm):
                # Paced, not waited on: the n-th webhook leaves at its place in the 10 s.
                time.sleep(max(0.0, start + n * STORM_SECONDS / STORM - time.monotonic()))
                assert bridge.post(body, resource=resource).status_code == 202
            receiver.wait_for(lambda seen: issue_ids(seen) >= storm_ids | {lone_id}, 60)
            seen = receiver.wait_quiet(interval + MARGIN)

    stormed = of_project(seen, "web-frontend")
    alone = of_project(seen, LONE_PROJECT)
    print(f"storm of {STORM} issues: {len(stormed)} notifications; lone issue: {len(alone)}")
    assert {n.receiver for n in seen} == {"pager"}, "all critical: they page, only there"
    assert len(stormed) + len(alone) == len(seen)
    # The storm: every issue listed, in at most a handful of pages. One group (one project,
    # one severity): its first page after group_wait, then one per group_interval while
    # issues keep joining, plus one for stragglers still on their way when it fired.
    bound = 1 + math.ceil(STORM_SECONDS / interval) + 1
    assert issue_ids(stormed) == storm_ids
    assert len({n.group_key for n in stormed}) == 1
    assert len(stormed) <= bound, [len(n.alerts) for n in stormed]
    # The lone issue: one page, listing it alone.
    assert [issue_ids([n]) for n in alone] == [{lone_id}]
