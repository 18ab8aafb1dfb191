"""bridge/model.py: ``evolve``, the copy the webhook path makes of its frozen dataclasses."""

from __future__ import annotations

import dataclasses
import json
from datetime import timedelta
from typing import Any

import pytest

from bridge.context import IssueContext
from bridge.model import Kind, SentryAlert, State, evolve
from bridge.state import IdentityState
from tests.factories import START, postable, sentry_alert

ALERT = sentry_alert(tags=(("browser", "Firefox"),), users=3, occurred_at=START)
STATE = IdentityState(
    alert=postable(1),
    environments=("production",),
    firings=(START,),
    context=IssueContext(project="web", tags=(("a", "b"),)),
)


@pytest.mark.parametrize(
    ("obj", "changes"),
    [
        pytest.param(ALERT, {"answered_at": START}, id="alert-one-field"),
        pytest.param(ALERT, {"environment": "staging", "tags": ()}, id="alert-two-fields"),
        pytest.param(ALERT, {}, id="alert-no-change"),
        pytest.param(STATE, {"posted": "abc", "posted_at": START}, id="state"),
        pytest.param(STATE, {"alert": None, "firings": ()}, id="state-cleared"),
        pytest.param(STATE.context, {"users": 7}, id="context"),
    ],
)
def test_evolve_is_replace(obj: Any, changes: dict[str, Any]) -> None:
    copied = evolve(obj, **changes)
    assert copied == dataclasses.replace(obj, **changes)
    assert copied is not obj
    assert type(copied) is type(obj)
    for name, value in changes.items():
        assert getattr(copied, name) is value
    # The original is untouched, and the copy is as frozen as it.
    assert obj == dataclasses.replace(obj)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(copied, dataclasses.fields(copied)[0].name, None)


def test_evolve_refuses_an_unknown_field() -> None:
    with pytest.raises(TypeError, match="'sevrity'"):
        evolve(STATE, sevrity=None)
    with pytest.raises(TypeError):
        dataclasses.replace(STATE, sevrity=None)  # type: ignore[call-arg]


def test_evolve_keeps_hash_and_equality() -> None:
    later = evolve(ALERT, occurred_at=START + timedelta(seconds=1))
    assert later != ALERT
    assert evolve(later, occurred_at=START) == ALERT
    assert hash(evolve(later, occurred_at=START)) == hash(ALERT)


@dataclasses.dataclass(frozen=True, slots=True)
class _One:
    only: int


def test_evolve_one_field() -> None:
    assert evolve(_One(1), only=2) == _One(2)
    assert evolve(_One(1)) == _One(1)


def test_to_json_leaves_out_unknowns_and_reads_back() -> None:
    alert = evolve(ALERT, answered_at=START, evidence=(("k", "v"),), from_context=("users",))
    data = alert.to_json()
    assert data["occurred_at"] == START.isoformat()
    assert data["tags"] == (("browser", "Firefox"),)
    assert "environment" not in data  # None
    assert "rule_settings" not in data  # ()
    assert all(value is not None and value != () for value in data.values())
    assert SentryAlert.from_json(json.loads(json.dumps(data))) == alert


def test_evolve_refuses_an_unknown_field_of_the_alert() -> None:
    with pytest.raises(TypeError, match="'enviroment'"):
        evolve(ALERT, enviroment="staging")


def _fields() -> dict[str, Any]:
    return {
        "resource": "event_alert",
        "action": "triggered",
        "kind": Kind.ISSUE,
        "state": State.FIRING,
        "identity": "issue:42",
        "title": "ValueError: bad input",
        "tags": (("browser", "Firefox"),),
        "users": 3,
        "occurred_at": START,
    }


def test_of_is_the_constructor() -> None:
    built = SentryAlert.of(_fields())
    assert built == SentryAlert(**_fields())
    assert hash(built) == hash(SentryAlert(**_fields()))
    # Every way of making one holds exactly the fields, in their order (to_json reads them so).
    names = [f.name for f in dataclasses.fields(SentryAlert)]
    assert list(vars(built)) == names
    assert list(vars(SentryAlert(**_fields()))) == names
    assert list(vars(evolve(built, title="other", environment="staging"))) == names
    assert built.to_json() == SentryAlert(**_fields()).to_json()
    assert list(built.to_json()) == list(SentryAlert(**_fields()).to_json())
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.title = "changed"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param({"enviroment": "staging"}, "enviroment", id="unknown-field"),
        pytest.param({"title": None}, "title", id="required-missing"),
    ],
)
def test_of_refuses_what_the_constructor_refuses(change: dict[str, Any], message: str) -> None:
    fields = {**_fields(), **change}
    fields = {name: value for name, value in fields.items() if value is not None}
    with pytest.raises(TypeError, match=message):
        SentryAlert.of(fields)
