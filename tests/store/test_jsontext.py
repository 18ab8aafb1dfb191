"""bridge/store/jsontext.py: the JSON text the SQLite engine keeps reads back as
``json.dumps`` would have written it."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from bridge.context import IssueContext
from bridge.model import Severity
from bridge.state import IdentityState
from bridge.store.jsontext import dumps
from tests.factories import START, postable, sentry_alert

STATE = IdentityState(
    alert=postable(1),
    severity=Severity.HIGH,
    environments=("production", "prödüction"),
    firings=(START,),
    posted="abc",
    posted_at=START,
    context=IssueContext(project="web", users=2**63 - 1, tags=(("browser", "Firefox 🦊"),)),
)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(STATE.to_json(), id="state"),
        pytest.param(
            sentry_alert(title="Ünïcode\u2028line", occurred_at=START).to_json(), id="alert"
        ),
        pytest.param({"metric_value": 1e300, "users": 2**70, "tags": (("k", "v"),)}, id="numbers"),
        pytest.param({"title": "lone \ud800 surrogate"}, id="surrogate-falls-back"),
    ],
)
def test_reads_back_as_json_dumps_wrote_it(value: Any) -> None:
    assert json.loads(dumps(value)) == json.loads(json.dumps(value, separators=(",", ":")))


def test_ascii_text_is_json_dumps_text() -> None:
    value = sentry_alert(tags=(("a", "b"),), users=3, occurred_at=START).to_json()
    assert dumps(value) == json.dumps(value, separators=(",", ":"))


def test_infinity_reads_back() -> None:
    # json.dumps writes Infinity and NaN (not JSON, but Python's json reads them back).
    back = json.loads(dumps({"a": math.inf, "b": -math.inf}))
    assert back == {"a": math.inf, "b": -math.inf}
    assert math.isnan(json.loads(dumps({"n": math.nan}))["n"])
