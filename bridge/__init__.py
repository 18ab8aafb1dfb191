"""Sentry webhooks in, classified, deduplicated, escalated Alertmanager alerts out."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sentry-alertmanager-bridge")
except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
    __version__ = "0.0.0"
