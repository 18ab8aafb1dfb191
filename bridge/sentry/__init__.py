"""Sentry's side of the wire: who sent a webhook, what it is, and the one alert it means.

``authenticate`` checks the credentials (``auth``); ``read`` turns the raw body into a
:class:`~bridge.model.SentryAlert` or an :class:`~bridge.model.Ignored` (``formats``, with
``wire``, ``issue``, ``metric``, ``occurrence``, ``event`` and ``links`` beneath it).
"""

from __future__ import annotations

from bridge.sentry.auth import UNKNOWN_LEGACY_BODY, authenticate, family
from bridge.sentry.formats import (
    IGNORE_REASONS,
    detect_resource,
    loads,
    normalise,
    read,
)
from bridge.sentry.metric import MetricReading, parse_metric_description
from bridge.sentry.wire import LowerHeaders

__all__ = [
    "IGNORE_REASONS",
    "UNKNOWN_LEGACY_BODY",
    "LowerHeaders",
    "MetricReading",
    "authenticate",
    "detect_resource",
    "family",
    "loads",
    "normalise",
    "parse_metric_description",
    "read",
]
