"""bridge/sentry/links.py: organization and project from links, URLs built from base_url."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from starlette.datastructures import Headers

from bridge.sentry import links
from tests.sentry_payloads import LEGACY, alert, hook, load_fixture, patched, without


@pytest.mark.parametrize(
    ("url", "org", "project"),
    [
        pytest.param(
            "https://sentry.io/api/0/projects/acme/shop/events/ab/", "acme", "shop", id="api-event"
        ),
        pytest.param(
            "https://sentry.io/organizations/acme/issues/1/", "acme", None, id="organizations"
        ),
        pytest.param(
            "https://sentry.io/api/0/organizations/acme/issues/1/", "acme", None, id="api-issue"
        ),
        pytest.param(
            "https://acme.sentry.io/issues/1/?referrer=webhooks_plugin", "acme", None, id="domain"
        ),
        pytest.param("https://us.sentry.io/api/0/issues/1/", None, None, id="region-host"),
        pytest.param("https://sentry.io/acme/shop/issues/1/", "acme", "shop", id="sentry-9"),
        pytest.param("https://elsewhere.example.com/acme/issues/1/", None, None, id="foreign"),
    ],
)
def test_organization_and_project_from_links(
    url: str, org: str | None, project: str | None
) -> None:
    data = load_fixture("event_alert.json")
    event = data["data"]["event"]
    event["url"] = url
    del event["web_url"], event["issue_url"]
    result = alert(hook("event_alert"), data)
    assert result.organization == org
    assert result.project == (project or "4505321")  # else the event's numeric project id


def test_self_hosted_customer_domain_uses_base_url() -> None:
    data = load_fixture("legacy_webhook.json")
    data["url"] = "https://acme.sentry.example.com/issues/1117540176/"
    result = alert(LEGACY, data, base_url="https://sentry.example.com")
    assert result.organization == "acme"
    assert (
        result.issue_api_url
        == "https://sentry.example.com/api/0/organizations/acme/issues/1117540176/"
    )


def test_issue_without_links_or_organization_gets_the_short_api_url() -> None:
    data = patched("issue_resolved.json", None, "data", "issue", "permalink")
    result = alert(hook("issue"), data, base_url="https://sentry.example.com/")
    assert result.organization is None
    assert result.web_url is None
    assert result.issue_api_url == "https://sentry.example.com/api/0/issues/1117540176/"


ORG_API = "https://sentry.io/api/0/organizations/acme/issues/"


@pytest.mark.parametrize(
    ("headers", "data", "expected"),
    [
        pytest.param(
            hook("event_alert"),
            load_fixture("event_alert.json"),
            "https://sentry.io/api/0/issues/1117540176/",
            id="the-payloads-own-url-wins",
        ),
        pytest.param(
            hook("event_alert"),
            without("event_alert.json", "data", "event", "issue_url"),
            ORG_API + "1117540176/",
            id="event-org-from-its-links",
        ),
        pytest.param(
            hook("issue"),
            without("issue_created.json", "data", "issue", "url"),
            ORG_API + "1117540176/",
            id="issue-org-from-web-url",
        ),
        pytest.param(
            hook("activity_alert"),
            without("activity_alert_status_resolved.json", "data", "issue", "url"),
            ORG_API + "4507718802/",
            id="activity-org-from-web-url",
        ),
        pytest.param(
            LEGACY,
            patched("legacy_webhook.json", "https://sentry.io/ac%2F..%2Fme/web/issues/7/", "url"),
            "https://sentry.io/api/0/organizations/ac%2F..%2Fme/issues/1117540176/",
            id="slug-cannot-add-path-segments",
        ),
        pytest.param(
            LEGACY,
            without("legacy_webhook.json", "url"),
            "https://sentry.io/api/0/issues/1117540176/",
            id="org-unknown-short-route",
        ),
    ],
)
def test_issue_api_url_names_the_organization_when_known(
    headers: Headers, data: dict[str, Any], expected: str
) -> None:
    """Sentry deprecates /api/0/issues/<id>/ for /api/0/organizations/<org>/issues/<id>/."""
    assert alert(headers, data).issue_api_url == expected


def test_issue_web_url_built_when_only_the_api_url_names_the_org() -> None:
    data = without("issue_created.json", "data", "issue", "web_url")
    result = alert(hook("issue"), data)
    assert result.web_url == "https://acme.sentry.io/issues/1117540176/"


# Links as Sentry sends them and as a payload could spell them: schemes in any case, hosts
# with ports, userinfo and brackets, paths with queries, fragments and characters urllib
# strips or refuses.
_LINK_PARTS = st.text(alphabet="aZ09.-_/:@[]?#%= \t\r\n\x00é", max_size=12)
_LINKS = st.builds(
    "".join,
    st.tuples(
        st.sampled_from(("https://", "http://", "HTTPS://", "ftp://", " https://", "//", "")),
        st.sampled_from(("sentry.io", "acme.sentry.io", "Sentry.IO", "", "[::1]", "h:8000")),
        _LINK_PARTS,
        st.sampled_from(("", "/issues/12/", "/organizations/acme/issues/3/events/ab/")),
        _LINK_PARTS,
    ),
)


@given(_LINKS)
@example("https://acme.sentry.io/issues/1/")
@example("https://h:8000/x")
@example("https://u:p@sentry.io/x")
@example("HTTPS://sentry.io/")
@example("https://Sentry.IO/x")
@example("https://sentry.io")
@example("https://sentry.io//x")
@example("https://[::1/x")
@example("https://a.b/p\tq")
def test_links_are_read_as_urllib_reads_them(url: str) -> None:
    """The plain-link shortcut splits and strips exactly as urllib does; a difference is a
    change of an alert's org, project, issue id or link."""
    try:
        parts = urlsplit(url)
    except ValueError:
        assert links._parts(url) is None
        assert links.strip_query(url) == url.split("?")[0].split("#")[0]
        return
    assert links._parts(url) == (parts.scheme, parts.netloc, parts.path, parts.hostname or "")
    assert links.strip_query(url) == urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


@given(st.text(alphabet="aZ09._~-/%?#@: é\x00", max_size=16))
@example("1117540176")
@example("acme-corp")
@example("a/b")
@example("")
def test_a_path_segment_is_quoted_as_urllib_quotes_it(value: str) -> None:
    """Ids and slugs that need no quoting skip ``quote``; every value comes out as it would."""
    assert links._segment(value) == quote(value, safe="")
