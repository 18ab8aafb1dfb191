"""Sentry's links: where an alert comes from, and the URLs the bridge builds when none is sent.

Payloads name the organization and project only inside their links, so both are read from
the paths (``/api/0/projects/<org>/<project>/...``, ``/organizations/<org>/...``, Sentry 9's
``/<org>/<project>/issues/<id>/``) or a customer domain (``https://<org>.sentry.io/...``).
Older Sentry named the issue of an event only in its links (``issue_url``
``/api/0/issues/<id>/``, later ``/api/0/organizations/<org>/issues/<id>/``; ``web_url``
``/organizations/<org>/issues/<id>/events/<event>/``, ``/issues/<id>/`` on customer domains):
:func:`issue_id_from` reads it back.

The issue's page is built rather than copied whenever the organization is known: only
``issue.created`` carries the issue's ``web_url`` (state changes send the bare serializer), and
an event's ``web_url`` (``/organizations/<org>/issues/<id>/events/<event>/`` on ``absolute_uri``)
is not the form a customer-domain Sentry serves. :func:`issue_web_url` gives the form each
Sentry serves: ``https://<org>.sentry.io/issues/<id>/`` on sentry.io
(``Organization.absolute_url`` with customer domains), ``<base>/organizations/<org>/issues/<id>/``
on a self-hosted Sentry.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Iterable
from typing import NamedTuple
from urllib.parse import quote, unquote, urlsplit, urlunsplit

_URL_PATTERNS = (
    re.compile(r"/api/0/projects/(?P<org>[^/]+)/(?P<project>[^/]+)/"),
    re.compile(r"/organizations/(?P<org>[^/]+)/projects/(?P<project>[^/]+)/"),
    re.compile(r"/api/0/organizations/(?P<org>[^/]+)/"),
    re.compile(r"/organizations/(?P<org>[^/]+)/"),
)
# Sentry before 10 linked issues as /<org>/<project>/issues/<id>/.
_OLD_ISSUE_URL = re.compile(r"/(?P<org>[^/]+)/(?P<project>[^/]+)/issues/\d+/?$")
_NOT_SLUGS = frozenset(("api", "organizations", "settings", "0", "issues", "projects"))
_NOT_ORG_HOSTS = frozenset(("www", "us", "de", "api"))  # region and site hosts, not orgs


@dataclasses.dataclass(frozen=True, slots=True)
class Site:
    """The Sentry the bridge serves: ``sentry.base_url`` (no trailing slash) and, when the
    config names it, ``sentry.organization`` (else links in the payload tell)."""

    base_url: str
    organization: str | None = None


# The issue in a link's path: /issues/<id>/ in every form above (ids are numeric).
_ISSUE_ID = re.compile(r"/issues/(?P<id>\d{1,20})(?:/|$)")
_SAAS_HOST = "sentry.io"


# A plain link: http(s) in lower case, a host of letters, digits, dots and hyphens (no
# userinfo, port or IPv6 brackets), a path with nothing urlsplit takes out (tab, CR, LF),
# then the end or a query or fragment. Most links Sentry sends are plain; their parts are
# read off the text, the same parts urlsplit gives (tests/sentry/test_links.py checks it
# against urllib), at a fraction of its cost (issue 15's profile: ``_web_url`` 22 us).
_PLAIN = re.compile(r"(https?)://([A-Za-z0-9.-]+)(/[^?#\t\r\n]*)?")


def _plain(url: str) -> re.Match[str] | None:
    """The scheme, host and path of a plain link (what comes after is a query or fragment)."""
    m = _PLAIN.match(url)
    return m if m is not None and (m.end() == len(url) or url[m.end()] in "?#") else None


class _Parts(NamedTuple):
    """What the bridge reads of a link: urlsplit's fields, ``hostname`` lower-cased."""

    scheme: str
    netloc: str
    path: str
    hostname: str


@functools.lru_cache(maxsize=1024)
def _parts(url: str) -> _Parts | None:
    """``url`` split, or None where urllib refuses it. Cached: one webhook reads the same
    few links up to four times (org and project, issue id, origin, link check)."""
    plain = _plain(url)
    if plain is not None:
        scheme, netloc, path = plain.groups(default="")
        return _Parts(scheme, netloc, path, netloc.lower())
    try:
        parts = urlsplit(url)
        return _Parts(parts.scheme, parts.netloc, parts.path, parts.hostname or "")
    except ValueError:
        return None


def strip_query(url: str) -> str:
    """Query strings and fragments carry session ids and emails; keep scheme, host and path."""
    plain = _plain(url)
    if plain is not None:
        return url[: plain.end()]  # what urlunsplit would give back
    try:
        parts = urlsplit(url)
    except ValueError:
        return url.split("?")[0].split("#")[0]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


