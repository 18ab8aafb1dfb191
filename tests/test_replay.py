"""bridge/replay.py: the optional timestamp bound, pure and at the HTTP edge."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from bridge import config
from bridge.app import create_app
from bridge.compose import build
from bridge.errors import Unauthorized
from bridge.replay import check_timestamp
from tests.sentry_payloads import FIXTURES

NOW = 1_780_000_000.0
SIGNED = {"sentry-hook-signature": "ab"}


@pytest.mark.parametrize(
    ("headers", "skew", "refused"),
    [
        pytest.param({**SIGNED, "sentry-hook-timestamp": str(int(NOW))}, 300, False, id="now"),
        pytest.param(
            {**SIGNED, "sentry-hook-timestamp": str(int(NOW - 300))}, 300, False, id="edge"
        ),
        pytest.param({**SIGNED, "sentry-hook-timestamp": str(int(NOW - 301))}, 300, True, id="old"),
        pytest.param(
            {**SIGNED, "sentry-hook-timestamp": str(int(NOW + 301))}, 300, True, id="future"
        ),
        pytest.param({**SIGNED, "sentry-hook-timestamp": "yesterday"}, 300, True, id="unreadable"),
        pytest.param(SIGNED, 300, True, id="signed-without-timestamp"),
        pytest.param(
            {"x-servicehook-signature": "ab", "x-servicehook-timestamp": str(int(NOW - 999))},
            300,
            True,
            id="service-hook-old",
        ),
        pytest.param({}, 300, False, id="legacy-has-none"),
        pytest.param({**SIGNED, "sentry-hook-timestamp": "1"}, None, False, id="off"),
    ],
)
def test_check_timestamp(headers: dict[str, str], skew: float | None, refused: bool) -> None:
    if refused:
        with pytest.raises(Unauthorized) as exc:
            check_timestamp(headers, skew, NOW)
        assert exc.value.reason == "bad_timestamp"
    else:
        check_timestamp(headers, skew, NOW)


def test_off_by_default() -> None:
    assert config.Sentry().max_timestamp_skew is None
    assert config.Sentry(max_timestamp_skew="5m").max_timestamp_skew == 300


pytestmark = pytest.mark.anyio


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    cfg = config.parse(
        {
            "sentry": {"client_secrets": "s", "max_timestamp_skew": "5m"},
            "store": {"data_dir": str(tmp_path)},
        },
        env={},
    )
    transport = httpx.MockTransport(lambda request: httpx.Response(200))
    app = create_app(build(cfg, alertmanager_transport=transport))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://b") as c,
    ):
        yield c


@pytest.mark.parametrize(("age", "status"), [(0, 202), (3600, 401)], ids=["fresh", "replayed"])
async def test_the_edge_refuses_an_old_timestamp(
    client: httpx.AsyncClient, age: int, status: int
) -> None:
    body = (FIXTURES / "metric_alert_critical.json").read_bytes()
    headers = {
        "Sentry-Hook-Resource": "metric_alert",
        "Sentry-Hook-Timestamp": str(int(time.time()) - age),
        "Sentry-Hook-Signature": hmac.new(b"s", body, hashlib.sha256).hexdigest(),
    }
    response = await client.post("/webhooks/sentry", content=body, headers=headers)
    assert response.status_code == status
    if status == 401:
        assert response.json()["reason"] == "bad_timestamp"
