"""What Sentry has told the bridge about one issue, and a webhook read in that context.

A Sentry issue spans environments, and its webhooks say different parts of it: an
``event_alert`` names the event's environment, release and tags but no user count; the
issue's own ``issue.created`` / ``issue.unresolved`` webhook names the user and event
counts but no environment, and some Sentry versions no link. Judged alone, the issue
webhook of an issue firing in ``staging`` would fall past a ``non-production`` rule (its
environment is unknown) and page. So (issue 16, docs/classification.md "The issue's
context"):

* the identity's state keeps an :class:`IssueContext`: the latest value Sentry sent of
  each field below, scrubbed like labels and bounded (``MAX_TAGS`` tags);
* :func:`fill` gives a webhook the known value of each field it does not carry (its own
  fields always win) and names the fields it filled, for ``explain`` and the log;
* the environment a webhook lacks is the one the issue's alert fires in (its label), else
  the last one Sentry named for the issue: never ``unknown`` while one is known.

Pure: no clock, no I/O. Only issue identities have a context; metric alerts are whole.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bridge.model import Kind, SentryAlert, evolve
from bridge.scrub import scrub

TEXT_MAX = 128  # as a label value (bridge.labels.LABEL_MAX): names, not messages
LINK_MAX = 2048  # a link longer than this is not kept
MAX_TAGS = 32  # tags of the latest event kept, in the event's order
MAX_ENVIRONMENTS = 10  # environments kept per identity (IdentityState.environments too)

# The text fields kept, as named on SentryAlert; links (web_url, issue_api_url) apart.
TEXTS = (
    "organization",
    "project",
    "project_id",
    "environment",
    "platform",
    "level",
    "release",
    "issue_category",
    "issue_type",
)
LINKS = ("web_url", "issue_api_url")
COUNTS = ("users", "events")
FIELDS = (*TEXTS, *LINKS, *COUNTS, "tags")


@functools.lru_cache(maxsize=4096)
def _scrubbed_tag(tag: tuple[str, str]) -> tuple[str, str]:
    """A tag as the context keeps it. Remembered: most tags (browser, level, environment)
    repeat from webhook to webhook, and a lookup costs a tenth of two ``scrub`` calls (a
    pure function; bounded)."""
    key, value = tag
    return scrub(key, TEXT_MAX), scrub(value, TEXT_MAX)


@dataclass(frozen=True, slots=True, kw_only=True)
class IssueContext:
    """The latest value Sentry sent of each field, None (or no tags) while never sent."""

    organization: str | None = None
    project: str | None = None
    project_id: str | None = None
    environment: str | None = None  # the last environment Sentry named for the issue
    platform: str | None = None
    level: str | None = None
    release: str | None = None
    issue_category: str | None = None
    issue_type: str | None = None
    web_url: str | None = None
    issue_api_url: str | None = None
    users: int | None = None
    events: int | None = None
    tags: tuple[tuple[str, str], ...] = ()

    def learn(self, alert: SentryAlert) -> IssueContext:
        """This context with what ``alert`` says itself (never what :func:`fill` gave it:
        the environment its alert fires in is not one Sentry named last); ``self`` when it
        says nothing new, so an unchanged state stays the same object."""
        changes: dict[str, Any] = {}
        skip = alert.from_context
        for name in TEXTS:
            value = None if name in skip else getattr(alert, name)
            if value is not None and value != getattr(self, name):
                kept = scrub(value, TEXT_MAX) or None
                if kept != getattr(self, name):
                    changes[name] = kept
        for name in LINKS:
            value = None if name in skip else getattr(alert, name)
            if value is not None and value != getattr(self, name) and len(value) <= LINK_MAX:
                changes[name] = value
        for name in COUNTS:
            value = None if name in skip else getattr(alert, name)
            if value is not None and value != getattr(self, name):
                changes[name] = value
        if alert.tags and "tags" not in skip and alert.tags[:MAX_TAGS] != self.tags:
            tags = tuple(map(_scrubbed_tag, alert.tags[:MAX_TAGS]))
            if tags != self.tags:
                changes["tags"] = tags
        return evolve(self, **changes) if changes else self

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for name in (*TEXTS, *LINKS, *COUNTS):
            value = getattr(self, name)
            if value is not None:
                data[name] = value
        if self.tags:
            data["tags"] = [list(pair) for pair in self.tags]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> IssueContext:
        if not data:
            return EMPTY
        values: dict[str, Any] = {}
        for name in (*TEXTS, *LINKS):
            if isinstance(data.get(name), str):
                values[name] = data[name]
        for name in COUNTS:
            if isinstance(data.get(name), int):
                values[name] = data[name]
        pairs = data.get("tags") or ()
        values["tags"] = tuple((str(k), str(v)) for k, v in pairs)[:MAX_TAGS]
        return cls(**values)


EMPTY = IssueContext()


def fill(
    alert: SentryAlert, context: IssueContext, firing_environment: str | None = None
) -> tuple[SentryAlert, tuple[str, ...]]:
    """``alert`` with the context's value of each field it lacks, and the names of the
    fields filled (empty: ``alert`` itself, unchanged). ``firing_environment`` is the
    ``environment`` label of the identity's alert firing now, if any: the environment the
    issue pages in, which a webhook naming none is classified as."""
    filled = missing(alert, context, firing_environment)
    if not filled:
        return alert, ()
    return evolve(alert, **filled), filled["from_context"]


def missing(
    alert: SentryAlert, context: IssueContext, firing_environment: str | None = None
) -> dict[str, Any]:
    """What :func:`fill` changes, as ``dataclasses.replace`` arguments (``from_context``
    among them), so a caller changing more fields of the alert copies it once."""
    if alert.kind is not Kind.ISSUE:
        return {}
    filled: dict[str, Any] = {}
    for name in (*TEXTS, *LINKS, *COUNTS):
        if getattr(alert, name) is None:
            known = getattr(context, name)
            if name == "environment" and firing_environment not in (None, "unknown"):
                known = firing_environment
            if known is not None:
                filled[name] = known
    if not alert.tags and context.tags:
        filled["tags"] = context.tags
    if filled:
        filled["from_context"] = tuple(filled)
    return filled