@functools.lru_cache(maxsize=8)
def _host(base_url: str) -> str:
    return urlsplit(base_url).hostname or ""


def locate(urls: Iterable[str | None], base_url: str) -> tuple[str | None, str | None]:
    """Organization and project slugs from the first links that carry them."""
    org: str | None = None
    project: str | None = None
    base_host = _host(base_url)
    for url in urls:
        parts = _parts(url) if url else None
        if parts is None:
            continue
        path = parts.path if parts.path.endswith("/") else parts.path + "/"
        for pattern in _URL_PATTERNS:
            m = pattern.search(path)
            if m:
                org = org or unquote(m["org"])
                if "project" in m.groupdict():
                    project = project or unquote(m["project"])
        m = _OLD_ISSUE_URL.search(parts.path) if "/organizations/" not in path else None
        if m and m["org"] not in _NOT_SLUGS and m["project"] not in _NOT_SLUGS:
            org, project = org or unquote(m["org"]), project or unquote(m["project"])
        host = parts.hostname
        sub = host.removesuffix("." + base_host) if base_host else host
        if base_host and sub != host and "." not in sub and sub not in _NOT_ORG_HOSTS:
            org = org or sub
        if org and project:
            break  # later links cannot change what the first ones said
    return org, project


def http_url(url: str | None) -> str | None:
    """``url`` when it is an absolute http(s) URL (the only links Alertmanager takes as a
    ``generatorURL``), else None."""
    if not url or " " in url or "\t" in url or "\r" in url or "\n" in url or "\x00" in url:
        return None
    parts = _parts(url)
    return (
        url if parts is not None and parts.scheme in ("http", "https") and parts.hostname else None
    )


def issue_id_from(urls: Iterable[str | None]) -> str | None:
    """The issue id in the first link that names one."""
    for url in urls:
        parts = _parts(url) if url else None
        if parts is None:
            continue
        m = _ISSUE_ID.search(parts.path)
        if m:
            return m["id"]
    return None


def origin(urls: Iterable[str | None], base_url: str) -> str:
    """Which Sentry sent the links: ``base_url``, unless it is sentry.io and a link names
    another host (a self-hosted Sentry whose ``base_url`` was left at the default); then that
    link's scheme and host. A ``base_url`` set to a self-hosted Sentry is trusted over its
    links, which a wrong ``system.url-prefix`` points at ``localhost``."""
    if not _is_saas(base_url):
        return base_url
    base_host = _host(base_url)
    for url in urls:
        good = http_url(url)
        if good is None:
            continue
        parts = _parts(good)
        assert parts is not None  # http_url split it
        host = parts.hostname
        if host == base_host or host.endswith("." + base_host):
            return base_url
        return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
    return base_url


def _is_saas(base_url: str) -> bool:
    host = _host(base_url)
    return host == _SAAS_HOST or host.endswith("." + _SAAS_HOST)


# What ``quote`` never changes: an issue id, most slugs (skipping it there is most of
# building the issue's two links; issue 15's profile).
_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]+")


def _segment(value: str) -> str:
    # Slugs and ids are read out of the payload: quoted, they cannot add path segments.
    return value if _UNRESERVED.fullmatch(value) else quote(value, safe="")


def issue_api_url(base_url: str, org: str | None, issue_id: str) -> str:
    """Sentry's "Retrieve an Issue" endpoint. The short ``/api/0/issues/<id>/`` route is
    deprecated (issues/endpoints/group_details.py ``GroupDetailsEndpoint.get``:
    ``@deprecated(..., suggested_api="sentry-api-0-organization-group-group-details",
    url_names=["sentry-api-0-group-details"])``): only the fallback when the org is unknown."""
    if org:
        return f"{base_url}/api/0/organizations/{_segment(org)}/issues/{_segment(issue_id)}/"
    return f"{base_url}/api/0/issues/{_segment(issue_id)}/"


def issue_web_url(base_url: str, org: str | None, issue_id: str) -> str | None:
    """The issue's page in Sentry's UI, in the form that Sentry serves; it needs the
    organization. An org slug is a DNS label on sentry.io (``[a-z0-9-]``); anything else
    gets the path form, which sentry.io redirects."""
    if not org:
        return None
    if _is_saas(base_url) and _ORG_LABEL.match(org):
        return f"https://{org}.{_SAAS_HOST}/issues/{_segment(issue_id)}/"
    return f"{base_url}/organizations/{_segment(org)}/issues/{_segment(issue_id)}/"


_ORG_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
