"""PromQL as the bridge's dashboard and alert rules use it, checked against what the bridge
exports: parsed for real (promql-parser), metric names compared with the sample names
``bridge.metrics.Metrics`` registers."""

from __future__ import annotations

import re
from pathlib import Path

import promql_parser
from prometheus_client import CollectorRegistry

from bridge.metrics import Metrics

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "dashboards" / "sentry-bridge.json"

# Sample names per metric type, as the Prometheus exposition format writes them.
_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("_sum", "_count", ""),
    "info": ("_info",),
}


def exported_metric_names() -> set[str]:
    """Every series name the bridge can expose, read off a fresh registry."""
    registry = CollectorRegistry()
    Metrics(registry)
    return {
        family.name + suffix for family in registry.collect() for suffix in _SUFFIXES[family.type]
    }


# Grafana's variables are not PromQL: give each a value that parses.
_GRAFANA_RANGES = re.compile(
    r"\$(?:__rate_interval|__interval|__range)\b|\$\{__(?:rate_interval|interval|range)\}"
)
_GRAFANA_VARS = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def as_promql(expr: str) -> str:
    return _GRAFANA_VARS.sub("var", _GRAFANA_RANGES.sub("5m", expr))


def selected_metrics(expr: str) -> list[promql_parser.VectorSelector]:
    """The vector selectors of ``expr``, parsed by a real PromQL parser."""
    found: list[promql_parser.VectorSelector] = []

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)

    promql_parser.walk(promql_parser.parse(expr), pre_visit=visit)
    return found


def metric_names(expr: str) -> set[str]:
    selectors = selected_metrics(expr)
    nameless = [str(s) for s in selectors if not s.name]
    assert not nameless, f"selectors without a metric name cannot be checked: {nameless}"
    return {s.name for s in selectors if s.name}
