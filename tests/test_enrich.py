"""bridge/enrich.py against a real HTTP server on loopback (tests/sentry_api.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from bridge.config import Sentry
from bridge.enrich import Enricher
from bridge.errors import ConfigError
from bridge.metrics import ENRICH_RESULTS, Metrics
from bridge.model import Kind
from tests.clock import Ticks
from tests.factories import sentry_alert as alert
from tests.sentry_api import FakeSentryAPI, issue_body

pytestmark = pytest.mark.anyio

TOKEN = "sntrys_test_token"


@pytest.fixture
def api() -> Iterator[FakeSentryAPI]:
    with FakeSentryAPI() as server:
        yield server


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@contextlib.asynccontextmanager
async def enricher(
    api: FakeSentryAPI | str,
    registry: CollectorRegistry,
    clock: Ticks | None = None,
    **cfg: Any,
) -> AsyncIterator[Enricher]:
    """An Enricher for the fake (or a base URL), closed on exit; ``cfg`` overrides."""
    base_url = api if isinstance(api, str) else api.url
    settings: dict[str, Any] = {"base_url": base_url, "api_token": TOKEN, "api_timeout": 5.0}
    settings.update(cfg)
    e = Enricher(Sentry(**settings), Metrics(registry), clock=clock or Ticks())
    try:
        yield e
    finally:
        await e.aclose()


def results(registry: CollectorRegistry) -> dict[str, float]:
    """The enrichment counter's non-zero results, so a test states all of them."""
    out = {}
    for result in ENRICH_RESULTS:
        value = registry.get_sample_value(
            "sentry_bridge_enrichment_requests_total", {"result": result}
        )
        assert value is not None, f"result {result} is not pre-initialised"
        if value:
            out[result] = value
    return out


def cache_entries(registry: CollectorRegistry) -> float | None:
    return registry.get_sample_value("sentry_bridge_cache_entries", {"cache": "sentry_api"})


# --- success --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload_url", "expected_path"),
    [
        pytest.param(None, "/api/0/issues/42/", id="no-issue-url-built-from-base-url"),
        pytest.param("/api/0/issues/42/", "/api/0/issues/42/", id="issue-url"),
        pytest.param(
            "/api/0/organizations/acme/issues/42/",
            "/api/0/organizations/acme/issues/42/",
            id="organization-issue-url",
        ),
    ],
)
async def test_counts_filled_from_the_issue(
    api: FakeSentryAPI, registry: CollectorRegistry, payload_url: str | None, expected_path: str
) -> None:
    api.issue("42", users=12, events=340)
    issue_api_url = api.url + payload_url if payload_url else None
    async with enricher(api, registry) as e:
        enriched = await e.enrich(alert(issue_api_url=issue_api_url))

    assert (enriched.users, enriched.events) == (12, 340)  # "count": "340" parsed
    assert enriched == alert(issue_api_url=issue_api_url).with_counts(users=12, events=340)
    [seen] = api.requests
    assert seen.method == "GET"
    assert seen.path == expected_path
    assert seen.authorization == f"Bearer {TOKEN}"
    assert results(registry) == {"fetched": 1}
    assert cache_entries(registry) == 1


async def test_base_url_path_prefix_is_kept(
    api: FakeSentryAPI, registry: CollectorRegistry
) -> None:
    api.reply("/sentry/api/0/issues/42/", body=issue_body("42", users=2, events=3))
    async with enricher(api, registry, base_url=api.url + "/sentry") as e:
        enriched = await e.enrich(alert())

    assert (enriched.users, enriched.events) == (2, 3)
    assert [seen.path for seen in api.requests] == ["/sentry/api/0/issues/42/"]


@pytest.mark.parametrize(
    ("users", "events", "expected"),
    [
        pytest.param(7, None, (7, None), id="only-user-count"),
        pytest.param(None, "81", (None, 81), id="only-count"),
        pytest.param(7, 81, (7, 81), id="count-as-a-number"),
        pytest.param(0, "0", (0, 0), id="zeros-are-counts"),
    ],
)
async def test_counts_sent_partially_or_as_numbers(
    api: FakeSentryAPI,
    registry: CollectorRegistry,
    users: int | None,
    events: int | str | None,
    expected: tuple[int | None, int | None],
) -> None:
    body = issue_body("42", users=users, events=None)
    if events is not None:
        body["count"] = events  # as given: a number or a string
    api.issue("42", body=body)
    async with enricher(api, registry) as e:
        enriched = await e.enrich(alert())

    assert (enriched.users, enriched.events) == expected
    assert results(registry) == {"fetched": 1}


