"""Sentry's links: where an alert comes from, and the URLs the bridge builds when none is sent.

Payloads name the organization and project only inside their links, so both are read from
the paths (``/api/0/projects/<org>/<project>/...``, ``/organizations/<org>/...``, Sentry 9's
``/<org>/<project>/issues/<id>/``) or a customer domain (``https://<org>.sentry.io/...``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
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


def strip_query(url: str) -> str:
    """Query strings and fragments carry session ids and emails; keep scheme, host and path."""
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
        if not url:
            continue
        try:
            parts = urlsplit(url)
        except ValueError:
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
        host = parts.hostname or ""
        sub = host.removesuffix("." + base_host) if base_host else host
        if base_host and sub != host and "." not in sub and sub not in _NOT_ORG_HOSTS:
            org = org or sub
        if org and project:
            break  # later links cannot change what the first ones said
    return org, project


def _segment(value: str) -> str:
    # Slugs and ids are read out of the payload: quoted, they cannot add path segments.
    return quote(value, safe="")


def issue_api_url(base_url: str, org: str | None, issue_id: str) -> str:
    """Sentry's "Retrieve an Issue" endpoint. The short ``/api/0/issues/<id>/`` route is
    deprecated (issues/endpoints/group_details.py ``GroupDetailsEndpoint.get``:
    ``@deprecated(..., suggested_api="sentry-api-0-organization-group-group-details",
    url_names=["sentry-api-0-group-details"])``): only the fallback when the org is unknown."""
    if org:
        return f"{base_url}/api/0/organizations/{_segment(org)}/issues/{_segment(issue_id)}/"
    return f"{base_url}/api/0/issues/{_segment(issue_id)}/"


def issue_web_url(base_url: str, org: str | None, issue_id: str) -> str | None:
    """The issue's page in Sentry's UI; it needs the organization."""
    if not org:
        return None
    return f"{base_url}/organizations/{_segment(org)}/issues/{_segment(issue_id)}/"
