"""Webhooks about an issue or one of its events, as the internal alert.

Two shapes carry an issue: an event (``event_alert``, ``error``, service hooks, the legacy
plugin) or the serialized issue itself (``issue``, ``activity_alert``). ``_from_event`` and
``_from_issue`` read each shape once; the functions per resource add what their envelope knows.
The integration-platform functions take ``(parsed, action, state, base_url)``: ``parsed`` is the
validated ``data`` of the body, ``state`` is what the action means (``bridge.sentry`` decides),
refined here only where the payload says more. Every function returns the alert's fields, so
``bridge.sentry`` builds each :class:`SentryAlert` once (no copies on the request path).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bridge.errors import BadPayload
from bridge.model import Kind, State
from bridge.sentry import event
from bridge.sentry.links import issue_api_url, issue_web_url, locate, strip_query
from bridge.sentry.wire import (
    ActivityAlertData,
    ErrorData,
    EventAlertData,
    IssueData,
    LegacyBody,
    ServiceHookBody,
    WireEvent,
    WireIssue,
    WireProject,
    WireRuleRef,
    parse,
)

Fields = dict[str, Any]  # keyword arguments of SentryAlert

# --- the two shapes ----------------------------------------------------------------------


def _from_event(
    ev: WireEvent,
    *,
    resource: str,
    action: str,
    state: State,
    base_url: str,
    issue_id: str | None = None,
    project_slug: str | None = None,
    links: Iterable[str | None] = (),
) -> Fields:
    """What every event-carrying webhook says; ``issue_id``, ``project_slug`` and ``links``
    come from the envelope around the event when it has them."""
    issue_id = issue_id or ev.issue_id
    if not issue_id:
        raise BadPayload("invalid_payload", f"{resource}: the event names no issue")
    tags = event.tags(ev.tags)
    tag_map = dict(tags)
    org, slug = locate((ev.url, ev.web_url, ev.issue_url, *links), base_url)
    title = ev.title or event.metadata_title(ev.metadata) or ev.message
    return dict(
        resource=resource,
        action=action,
        kind=Kind.ISSUE,
        state=state,
        identity=f"issue:{issue_id}",
        title=title or f"Sentry issue {issue_id}",
        organization=org,
        project=project_slug or slug or ev.project,
        project_id=ev.project,
        environment=ev.environment or tag_map.get("environment"),
        issue_id=issue_id,
        event_id=ev.event_id,
        level=ev.level or tag_map.get("level"),
        platform=ev.platform,
        culprit=ev.culprit,
        transaction=ev.transaction or tag_map.get("transaction"),
        url=event.request_url(ev, tag_map),
        release=event.release(ev, tag_map),
        handled=event.handled(ev, tag_map),
        tags=tags,
        message=ev.message or None,
        web_url=ev.web_url,
        issue_api_url=ev.issue_url or issue_api_url(base_url, org, issue_id),
        started_at=event.timestamp(ev.when) or event.timestamp(ev.timestamp),
    )


def _from_issue(
    issue: WireIssue, *, resource: str, action: str, state: State, base_url: str
) -> Fields:
    project = issue.project or WireProject()
    org, slug = locate((issue.url, issue.web_url, issue.permalink, issue.project_url), base_url)
    return dict(
        resource=resource,
        action=action,
        kind=Kind.ISSUE,
        state=state,
        identity=f"issue:{issue.id}",
        title=issue.title or event.metadata_title(issue.metadata) or f"Sentry issue {issue.id}",
        organization=org,
        project=project.slug or slug or project.id,
        project_id=project.id,
        issue_id=issue.id,
        short_id=issue.short_id,
        level=issue.level,
        platform=issue.platform,
        culprit=issue.culprit,
        users=issue.user_count,
        events=issue.count,
        web_url=issue.web_url or issue.permalink or issue_web_url(base_url, org, issue.id),
        issue_api_url=issue.url or issue_api_url(base_url, org, issue.id),
        started_at=event.timestamp(issue.first_seen),
    )


# --- integration platform -------------------------------------------------------------

# activity_registry/sentry_app.py ActivityAlertType: status changes that end the issue.
_ACTIVITY_RESOLVING = frozenset(
    (
        "status_resolved",
        "status_resolved_in_release",
        "status_resolved_by_age",
        "status_resolved_in_commit",
        "status_ignored",
    )
)


def event_alert(parsed: EventAlertData, action: str, state: State, base_url: str) -> Fields:
    rule = parsed.issue_alert or WireRuleRef()
    fields = _from_event(
        parsed.event, resource="event_alert", action=action, state=state, base_url=base_url
    )
    fields["alert_rule_id"] = rule.id
    fields["alert_rule_name"] = parsed.triggered_rule or rule.title
    return fields


def error(parsed: ErrorData, action: str, state: State, base_url: str) -> Fields:
    return _from_event(
        parsed.error, resource="error", action=action, state=state, base_url=base_url
    )


def issue(parsed: IssueData, action: str, state: State, base_url: str) -> Fields:
    return _from_issue(
        parsed.issue, resource="issue", action=action, state=state, base_url=base_url
    )


def activity_alert(parsed: ActivityAlertData, action: str, state: State, base_url: str) -> Fields:
    # Activity alerts also fire on status changes; a resolution must not raise an alert.
    if parsed.activity.type in _ACTIVITY_RESOLVING:
        state = State.RESOLVED
    fields = _from_issue(
        parsed.issue, resource="activity_alert", action=action, state=state, base_url=base_url
    )
    rule = parsed.alert or WireRuleRef()
    fields["alert_rule_id"] = rule.id
    fields["alert_rule_name"] = rule.title
    return fields


# --- service hooks and the legacy plugin: an event inside an envelope ---------------------


def service_hook(data: object, base_url: str) -> Fields:
    body = parse(ServiceHookBody, data, "service_hook")
    group, group_project = body.group, body.group.project or WireProject()
    fields = _from_event(
        body.event,
        resource="service_hook",
        action="event",
        state=State.FIRING,
        base_url=base_url,
        issue_id=group.id,
        project_slug=(body.project or WireProject()).slug or group_project.slug,
        links=(group.url, group.permalink),
    )
    fields["project_id"] = fields["project_id"] or group_project.id
    fields["level"] = fields["level"] or group.level
    fields["web_url"] = body.event.url or group.url or group.permalink
    fields["short_id"] = group.short_id
    fields["users"] = group.user_count
    fields["events"] = group.count
    return fields


def legacy(data: object, base_url: str) -> Fields:
    body = parse(LegacyBody, data, "legacy")
    fields = _from_event(
        body.event,
        resource="legacy",
        action="triggered",
        state=State.FIRING,
        base_url=base_url,
        issue_id=body.id,
        project_slug=body.project_slug or body.project,
        links=(body.url,),
    )
    fields["web_url"] = strip_query(body.url) if body.url else None
    fields["level"] = body.level or fields["level"]
    fields["culprit"] = body.culprit or fields["culprit"]
    fields["alert_rule_name"] = ", ".join(body.triggering_rules) or None
    return fields