@pytest.mark.parametrize(
    ("known", "expected"),
    [
        pytest.param({"users": 3}, (3, 340), id="payload-users-kept"),
        pytest.param({"events": 5}, (12, 5), id="payload-events-kept"),
    ],
)
async def test_counts_in_the_payload_win(
    api: FakeSentryAPI,
    registry: CollectorRegistry,
    known: dict[str, int],
    expected: tuple[int, int],
) -> None:
    api.issue("42", users=12, events=340)
    async with enricher(api, registry) as e:
        enriched = await e.enrich(alert(**known))

    assert (enriched.users, enriched.events) == expected
    assert results(registry) == {"fetched": 1}


# --- cache and single-flight ----------------------------------------------------------------


async def test_cache_hit_then_refetch_after_ttl(
    api: FakeSentryAPI, registry: CollectorRegistry
) -> None:
    clock = Ticks()
    api.issue("42", users=12, events=340)
    async with enricher(api, registry, clock, api_cache_ttl=60) as e:
        first = await e.enrich(alert())
        api.issue("42", users=20, events=500)  # Sentry's numbers move on

        clock.now += 59
        cached = await e.enrich(alert())
        assert len(api.requests) == 1
        assert (cached.users, cached.events) == (first.users, first.events) == (12, 340)
        assert results(registry) == {"fetched": 1, "hit": 1}

        clock.now += 2  # 61 s after the look-up: expired
        assert cache_entries(registry) == 1
        fresh = await e.enrich(alert())

    assert len(api.requests) == 2
    assert (fresh.users, fresh.events) == (20, 500)
    assert results(registry) == {"fetched": 2, "hit": 1}


async def test_cache_is_per_issue(api: FakeSentryAPI, registry: CollectorRegistry) -> None:
    api.issue("42", users=12, events=340)
    api.issue("43", users=1, events=2)
    async with enricher(api, registry) as e:
        a = await e.enrich(alert())
        b = await e.enrich(alert(issue_id="43", identity="issue:43"))

    assert (a.users, b.users) == (12, 1)
    assert len(api.requests) == 2
    assert cache_entries(registry) == 2


async def test_cache_size_is_bounded(api: FakeSentryAPI, registry: CollectorRegistry) -> None:
    for issue in ("1", "2", "3"):
        api.issue(issue, users=1, events=1)
    async with enricher(api, registry, api_cache_size=2) as e:
        for issue in ("1", "2", "3"):
            await e.enrich(alert(issue_id=issue))

    assert cache_entries(registry) == 2


async def test_failures_are_not_cached(api: FakeSentryAPI, registry: CollectorRegistry) -> None:
    api.issue("42", status=500)
    async with enricher(api, registry) as e:
        failed = await e.enrich(alert())
        api.issue("42", users=12, events=340)
        recovered = await e.enrich(alert())

    assert failed.users is None
    assert recovered.users == 12
    assert len(api.requests) == 2
    assert results(registry) == {"error": 1, "fetched": 1}


async def test_concurrent_lookups_of_one_issue_make_one_request(
    api: FakeSentryAPI, registry: CollectorRegistry
) -> None:
    api.issue("42", users=12, events=340)
    async with enricher(api, registry) as e:
        enriched = await asyncio.gather(*(e.enrich(alert()) for _ in range(10)))

    assert len(api.requests) == 1
    assert {(a.users, a.events) for a in enriched} == {(12, 340)}
    # One result per call: the caller that asked counts "fetched", the rest "hit".
    assert results(registry) == {"fetched": 1, "hit": 9}


async def test_concurrent_failure_is_shared(
    api: FakeSentryAPI, registry: CollectorRegistry
) -> None:
    api.issue("42", status=503)
    async with enricher(api, registry) as e:
        enriched = await asyncio.gather(*(e.enrich(alert()) for _ in range(5)))

    assert len(api.requests) == 1
    assert all(a == alert() for a in enriched)
    assert results(registry) == {"error": 5}


