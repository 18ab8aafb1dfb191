"""``sentry-bridge`` / ``python -m bridge``: serve, check-config, explain."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from starlette.datastructures import Headers

from bridge import __version__, config, labels, quarantine, sentry
from bridge.classify import SYMBOLS
from bridge.classify import explain as explain_rules
from bridge.errors import ConfigError, WebhookError
from bridge.model import Ignored, State
from bridge.rules import (
    BOOL_FIELDS,
    NUMBER_FIELDS,
    STRING_FIELDS,
    Condition,
    Match,
    Rule,
)

DEFAULT_CONFIG = "config.yaml"


def _config_path(value: str | None) -> str:
    return value or os.environ.get("BRIDGE_CONFIG") or DEFAULT_CONFIG


def _show(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return json.dumps(value)


def _describe_condition(name: str, cond: Condition) -> list[str]:
    return [
        f"{name} {symbol} {_show(getattr(cond, op))}"
        for op, symbol in SYMBOLS.items()
        if getattr(cond, op) is not None
    ]


def _describe_match(match: Match) -> str:
    parts: list[str] = []
    for name in (*STRING_FIELDS, *BOOL_FIELDS, *NUMBER_FIELDS):
        cond = getattr(match, name)
        if cond is not None:
            parts += _describe_condition(name, cond)
    for tag, cond in match.tags.items():
        parts += _describe_condition(f"tags.{tag}", cond)
    if match.any:
        parts.append("(" + " or ".join(_describe_match(m) for m in match.any) + ")")
    if match.not_ is not None:
        parts.append(f"not ({_describe_match(match.not_)})")
    return " and ".join(parts) or "always"


def _describe_rule(rule: Rule) -> str:
    outcome = "drop" if rule.drop else f"severity {rule.severity}"
    extra = f" +labels {json.dumps(rule.labels)}" if rule.labels else ""
    return f"{rule.name}: {outcome}{extra} when {_describe_match(rule.match)}"


def cmd_check_config(args: argparse.Namespace) -> int:
    cfg = config.load(args.file)
    print(f"{args.file}: OK")
    print(f"alertmanagers: {', '.join(cfg.alertmanager.urls)}")
    print("rules, first match wins:")
    for index, rule in enumerate(cfg.classification.rules, 1):
        print(f"  {index:>2}. {_describe_rule(rule)}")
    print(f"  default: severity {cfg.classification.default_severity}")
    return 0


_RESOURCE_KEYS = (
    ("metric_alert", "metric_alert"),
    ("triggered_rule", "event_alert"),
    ("activity", "activity_alert"),  # its data also holds "issue"
    ("issue", "issue"),
    ("error", "error"),
    ("installation", "installation"),
)


def _guess_resource(data: Any) -> str | None:
    """An integration webhook names its resource only in a header; a saved
    payload has lost it, so read it off the keys of ``data``."""
    inner = data.get("data") if isinstance(data, dict) else None
    if isinstance(inner, dict):
        for key, resource in _RESOURCE_KEYS:
            if key in inner:
                return resource
    return None


def cmd_explain(args: argparse.Namespace) -> int:
    cfg = config.load(_config_path(args.config))
    data = json.loads(Path(args.payload).read_text(encoding="utf-8"))
    resource = args.resource or _guess_resource(data)
    headers = Headers({"sentry-hook-resource": resource} if resource else {})
    result = sentry.normalise(
        headers, data, base_url=cfg.sentry.base_url, organization=cfg.sentry.organization
    )
    if isinstance(result, Ignored):
        print(f"ignored: {result.resource}/{result.action}: {result.reason}")
        return 0
    print("normalised alert:")
    print(json.dumps({k: v for k, v in result.to_json().items() if v not in (None, [])}, indent=2))
    decision, traces = explain_rules(result, cfg.classification)
    print("\nrules, in order:")
    for trace in traces:
        print(f"  {'MATCH' if trace.matched else 'no   '} {trace.rule}")
        for reason in trace.reasons:
            print(f"        {reason}")
        if trace.matched:
            break
    if decision.dropped:
        print(f"\ndropped by rule {decision.rule!r}; nothing would be sent")
        return 0
    assert decision.severity is not None
    print(f"\nseverity {decision.severity} ({decision.rule or 'default_severity'})")
    now = datetime.now(UTC)
    alert_labels = labels.build_labels(
        result,
        decision,
        decision.severity,
        escalated=False,
        severity_labels=cfg.classification.severity_labels,
    )
    out = labels.firing(
        result,
        alert_labels,
        labels.build_annotations(result, decision),
        starts_at=now,
        now=now,
        lifetime=0 if result.state is State.RESOLVED else cfg.alertmanager.alert_lifetime,
    )
    print("\nwould POST to /api/v2/alerts of every Alertmanager (first sight, no repeats):")
    print(json.dumps([out.wire()], indent=2, default=str))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from bridge.serve import serve  # uvicorn is only needed here

    cfg = config.load(_config_path(args.config))
    return serve(cfg, host=args.host, port=args.port)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sentry-bridge", description=__doc__)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the bridge")
    s.add_argument("--config", help="config file (default: $BRIDGE_CONFIG or ./config.yaml)")
    s.add_argument("--host", help="listen address (default: server.host from the config)")
    s.add_argument("--port", type=int, help="listen port (default: server.port from the config)")
    s.set_defaults(func=cmd_serve)

    c = sub.add_parser("check-config", help="validate a config file and list its rules")
    c.add_argument("file")
    c.set_defaults(func=cmd_check_config)

    e = sub.add_parser("explain", help="show how a saved Sentry payload would be classified")
    e.add_argument("payload", help="a webhook body saved as JSON")
    e.add_argument("--config", help="config file (default: $BRIDGE_CONFIG or ./config.yaml)")
    e.add_argument("--resource", help="Sentry-Hook-Resource of the payload, when not guessable")
    e.set_defaults(func=cmd_explain)

    quarantine.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except WebhookError as exc:
        print(f"payload refused: {exc.reason}: {exc.detail}", file=sys.stderr)
        return 1
    except (OSError, json.JSONDecodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    raise SystemExit(main())
