"""docs/runbook.md: a section for every alert of the chart's PrometheusRule (what it means,
what is at stake, what to do), and every link into it leads somewhere: the alerts'
``runbook_url`` anchors (tests/test_helm.py), the docs' and the dashboard's links."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from bridge.cli import parser
from bridge.metrics import Metrics
from tests.test_promtool import rule_groups

ROOT = Path(__file__).resolve().parents[1]
RUNBOOK = ROOT / "docs" / "runbook.md"
# Where the runbook is linked from, with its path as written there.
LINKING = [
    *(ROOT / "docs").glob("*.md"),
    ROOT / "README.md",
    ROOT / "helm" / "sentry-alertmanager-bridge" / "README.md",
    ROOT / "dashboards" / "sentry-bridge.json",
]
_LINK = re.compile(r"\]\(([^)\s]+)\)")
_RUNBOOK_ANCHOR = re.compile(r"runbook\.md#([a-z0-9-]+)")


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation out, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def sections() -> dict[str, str]:
    """The runbook's ``## `` sections: heading -> text."""
    parts = re.split(r"^## (.+)$", RUNBOOK.read_text(encoding="utf-8"), flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def alerts() -> list[str]:
    return [rule["alert"] for group in rule_groups() for rule in group["rules"] if "alert" in rule]


def test_every_alert_has_a_section_that_says_what_to_do() -> None:
    text = sections()
    for alert in alerts():
        assert alert in text, f"docs/runbook.md has no section {alert}"
        body = text[alert]
        assert "**Means**" in body, alert
        assert "**At stake**" in body, alert
        # What to do: numbered steps, or a table of causes with an action each.
        steps = re.search(r"^1\. ", body, flags=re.MULTILINE) or "| action |" in body
        assert steps, f"{alert}: nothing says what to do"


def test_no_section_for_an_alert_that_is_gone() -> None:
    named = {heading for heading in sections() if heading.startswith("SentryBridge")}
    assert named == set(alerts())


def test_links_inside_the_runbook_lead_somewhere() -> None:
    anchors = {slug(heading) for heading in sections()}
    for target in _LINK.findall(RUNBOOK.read_text(encoding="utf-8")):
        if target.startswith(("http://", "https://")):
            continue
        path, _, anchor = target.partition("#")
        if not path:
            assert anchor in anchors, f"#{anchor}"
            continue
        assert (RUNBOOK.parent / path).exists(), target


@pytest.mark.parametrize("source", [pytest.param(p, id=p.name) for p in LINKING])
def test_links_into_the_runbook_name_a_section(source: Path) -> None:
    anchors = {slug(heading) for heading in sections()}
    for anchor in _RUNBOOK_ANCHOR.findall(source.read_text(encoding="utf-8")):
        assert anchor in anchors, f"{source.name} links to runbook.md#{anchor}"


def test_a_broken_link_is_caught() -> None:
    anchors = {slug(heading) for heading in sections()}
    assert slug("SentryBridgeQuarantine") in anchors
    assert "sentrybridgequarantined" not in anchors
    assert slug("Testing the rules") == "testing-the-rules"


def test_the_escalation_section_says_what_to_do_either_way() -> None:
    """The tiers have no alert of their own: the section covers a tier that did not fire
    and one that fired wrongly, with steps, and what it names is real."""
    body = sections()["Escalation tiers"]
    parts = re.split(r"^### (.+)$", body, flags=re.MULTILINE)
    cases = dict(zip(parts[1::2], parts[2::2], strict=True))
    assert set(cases) == {"A tier did not fire", "A tier fired that should not have"}
    for case, text in cases.items():
        assert re.search(r"^1\. ", text, flags=re.MULTILINE), case
    missing = cases["A tier did not fire"]
    assert 'sentry_bridge_alerts_total{outcome="acknowledged"}' in missing
    assert "sentry-bridge explain webhook.json --state state.json" in missing
    # The metrics and outcomes it names exist.
    registry = CollectorRegistry()
    Metrics(registry)
    families = {m.name for m in registry.collect()}  # a counter's without "_total"
    samples = {(s.name, s.labels.get("outcome")) for m in registry.collect() for s in m.samples}
    for name, outcome in re.findall(r"(sentry_bridge_\w+)(?:\{outcome=\"(\w+)\"\})?", body):
        assert name.removesuffix("_total") in families, name
        assert not outcome or (name, outcome) in samples, (name, outcome)
    for outcome in ("escalated", "acknowledged", "ignored"):
        assert ("sentry_bridge_alerts_total", outcome) in samples
    # The log lines and the words explain and status print are the bridge's own.
    source = "".join(p.read_text(encoding="utf-8") for p in (ROOT / "bridge").glob("*.py"))
    for words in (
        "cannot ask alertmanager for silences; the steps fire",
        "escalation round failed",
        "cannot accept escalation ticks now",
        "tier(s) fired",
        "next escalation step due at",
        "tier(s) firing",
        "next step due",
    ):
        assert words in body, words
        assert words in source, words
    # explain takes the stored state.
    args = parser().parse_args(["explain", "webhook.json", "--state", "state.json"])
    assert args.state == "state.json"
