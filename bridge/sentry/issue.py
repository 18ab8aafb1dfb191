"""Webhooks about an issue or one of its events, as the internal alert.

Two shapes carry an issue: an event (``event_alert``, ``error``, service hooks, the legacy
plugin) or the serialized issue itself (``issue``, ``activity_alert``). ``_from_event`` and
``_from_issue`` read each shape once; the functions per resource add what their envelope knows.
The integration-platform functions take ``(parsed, action, state, site)``: ``parsed`` is the
validated ``data`` of the body, ``state`` is what the action means (``bridge.sentry`` decides),
refined here only where the payload says more, and ``site`` the Sentry it comes from. Every
function returns the alert's fields, so ``bridge.sentry`` builds each :class:`SentryAlert` once
(no copies on the request path), or the :class:`~bridge.model.Ignored` a webhook means.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bridge.errors import BadPayload
from bridge.model import Ignored, Kind, State
from bridge.sentry import event, occurrence, settings
from bridge.sentry.links import (
    Site,
    http_url,
    issue_api_url,
    issue_id_from,
    issue_web_url,
    locate,
    origin,
    strip_query,
)
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

# Sentry's "Send Test Notification" (the alert builder's button) fires the rule's actions for
# a generated "Test Issue": an issue-platform occurrence of group type SendTestNotification
# (sentry/notifications/notification_action/grouptype.py, get_test_notification_event_data)
# or, before the new alert engine, a sample event under a rule that was never saved
# (sentry/api/endpoints/project_rule_actions.py: ``Rule(id=-1, ...)``). Both events are
# tagged ``sample_event: yes`` (sentry/utils/samples.py ``create_sample_event(tagged=True)``).
# Any one sign marks the alert a test: classified low with ``sentry_test="true"``, never paged.
_TEST_RULE_ID = "-1"
_SAMPLE_TAG = ("sample_event", "yes")

# --- the two shapes ----------------------------------------------------------------------


def _web_url(
    site: Site, links: Iterable[str | None], org: str | None, issue_id: str, *fallbacks: str | None
) -> str | None:
    """The issue's page: built for the Sentry that sent it whenever the organization is known
    (``org``: the config's, else the payload links'), else the first http(s) link given."""
    built = issue_web_url(origin(links, site.base_url), org, issue_id)
    return built or next((url for url in map(http_url, fallbacks) if url), None)


def _from_event(
    ev: WireEvent,
    *,
    resource: str,
    action: str,
    state: State,
    site: Site,
    issue_id: str | None = None,
    project_slug: str | None = None,
    links: Iterable[str | None] = (),
) -> Fields:
    """What every event-carrying webhook says; ``issue_id``, ``project_slug`` and ``links``
    come from the envelope around the event when it has them."""
    envelope_links = tuple(links)
    links = (ev.url, ev.web_url, ev.issue_url, *envelope_links)
    # Sentry of 2020 sent no issue_id (captured bodies in tests/fixtures/sentry/captured/):
    # only issue_url (/api/0/issues/<id>/) and web_url name the issue.
    issue_id = issue_id or ev.issue_id or issue_id_from((ev.issue_url, ev.web_url, *envelope_links))
    if not issue_id:
        raise BadPayload("invalid_payload", f"{resource}: the event names no issue")
    tags = event.tags(ev.tags)
    tag_map = dict(tags)
    org, slug = locate(links, site.base_url)
    org = site.organization or org
    found = occurrence.read(ev.occurrence)
    category: str | None
    kind: str | None
    if found is None:  # an error event (transactions were performance issues before 2023)
        category, kind = ("performance", None) if ev.event_type == "transaction" else ("error",) * 2
    else:
        category, kind = found.category, found.type
    occ = found or occurrence.Occurrence()
    title = ev.title or occ.title or event.metadata_title(ev.metadata) or ev.message
    level = ev.level or tag_map.get("level") or occ.level
    when = event.timestamp(ev.when) or event.timestamp(ev.timestamp)
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
        level=level or (occurrence.DEFAULT_LEVEL if found else None),
        platform=ev.platform,
        culprit=ev.culprit or occ.culprit,
        transaction=ev.transaction or tag_map.get("transaction"),
        url=event.request_url(ev, tag_map),
        release=event.release(ev, tag_map),
        handled=event.handled(ev, tag_map),
        tags=tags,
        message=ev.message or occ.subtitle or None,
        issue_category=category,
        issue_type=kind,
        evidence=occ.evidence,
        web_url=_web_url(site, links, org, issue_id, ev.web_url),
        issue_api_url=ev.issue_url or issue_api_url(site.base_url, org, issue_id),
        started_at=when,
        occurred_at=when,
        test=_SAMPLE_TAG in tags or category == occurrence.TEST_CATEGORY,
        received_at=event.timestamp(ev.received),
    )


def _from_issue(
    issue: WireIssue, *, resource: str, action: str, state: State, site: Site
) -> Fields:
    project = issue.project or WireProject()
    links = (issue.url, issue.web_url, issue.permalink, issue.project_url)
    org, slug = locate(links, site.base_url)
    org = site.organization or org
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
        issue_category=issue.issue_category,
        issue_type=issue.issue_type,
        users=issue.user_count,
        events=issue.count,
        web_url=_web_url(site, links, org, issue.id, issue.web_url, issue.permalink),
        issue_api_url=issue.url or issue_api_url(site.base_url, org, issue.id),
        started_at=event.timestamp(issue.first_seen),
        # An issue webhook reports no event; when its change happened is not in the body.
        occurred_at=None,
        test=issue.issue_category == occurrence.TEST_CATEGORY
        or issue.issue_type == occurrence.TEST_TYPE,
    )


# --- integration platform -------------------------------------------------------------

# notification_action/activity_registry/sentry_app.py ActivityAlertType (the status changes
# of sentry/types/activity.py STATUS_CHANGE_ACTIVITY_TYPES): what each means for the alert.
# ``appeared_in_pull_request`` (SET_RESOLVED_IN_PULL_REQUEST) only links a pull request, and
# the ``seer_*`` activities report Seer's analysis: neither changes the issue's state.
_ACTIVITY_STATES = {
    "status_resolved": State.RESOLVED,
    "status_resolved_in_release": State.RESOLVED,
    "status_resolved_by_age": State.RESOLVED,
    "status_resolved_in_commit": State.RESOLVED,
    "status_ignored": State.RESOLVED,
    "status_regression": State.FIRING,
    "status_unresolved": State.FIRING,
    "status_escalating": State.FIRING,
}


def event_alert(parsed: EventAlertData, action: str, state: State, site: Site) -> Fields:
    rule = parsed.issue_alert or WireRuleRef()
    fields = _from_event(
        parsed.event, resource="event_alert", action=action, state=state, site=site
    )
    fields["alert_rule_id"] = rule.id
    fields["alert_rule_name"] = parsed.triggered_rule or rule.title
    fields["rule_settings"] = settings.read(rule.settings)
    if parsed.bridge_test or rule.id == _TEST_RULE_ID:
        fields["test"] = True
    return fields


def error(parsed: ErrorData, action: str, state: State, site: Site) -> Fields:
    return _from_event(parsed.error, resource="error", action=action, state=state, site=site)


def issue(parsed: IssueData, action: str, state: State, site: Site) -> Fields:
    return _from_issue(parsed.issue, resource="issue", action=action, state=state, site=site)


def activity_alert(
    parsed: ActivityAlertData, action: str, state: State, site: Site
) -> Fields | Ignored:
    """Sentry's new alert engine sends an ``activity_alert`` for every activity a workflow
    watches; only status changes move the alert."""
    activity = parsed.activity.type
    if activity not in _ACTIVITY_STATES:
        return Ignored("activity_alert", action, "no_state_change")
    fields = _from_issue(
        parsed.issue,
        resource="activity_alert",
        action=action,
        state=_ACTIVITY_STATES[activity],
        site=site,
    )
    rule = parsed.alert or WireRuleRef()
    fields["alert_rule_id"] = rule.id
    fields["alert_rule_name"] = rule.title
    fields["rule_settings"] = settings.read(rule.settings)
    # Sentry's own escalation signal: the state machine raises the severity one step.
    fields["escalating"] = activity == "status_escalating"
    return fields


# --- service hooks and the legacy plugin: an event inside an envelope ---------------------


def service_hook(data: object, site: Site) -> Fields:
    body = parse(ServiceHookBody, data, "service_hook")
    group, group_project = body.group, body.group.project or WireProject()
    fields = _from_event(
        body.event,
        resource="service_hook",
        action="event",
        state=State.FIRING,
        site=site,
        issue_id=group.id,
        project_slug=(body.project or WireProject()).slug or group_project.slug,
        links=(group.url, group.permalink),
    )
    fields["project_id"] = fields["project_id"] or group_project.id
    fields["level"] = fields["level"] or group.level
    if not fields["organization"]:
        fields["web_url"] = http_url(body.event.url or group.url or group.permalink)
    fields["short_id"] = group.short_id
    fields["issue_category"] = group.issue_category or fields["issue_category"]
    fields["issue_type"] = group.issue_type or fields["issue_type"]
    fields["test"] = fields["test"] or fields["issue_category"] == occurrence.TEST_CATEGORY
    fields["users"] = group.user_count
    fields["events"] = group.count
    return fields


def legacy(data: object, site: Site) -> Fields:
    body = parse(LegacyBody, data, "legacy")
    fields = _from_event(
        body.event,
        resource="legacy",
        action="triggered",
        state=State.FIRING,
        site=site,
        issue_id=body.id,
        project_slug=body.project_slug or body.project,
        links=(body.url,),
    )
    if not fields["organization"]:
        fields["web_url"] = http_url(strip_query(body.url)) if body.url else None
    fields["level"] = body.level or fields["level"]
    fields["culprit"] = body.culprit or fields["culprit"]
    fields["alert_rule_name"] = ", ".join(body.triggering_rules) or None
    return fields