async def test_cancelled_caller_does_not_cancel_the_shared_lookup(
    api: FakeSentryAPI, registry: CollectorRegistry
) -> None:
    api.issue("42", users=12, events=340)
    async with enricher(api, registry) as e:
        first = asyncio.create_task(e.enrich(alert()))
        await asyncio.sleep(0)  # first is now waiting on the request
        second = asyncio.create_task(e.enrich(alert()))
        await asyncio.sleep(0)
        first.cancel()
        enriched = await second

    assert first.cancelled()
    assert (enriched.users, enriched.events) == (12, 340)
    assert len(api.requests) == 1


# --- failures -------------------------------------------------------------------------------


async def test_slow_answer_times_out(
    api: FakeSentryAPI, registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    api.issue("42", users=12, events=340, delay=5.0)  # released when the server stops
    loop = asyncio.get_running_loop()
    async with enricher(api, registry, api_timeout=0.2) as e:
        started = loop.time()
        enriched = await e.enrich(alert())
        elapsed = loop.time() - started

    assert enriched == alert()
    assert 0.15 < elapsed < 2.0
    assert results(registry) == {"timeout": 1}
    [record] = [r for r in caplog.records if r.name == "bridge.enrich"]
    assert record.levelno == logging.WARNING
    assert (record.__dict__["issue_id"], record.__dict__["result"]) == ("42", "timeout")


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        pytest.param(401, {"detail": "Invalid token"}, "unauthorized", id="401"),
        pytest.param(403, {"detail": "You do not have permission"}, "unauthorized", id="403"),
        pytest.param(
            404, {"detail": "The requested resource does not exist"}, "not_found", id="404"
        ),
        pytest.param(500, {"detail": "Internal Error"}, "error", id="500"),
        pytest.param(502, b"<html>Bad Gateway</html>", "error", id="502-html"),
        pytest.param(
            429,
            {"detail": "You are attempting to use this endpoint too frequently"},
            "error",
            id="429",
        ),
        pytest.param(410, {"message": "This API no longer exists."}, "error", id="410-gone"),
        pytest.param(200, b'{"userCount": 12, "count": "3', "error", id="bad-json"),
        pytest.param(200, b"", "error", id="empty-body"),
        pytest.param(200, [{"userCount": 1}], "error", id="json-not-an-object"),
        pytest.param(200, {"id": "42"}, "error", id="no-counts"),
        pytest.param(200, {"userCount": "many", "count": "lots"}, "error", id="counts-not-numbers"),
        pytest.param(200, {"userCount": -1, "count": "-5"}, "error", id="negative-counts"),
        pytest.param(200, {"userCount": True, "count": 1.5}, "error", id="bool-and-float"),
    ],
)
async def test_failures_leave_the_alert_unchanged(
    api: FakeSentryAPI,
    registry: CollectorRegistry,
    caplog: pytest.LogCaptureFixture,
    status: int,
    body: Any,
    expected: str,
) -> None:
    api.issue("42", status=status, body=body)
    async with enricher(api, registry) as e:
        enriched = await e.enrich(alert())

    assert enriched == alert()
    assert len(api.requests) == 1
    assert results(registry) == {expected: 1}
    assert cache_entries(registry) == 0
    [record] = [r for r in caplog.records if r.name == "bridge.enrich"]
    assert record.levelno == logging.WARNING
    assert record.__dict__["result"] == expected
    assert record.__dict__["issue_id"] == "42"


async def test_wrong_token_is_unauthorized(registry: CollectorRegistry) -> None:
    with FakeSentryAPI(token="the-real-token") as api:
        api.issue("42", users=12, events=340)
        async with enricher(api, registry, api_token="a-stale-token") as e:
            enriched = await e.enrich(alert())

    assert enriched == alert()
    assert results(registry) == {"unauthorized": 1}


async def test_redirect_is_not_followed(api: FakeSentryAPI, registry: CollectorRegistry) -> None:
    with FakeSentryAPI() as elsewhere:
        elsewhere.issue("42", users=12, events=340)
        api.reply("/api/0/issues/42/", status=302, headers={"Location": elsewhere.issue_url("42")})
        async with enricher(api, registry) as e:
            enriched = await e.enrich(alert())

        assert elsewhere.requests == []
    assert enriched == alert()
    assert results(registry) == {"error": 1}


async def test_connection_refused_is_an_error(registry: CollectorRegistry) -> None:
    with FakeSentryAPI() as gone:
        base_url = gone.url  # nothing listens there once it stopped
    async with enricher(base_url, registry) as e:
        enriched = await e.enrich(alert())

    assert enriched == alert()
    assert results(registry) == {"error": 1}


