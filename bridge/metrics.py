"""Every metric the bridge exports, defined against an injected registry.

Naming follows Prometheus conventions: ``sentry_bridge_<subsystem>_<name>_<unit>``,
base units (seconds, bytes), ``_total`` on counters. Label values come from
closed sets (pre-initialised below so a zero is visible before the first event)
or from configuration (Alertmanager names); never issue IDs, URLs or titles.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable
from typing import Generic, Protocol, TypeVar

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bridge import __version__
from bridge.errors import REJECT_REASONS
from bridge.model import Outcome, Severity

NAMESPACE = "sentry_bridge"

# Every value the `reason` label of sentry_bridge_connections_closed_total can take.
CONNECTION_CLOSE_REASONS = ("idle_for_room", "head_deadline")

# The `_created` series double every counter's exposition and no dashboard reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]

# Closed sets of label values.
RESOURCES = (
    "event_alert",
    "metric_alert",
    "issue",
    "error",
    "activity_alert",
    "installation",
    "service_hook",
    "legacy",
    "other",
)
OUTCOMES = tuple(outcome.value for outcome in Outcome)
DELIVERY_FAILURES = ("connect", "timeout", "status_4xx", "status_5xx", "status_429", "other")
DROP_REASONS = ("max_age", "rejected", "invalid")
# Why a correctly authenticated webhook was quarantined (kept for `sentry-bridge quarantine`):
# the edge could not read it as a Sentry alert, reading it raised, the pipeline did, or the
# legacy token came with a body the legacy plugin does not send (bridge.sentry.auth).
QUARANTINE_REASONS = ("invalid_payload", "parse_error", "pipeline_error", "unknown_legacy_body")
# What became of a request of Sentry's alert rule editor (bridge.sentry_ui), by request.
EDITOR_REQUESTS = ("save", "options")
EDITOR_OUTCOMES = ("accepted", "refused", "unauthorized", "bad_request", "busy")
ENRICH_RESULTS = ("hit", "fetched", "timeout", "unauthorized", "not_found", "error", "skipped")
# Requests of the reconciler (bridge/reconcile.py) to Sentry's API, by result.
RECONCILE_RESULTS = ("ok", "rate_limited", "unauthorized", "not_found", "timeout", "error")


class LastRound(Collector):
    """``sentry_bridge_reconcile_last_success_timestamp_seconds``: when the reconciler last
    finished a round. No series while the reconciler is off (no ``sentry.api_token``), so
    the chart's SentryBridgeReconcileStalled cannot fire for such installs; 0 from the
    moment it is on until its first round completes, so the alert counts from the
    process's start then (``process_start_time_seconds``), and a token Sentry refuses from
    the start still shows."""

    NAME = f"{NAMESPACE}_reconcile_last_success_timestamp_seconds"

    def __init__(self) -> None:
        self.on = False
        self.value = 0.0

    def enable(self) -> None:
        self.on = True

    def set(self, value: float) -> None:
        self.value = value

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            self.NAME,
            "Unix time the reconciler last finished a round of every issue it had to check "
            "(0 until the first; no series without sentry.api_token).",
        )
        if self.on:
            family.add_metric([], self.value)
        yield family


class _Sizes(Protocol):
    """What a store holds (bridge.store.contract.Sizes)."""

    @property
    def length(self) -> int: ...
    @property
    def oldest_age(self) -> float: ...
    @property
    def active(self) -> int: ...
    @property
    def quarantined(self) -> int: ...


_M = TypeVar("_M", Counter, Gauge)


class Children(Generic[_M]):
    """A metric's children by their one label's value, each looked up once: ``labels()``
    takes a lock and builds its key on every call, some 2 % of a webhook's CPU on the
    webhook path (issue 15's profile). For label values from a closed set only; a child
    appears in the exposition when first used, as with ``labels()``."""

    __slots__ = ("_by_value", "_metric")

    def __init__(self, metric: _M) -> None:
        self._metric: _M = metric
        self._by_value: dict[str, _M] = {}

    def __call__(self, value: str) -> _M:
        child = self._by_value.get(value)
        if child is None:
            child = self._by_value[value] = self._metric.labels(value)
        return child


class Metrics:
    """Holds the collectors; one instance per app, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        ns = NAMESPACE
        self.build_info = Info("build", "Version of the bridge.", namespace=ns, registry=registry)
        self.build_info.info({"version": __version__, "python": platform.python_version()})

        # --- the HTTP edge ----------------------------------------------------------------
        self.webhooks_received = Counter(
            "webhooks_received_total",
            "Webhooks received from Sentry, by Sentry resource.",
            ["resource"],
            namespace=ns,
            registry=registry,
        )
        self.webhooks_rejected = Counter(
            "webhooks_rejected_total",
            "Webhooks refused with a 4xx or 503, by reason.",
            ["reason"],
            namespace=ns,
            registry=registry,
        )
        self.editor_requests = Counter(
            "editor_requests_total",
            "Requests of Sentry's alert rule editor (save: the settings checked when a rule is "
            "saved; options: a select field's options), by outcome: accepted, refused (a "
            "setting the config does not allow), unauthorized (no valid Sentry-App-Signature), "
            "bad_request, busy.",
            ["request", "outcome"],
            namespace=ns,
            registry=registry,
        )
        self.connections_closed = Counter(
            "connections_closed_total",
            "Connections to the webhook port the bridge closed unasked, by reason: "
            "idle_for_room (server.max_connections reached, the idle longest closed), "
            "head_deadline (no complete request head within server.read_timeout).",
            ["reason"],
            namespace=ns,
            registry=registry,
        )
        self.webhooks_in_flight = Gauge(
            "webhooks_in_flight",
            "Webhooks being handled now (bounded by server.max_concurrency).",
            namespace=ns,
            registry=registry,
        )
        self.pending_body_bytes = Gauge(
            "webhook_pending_body_bytes",
            "Bytes of webhook bodies being received now, before their signature is checked "
            "(bounded by server.max_pending_body_bytes).",
            namespace=ns,
            registry=registry,
        )
        # No series until a webhook of the family arrives: a zero would read as 1970. The
        # chart's SentryBridgeNoWebhooks alert counts from the newest of these (or the
        # process's start): Sentry going quiet looks like health otherwise (issue 16, item 6).
        self.last_webhook = Gauge(
            "last_webhook_timestamp_seconds",
            "Unix time of the last authenticated webhook from Sentry, by family "
            "(integration, service_hook, legacy).",
            ["family"],
            namespace=ns,
            registry=registry,
        )
        self.request_duration = Histogram(
            "webhook_request_duration_seconds",
            "Time from receiving a webhook to answering it.",
            namespace=ns,
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )

        # --- the pipeline -----------------------------------------------------------------
        self.alerts = Counter(
            "alerts_total",
            "Webhooks through the state machine, by outcome (forwarded, resolved, duplicate, "
            "stale, dropped, ignored), the reconciler's answers from Sentry's API "
            "(reconciled) and escalation timer ticks (escalated: a tier fired; "
            "acknowledged: a silence holds the step).",
            ["outcome"],
            namespace=ns,
            registry=registry,
        )
        self.alerts_by_severity = Counter(
            "alerts_forwarded_by_severity_total",
            "Alerts forwarded to Alertmanager, by severity.",
            ["severity"],
            namespace=ns,
            registry=registry,
        )
        self.escalations = Counter(
            "escalations_total",
            "Alerts escalated one severity step because they kept coming back.",
            namespace=ns,
            registry=registry,
        )
        self.resolutions = Counter(
            "resolutions_total",
            "Alerts resolved in Alertmanager, because Sentry resolved them or their "
            "label set was replaced.",
            namespace=ns,
            registry=registry,
        )
        self.enrichment = Counter(
            "enrichment_requests_total",
            "Look-ups of issue counts in Sentry's API, by result.",
            ["result"],
            namespace=ns,
            registry=registry,
        )
        self.reconcile_requests = Counter(
            "reconcile_requests_total",
            "Requests of the reconciler for the status of issues in Sentry's API, by result "
            "(ok, rate_limited, unauthorized, not_found, timeout, error).",
            ["result"],
            namespace=ns,
            registry=registry,
        )
        self.reconcile_last_success = LastRound()
        registry.register(self.reconcile_last_success)
        self.cache_entries = Gauge(
            "cache_entries",
            "Entries held in each in-process cache.",
            ["cache"],
            namespace=ns,
            registry=registry,
        )

        # --- delivery to Alertmanager -----------------------------------------------------
        self.am_sent = Counter(
            "alertmanager_alerts_sent_total",
            "Alerts accepted by an Alertmanager.",
            ["alertmanager"],
            namespace=ns,
            registry=registry,
        )
        self.am_requests = Counter(
            "alertmanager_requests_total",
            "POST /api/v2/alerts requests made to an Alertmanager.",
            ["alertmanager"],
            namespace=ns,
            registry=registry,
        )
        self.am_failed = Counter(
            "alertmanager_requests_failed_total",
            "Failed requests to an Alertmanager, by reason.",
            ["alertmanager", "reason"],
            namespace=ns,
            registry=registry,
        )
        self.am_dropped = Counter(
            "alertmanager_alerts_dropped_total",
            "Alerts given up on for an Alertmanager, by reason.",
            ["alertmanager", "reason"],
            namespace=ns,
            registry=registry,
        )
        self.am_up = Gauge(
            "alertmanager_up",
            "Whether an Alertmanager answered the last request (1) or failed it: no "
            "connection, a timeout, 5xx or 429 (0). Probed at start.",
            ["alertmanager"],
            namespace=ns,
            registry=registry,
        )
        self.am_request_duration = Histogram(
            "alertmanager_request_duration_seconds",
            "Duration of requests to an Alertmanager.",
            ["alertmanager"],
            namespace=ns,
            registry=registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
        )
        self.am_batch_size = Histogram(
            "alertmanager_batch_size_alerts",
            "Alerts per request to an Alertmanager.",
            namespace=ns,
            registry=registry,
            buckets=(1, 2, 5, 10, 25, 50, 100, 256, 512, 1024),
        )
        self.queued_alerts = Gauge(
            "store_queued_alerts",
            "Alerts waiting in the store for at least one Alertmanager.",
            namespace=ns,
            registry=registry,
        )
        self.queued_oldest_age = Gauge(
            "store_queued_oldest_age_seconds",
            "Age of the oldest alert waiting in the store (0 when empty).",
            namespace=ns,
            registry=registry,
        )
        self.dead_letters = Counter(
            "dead_letters_total",
            "Alerts an Alertmanager rejected as invalid, kept in the dead-letter table.",
            namespace=ns,
            registry=registry,
        )
        self.active_alerts = Gauge(
            "active_alerts",
            "Sentry identities the bridge holds as firing in Alertmanager.",
            namespace=ns,
            registry=registry,
        )

        # --- the store: failures, quarantine, repeated bodies ---------------------------
        self.store_errors = Counter(
            "store_errors_total",
            "Write transactions on the SQLite store (or the spool) that failed and were "
            "rolled back.",
            namespace=ns,
            registry=registry,
        )
        self.quarantined = Counter(
            "quarantined_total",
            "Authenticated webhooks kept in quarantine instead of being processed, by reason.",
            ["reason"],
            namespace=ns,
            registry=registry,
        )
        self.quarantine_held = Gauge(
            "quarantine_webhooks",
            "Webhooks held in quarantine, waiting for `sentry-bridge quarantine replay`.",
            namespace=ns,
            registry=registry,
        )
        self.quarantine_discarded = Counter(
            "quarantine_discarded_total",
            "Quarantined webhooks an operator discarded for good (`sentry-bridge quarantine "
            "discard`).",
            namespace=ns,
            registry=registry,
        )
        self.duplicate_bodies = Counter(
            "webhooks_duplicate_total",
            "Webhooks whose exact body was already accepted within store.body_retention.",
            namespace=ns,
            registry=registry,
        )
        # --- liveness (bridge.compose) ---------------------------------------------------
        self.pipeline_last_progress = Gauge(
            "pipeline_last_progress_timestamp_seconds",
            "Unix time the pipeline last completed a batch or was idle (nothing this "
            "replica may take); /-/healthy fails while it is older than "
            "server.progress_timeout.",
            namespace=ns,
            registry=registry,
        )

        # --- the spool in front of PostgreSQL (bridge.store.spool) -----------------------
        self.store_up = Gauge(
            "store_up",
            "Whether the last write to the shared store (PostgreSQL) succeeded (1) or failed "
            "or timed out (0); while 0, webhooks are kept in the local spool. Always 1 with "
            "store.backend sqlite, whose failures sentry_bridge_store_errors_total counts.",
            namespace=ns,
            registry=registry,
        )
        self.store_up.set(1)  # until a spool in front of PostgreSQL says otherwise
        self.spool_webhooks = Gauge(
            "spool_webhooks",
            "Webhooks waiting in the local spool for the shared store.",
            namespace=ns,
            registry=registry,
        )
        self.spool_oldest_age = Gauge(
            "spool_oldest_age_seconds",
            "Age of the oldest webhook waiting in the local spool (0 when empty).",
            namespace=ns,
            registry=registry,
        )
        self.spooled = Counter(
            "spooled_total",
            "Webhooks answered from the local spool because the shared store did not take "
            "them in time, or the spool was not empty yet.",
            namespace=ns,
            registry=registry,
        )
        self.spool_drained = Counter(
            "spool_drained_total",
            "Webhooks moved from the local spool into the shared store.",
            namespace=ns,
            registry=registry,
        )

        # --- the config (bridge.reload) -------------------------------------------------
        self.config_last_reload_successful = Gauge(
            "config_last_reload_successful",
            "Whether the last config reload worked (1) or was refused (0).",
            namespace=ns,
            registry=registry,
        )
        self.config_last_reload_success_timestamp = Gauge(
            "config_last_reload_success_timestamp_seconds",
            "Unix time of the last config load that worked (the start, or a reload).",
            namespace=ns,
            registry=registry,
        )
        self.config_reloads = Counter(
            "config_reloads_total",
            "Config reloads attempted (SIGHUP or POST /-/reload).",
            namespace=ns,
            registry=registry,
        )
        self.config_reloads_failed = Counter(
            "config_reloads_failed_total",
            "Config reloads refused because the file did not validate.",
            namespace=ns,
            registry=registry,
        )

        # The webhook path's labelled metrics, by label value (``Children``).
        self.received = Children(self.webhooks_received)
        self.spoke = Children(self.last_webhook)
        self.decided = Children(self.alerts)
        self.decided_severity = Children(self.alerts_by_severity)
        for resource in RESOURCES:
            self.webhooks_received.labels(resource)
        for reason in REJECT_REASONS:
            self.webhooks_rejected.labels(reason)
        for reason in CONNECTION_CLOSE_REASONS:
            self.connections_closed.labels(reason)
        for request in EDITOR_REQUESTS:
            for outcome in EDITOR_OUTCOMES:
                self.editor_requests.labels(request, outcome)
        for outcome in OUTCOMES:
            self.alerts.labels(outcome)
        for severity in Severity:
            self.alerts_by_severity.labels(severity.value)
        for reason in QUARANTINE_REASONS:
            self.quarantined.labels(reason)
        for result in ENRICH_RESULTS:
            self.enrichment.labels(result)
        for result in RECONCILE_RESULTS:
            self.reconcile_requests.labels(result)

    def connections_closed_by_reason(self, reason: str) -> None:
        self.connections_closed.labels(reason).inc()

    def exposition(self) -> bytes:
        """Prometheus text of every family: the whole bridge is one process."""
        return generate_latest(self.registry)

    def add_process_collectors(self) -> None:
        """prometheus-client's standard process metrics (``process_*``: memory, CPU, open
        files, start time; ``python_info``), for ``serve``'s process."""
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)

    def show_store(self, sizes: _Sizes) -> None:
        """The store's sizes as gauges (bridge.compose reads them for each scrape)."""
        self.queued_alerts.set(sizes.length)
        self.queued_oldest_age.set(sizes.oldest_age)
        self.active_alerts.set(sizes.active)
        self.quarantine_held.set(sizes.quarantined)

    def init_alertmanagers(self, names: Iterable[str]) -> None:
        """Pre-initialise per-Alertmanager series; names come from configuration."""
        for name in names:
            self.am_sent.labels(name)
            self.am_requests.labels(name)
            for reason in DELIVERY_FAILURES:
                self.am_failed.labels(name, reason)
            for reason in DROP_REASONS:
                self.am_dropped.labels(name, reason)
