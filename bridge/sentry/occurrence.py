"""Issue-platform issues: what kind of issue it is, and the evidence Sentry shows for it.

Uptime monitor failures, cron check-in failures, performance and metric issues are not error
events: Sentry's issue platform creates them from an *occurrence*
(src/sentry/issues/issue_occurrence.py ``IssueOccurrence``), and an ``event_alert`` about one
carries it as ``data.event.occurrence``, its keys camel-cased (sentry_apps/tasks/sentry_apps.py
``_webhook_event_data``: ``convert_dict_key_case(event.occurrence.to_dict(),
snake_to_camel_case)``, recursively): ``issueTitle``, ``subtitle``, ``evidenceDisplay``
(``[{name, value, important}]``), ``evidenceData``, ``type`` (the group type's id), ``level``
(``DEFAULT_LEVEL = "info"`` when the producer set none), ``culprit``, ``detectionTime``.
Older bodies have the snake_case keys of ``to_dict`` itself; both are read.
"""

from __future__ import annotations

import dataclasses
from typing import Any

# The group-type registry: type_id -> (category, slug). Categories are GroupCategory's names,
# lower-cased as the issue serializer sends ``issueCategory``; slugs are ``issueType``.
# src/sentry/issues/grouptype.py (GroupCategory; ErrorGroupType, Performance*, Profile*,
# Replay*, FeedbackGroup), src/sentry/monitors/grouptype.py (MonitorIncidentType; 4002 and 4003
# are its deprecated aliases), src/sentry/uptime/grouptype.py (UptimeDomainCheckFailure),
# src/sentry/incidents/grouptype.py (MetricIssue), src/sentry/notifications/
# notification_action/grouptype.py (SendTestNotification: the "Test Issue" of the alert
# builder's "Send Test Notification", 9001; an earlier revision numbered it 9888). Profile
# types were merged into the performance category. An id not listed gives no category or
# type: nothing is guessed.
TEST_CATEGORY, TEST_TYPE = "test_notification", "send-test-notification"
GROUP_TYPES: dict[int, tuple[str, str]] = {
    1: ("error", "error"),
    1001: ("performance", "performance_slow_db_query"),
    1004: ("performance", "performance_render_blocking_asset_span"),
    1006: ("performance", "performance_n_plus_one_db_queries"),
    1007: ("performance", "performance_consecutive_db_queries"),
    1008: ("performance", "performance_file_io_main_thread"),
    1009: ("performance", "performance_consecutive_http"),
    1010: ("performance", "performance_n_plus_one_api_calls"),
    1011: ("performance", "performance_m_n_plus_one_db_queries"),
    1012: ("performance", "performance_uncompressed_assets"),
    1013: ("performance", "performance_db_main_thread"),
    1015: ("performance", "performance_large_http_payload"),
    1016: ("performance", "performance_http_overhead"),
    1017: ("performance", "performance_duration_regression"),
    1018: ("performance", "performance_p95_endpoint_regression"),
    1019: ("performance", "performance_streamed_spans_exp"),
    2001: ("performance", "profile_file_io_main_thread"),
    2002: ("performance", "profile_image_decode_main_thread"),
    2003: ("performance", "profile_json_decode_main_thread"),
    2004: ("performance", "profile_core_data_main_exp"),
    2006: ("performance", "profile_view_is_slow_experimental"),
    2007: ("performance", "profile_regex_main_thread"),
    2008: ("performance", "profile_frame_drop_experimental"),
    2009: ("performance", "profile_frame_drop"),
    2010: ("performance", "profile_function_regression_exp"),
    2011: ("performance", "profile_function_regression"),
    4001: ("cron", "monitor_check_in_failure"),
    4002: ("cron", "monitor_check_in_failure"),
    4003: ("cron", "monitor_check_in_failure"),
    5001: ("replay", "replay_click_dead"),
    5002: ("replay", "replay_click_rage"),
    5003: ("replay", "replay_hydration_error"),
    6001: ("feedback", "feedback"),
    7001: ("uptime", "uptime_domain_failure"),
    8001: ("metric_alert", "metric_issue"),
    8002: ("metric_alert", "metric_issue_poc"),
    9001: (TEST_CATEGORY, TEST_TYPE),
    9888: (TEST_CATEGORY, TEST_TYPE),
}
DEFAULT_LEVEL = "info"  # issue_occurrence.py DEFAULT_LEVEL

# Evidence goes into an annotation: a few pairs of short text, the important one first.
MAX_EVIDENCE = 6
MAX_EVIDENCE_NAME = 40
MAX_EVIDENCE_VALUE = 200


@dataclasses.dataclass(frozen=True, slots=True)
class Occurrence:
    title: str | None = None
    subtitle: str | None = None
    level: str | None = None
    culprit: str | None = None
    category: str | None = None
    type: str | None = None
    evidence: tuple[tuple[str, str], ...] = ()


def _get(data: dict[str, Any], camel: str, snake: str) -> Any:
    return data[camel] if camel in data else data.get(snake)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _short(text: str, limit: int) -> str:
    # Truncated here, before anything downstream runs a regex over it.
    text = " ".join(text[: limit * 2].split())  # control characters and newlines become spaces
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _evidence(raw: Any) -> tuple[tuple[str, str], ...]:
    rows = (
        [row for row in raw[: MAX_EVIDENCE * 4] if isinstance(row, dict)]
        if isinstance(raw, list)
        else []
    )
    rows.sort(key=lambda row: row.get("important") is not True)  # stable: important first
    pairs: list[tuple[str, str]] = []
    for row in rows:
        name, value = row.get("name"), row.get("value")
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(name, str) or not isinstance(value, str) or not name.strip():
            continue
        pairs.append((_short(name, MAX_EVIDENCE_NAME), _short(value, MAX_EVIDENCE_VALUE)))
        if len(pairs) == MAX_EVIDENCE:
            break
    return tuple(pairs)


def group_type(type_id: Any) -> tuple[str | None, str | None]:
    """Category and slug of a group type id (an int, or its text)."""
    if isinstance(type_id, str) and type_id.isdigit() and len(type_id) < 8:
        type_id = int(type_id)
    if isinstance(type_id, int) and not isinstance(type_id, bool):
        return GROUP_TYPES.get(type_id, (None, None))
    return None, None


def read(raw: Any) -> Occurrence | None:
    """The occurrence of an issue-platform event, or None for an error event."""
    if not isinstance(raw, dict):
        return None
    category, slug = group_type(raw.get("type"))
    return Occurrence(
        title=_text(_get(raw, "issueTitle", "issue_title")),
        subtitle=_text(raw.get("subtitle")),
        level=_text(raw.get("level")),
        culprit=_text(raw.get("culprit")),
        category=category,
        type=slug,
        evidence=_evidence(_get(raw, "evidenceDisplay", "evidence_display")),
    )