async def test_token_never_logged(
    api: FakeSentryAPI, registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    api.issue("42", status=401)
    caplog.set_level(logging.DEBUG)
    async with enricher(api, registry) as e:
        await e.enrich(alert(issue_api_url=api.issue_url("42") + "?secret=q"))

    assert caplog.records
    for record in caplog.records:
        text = record.getMessage() + repr(record.__dict__)
        assert TOKEN not in text
        assert "secret=q" not in text


# --- skipped --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cfg", "fields"),
    [
        pytest.param({"api_token": None}, {}, id="no-token"),
        pytest.param({"api_token": ""}, {}, id="empty-token"),
        pytest.param(
            {},
            {"kind": Kind.METRIC_ALERT, "resource": "metric_alert", "identity": "metric_alert:7"},
            id="metric-alert",
        ),
        pytest.param({}, {"users": 3, "events": 9}, id="counts-already-known"),
        pytest.param({}, {"issue_id": None}, id="no-issue-id-or-url"),
        pytest.param(
            {},
            {"issue_id": None, "issue_api_url": "https://evil.example/api/0/issues/42/"},
            id="foreign-url-and-no-issue-id",
        ),
        pytest.param({}, {"test": True}, id="doctor-test-alert"),
    ],
)
async def test_skipped_without_a_request(
    api: FakeSentryAPI,
    registry: CollectorRegistry,
    cfg: dict[str, Any],
    fields: dict[str, Any],
) -> None:
    api.issue("42", users=12, events=340)
    original = alert(**fields)
    async with enricher(api, registry, **cfg) as e:
        enriched = await e.enrich(original)

    assert enriched == original
    assert api.requests == []
    assert results(registry) == {"skipped": 1}


# --- where the token goes -------------------------------------------------------------------


async def test_token_only_sent_to_the_configured_host(
    api: FakeSentryAPI, registry: CollectorRegistry
) -> None:
    api.issue("42", users=12, events=340)
    with FakeSentryAPI() as foreign:  # same address, other port: another origin
        foreign.issue("42", users=99, events=99)
        async with enricher(api, registry) as e:
            enriched = await e.enrich(alert(issue_api_url=foreign.issue_url("42", org=True)))

        assert foreign.requests == []
    assert (enriched.users, enriched.events) == (12, 340)
    [seen] = api.requests
    assert seen.path == "/api/0/issues/42/"  # built from base_url and the issue id
    assert seen.authorization == f"Bearer {TOKEN}"


@pytest.mark.parametrize(
    "make_url",
    [
        pytest.param(lambda base: base.replace("http://", "https://"), id="other-scheme"),
        pytest.param(lambda base: base.replace("127.0.0.1", "localhost"), id="other-host-name"),
        pytest.param(lambda base: "not a url ::: at all", id="garbage"),
    ],
)
async def test_payload_url_off_origin_is_replaced(
    api: FakeSentryAPI, registry: CollectorRegistry, make_url: Any
) -> None:
    api.issue("42", users=12, events=340)
    async with enricher(api, registry) as e:
        enriched = await e.enrich(alert(issue_api_url=make_url(api.url) + "/api/0/issues/42/"))

    assert enriched.users == 12
    assert [seen.path for seen in api.requests] == ["/api/0/issues/42/"]


async def test_issue_id_is_escaped_in_the_path(
    api: FakeSentryAPI, registry: CollectorRegistry
) -> None:
    async with enricher(api, registry) as e:
        await e.enrich(alert(issue_id="42/../../organizations"))

    assert [seen.path for seen in api.requests] == ["/api/0/issues/42%2F..%2F..%2Forganizations/"]
    assert results(registry) == {"not_found": 1}


# --- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "base_url",
    [
        pytest.param("ftp://sentry.example.com", id="ftp"),
        pytest.param("sentry.example.com", id="no-scheme"),
    ],
)
def test_bad_base_url_fails_at_start(registry: CollectorRegistry, base_url: str) -> None:
    with pytest.raises(ConfigError, match=r"sentry\.base_url"):
        Enricher(Sentry(base_url=base_url, api_token=TOKEN), Metrics(registry))


def test_metrics_visible_before_the_first_lookup(registry: CollectorRegistry) -> None:
    Enricher(Sentry(api_token=TOKEN), Metrics(registry))
    assert results(registry) == {}
    assert cache_entries(registry) == 0
