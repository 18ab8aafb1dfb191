"""``sentry-bridge`` / ``python -m bridge``: serve, check-config, explain, doctor, ..."""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import httpx
from starlette.datastructures import Headers

from bridge import __version__, config, quarantine_cli, sentry, state
from bridge.alertmanager import public_url
from bridge.classify import SYMBOLS, Decision, explain_settings
from bridge.classify import explain as explain_rules
from bridge.context import fill
from bridge.errors import ConfigError, WebhookError
from bridge.model import Ignored, SentryAlert
from bridge.rules import (
    BOOL_FIELDS,
    NUMBER_FIELDS,
    STRING_FIELDS,
    Condition,
    Match,
    Rule,
)
from bridge.send import EXAMPLES, guess_resource
from bridge.state import IdentityState

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


def _needed(offline: config.Offline) -> list[str]:
    """What ``serve`` will need that this offline check did without."""
    return [f"  {item}" for item in offline.needed]


def cmd_check_config(args: argparse.Namespace) -> int:
    # Offline: secrets are checked by serve, where they are set; here everything else is.
    offline = config.load_offline(args.file)
    cfg = offline.config
    print(f"{args.file}: OK")
    print(f"alertmanagers: {', '.join(public_url(url) for url in cfg.alertmanager.urls)}")
    modes = cfg.sentry.auth_modes()
    print(f"authentication: {', '.join(modes) if modes else 'none set here'}")
    if offline.needed:
        print("needed at serve time (not set here):")
        print("\n".join(_needed(offline)))
    print("rules, first match wins:")
    for index, rule in enumerate(cfg.classification.rules, 1):
        print(f"  {index:>2}. {_describe_rule(rule)}")
    print(f"  default: severity {cfg.classification.default_severity}")
    return 0


def cmd_sentry_schema(args: argparse.Namespace) -> int:
    """The JSON for the integration's Schema field, and where Sentry must reach the bridge."""
    from bridge import sentry_ui

    public_url = args.public_url
    if public_url is None:
        path = _config_path(args.config)
        if Path(path).exists():
            public_url = config.load_offline(path).config.sentry.public_url
    else:
        try:
            public_url = config.check_public_url(public_url)
        except ValueError as exc:
            print(f"--public-url: {exc}", file=sys.stderr)
            return 2
    print(json.dumps(sentry_ui.schema(), indent=2))
    if public_url:
        print(f"Webhook URL: {public_url}/webhooks/sentry", file=sys.stderr)
    else:
        print(
            "note: the integration's Webhook URL must be at the root of the bridge's host "
            "(https://HOST/webhooks/sentry): Sentry calls the settings form's URIs on that "
            "host (set sentry.public_url or --public-url to print it)",
            file=sys.stderr,
        )
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    offline = config.load_offline(_config_path(args.config))
    cfg = offline.config
    if offline.needed:
        print("note: needed at serve time (not set here):", file=sys.stderr)
        print("\n".join(_needed(offline)), file=sys.stderr)
    data = json.loads(Path(args.payload).read_text(encoding="utf-8"))
    resource = args.resource or guess_resource(data)
    headers = Headers({"sentry-hook-resource": resource} if resource else {})
    result = sentry.normalise(
        headers, data, base_url=cfg.sentry.base_url, organization=cfg.sentry.organization
    )
    if isinstance(result, Ignored):
        print(f"ignored: {result.resource}/{result.action}: {result.reason}")
        return 0
    print("normalised alert:")
    print(json.dumps({k: v for k, v in result.to_json().items() if v not in (None, [])}, indent=2))
    previous = None
    if args.state:
        previous = IdentityState.from_json(json.loads(Path(args.state).read_text("utf-8")))
        result = _in_context(result, previous)
    decision, traces = explain_rules(result, cfg.classification)
    print("\nrules, in order:")
    for trace in traces:
        print(f"  {'MATCH' if trace.matched else 'no   '} {trace.rule}")
        for reason in trace.reasons:
            print(f"        {reason}")
        if trace.matched:
            break
    settings_lines = explain_settings(result, cfg.classification, decision)
    if settings_lines:
        print("\nsettings of the alert rule in Sentry (they win over the rules, except a rule")
        print("with override_sentry: true):")
        for line in settings_lines:
            print(f"  {line}")
    if decision.dropped:
        print(f"\ndropped by rule {decision.rule!r}")
    else:
        by = decision.rule or "default_severity"
        if "severity" in decision.settings:
            by = "the alert rule's severity setting in Sentry"
        print(f"\nseverity {decision.severity} ({by})")
        extra = {**decision.labels, **decision.annotations}
        if decision.settings and extra:
            print("labels and annotations: " + ", ".join(f"{k}={v}" for k, v in extra.items()))
    explain_step(cfg, result, decision, previous)
    return 0


def _in_context(alert: SentryAlert, previous: IdentityState) -> SentryAlert:
    """The alert as the pipeline classifies it: what it lacks from the issue's context
    (``bridge.context``), each field filled named."""
    firing = previous.firing(datetime.now(UTC))
    env = firing.labels.get("environment") if firing else None
    filled, names = fill(alert, previous.context, env)
    if names:
        print("\nfrom the issue's context (the webhook does not say them; --state):")
        for name in names:
            print(f"  {name}: {getattr(filled, name)!r}")
    return filled


def explain_step(
    cfg: config.Config, alert: SentryAlert, decision: Decision, previous: IdentityState | None
) -> None:
    """The state machine's step for ``explain``: the previous state (none, offline,
    unless ``--state`` gives one), what this webhook changes and what would be posted."""
    now = datetime.now(UTC)
    result = state.step(previous, alert, decision, now, state.Policy.from_config(cfg))
    print(f"\nstate of {alert.identity} before:")
    if previous is None:
        print("  none (nothing known; pass --state FILE to start from a saved state)")
    else:
        print(textwrap.indent(json.dumps(previous.to_json(), indent=2, default=str), "  "))
        for line in state.describe_reconciler(previous):
            print(f"  {line}")
    print(f"\nthis webhook: {result.outcome.value}")
    for line in state.describe(previous, result):
        print(f"  {line}")
    if not result.posts:
        print("\nnothing would be posted to Alertmanager")
        return
    print("\nwould POST to /api/v2/alerts of every Alertmanager, in this order:")
    print(json.dumps([post.wire() for post in result.posts], indent=2, default=str))


def cmd_serve(args: argparse.Namespace) -> int:
    from bridge.serve import serve  # uvicorn is only needed here

    path = _config_path(args.config)
    cfg = config.load(path)
    return serve(cfg, host=args.host, port=args.port, admin_port=args.admin_port, config_path=path)


def cmd_send(args: argparse.Namespace) -> int:
    from bridge import send

    return send.run(
        payload=args.payload,
        example=args.example,
        config_path=_config_path(args.config),
        url=args.url,
        admin_url=args.admin_url,
        secret=args.secret,
        family=args.family,
        resource=args.resource,
        wait_for=args.wait,
        timeout=args.timeout,
    )


VERSION = f"sentry-bridge {__version__}"


def cmd_status(args: argparse.Namespace) -> int:
    from bridge import status

    return status.run(
        url=args.url,
        config_path=_config_path(args.config),
        limit=args.limit,
        requeue=args.requeue_dead_letters,
        as_json=args.json,
    )


def cmd_doctor(args: argparse.Namespace) -> int:
    from bridge import doctor

    return doctor.run(
        config_path=_config_path(args.config),
        url=args.url,
        admin_url=args.admin_url,
        as_json=args.json,
        timeout=args.timeout,
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sentry-bridge", description=__doc__)
    p.add_argument("--version", action="version", version=VERSION)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the bridge")
    s.add_argument("--config", help="config file (default: $BRIDGE_CONFIG or ./config.yaml)")
    s.add_argument("--host", help="listen address (default: server.host from the config)")
    s.add_argument("--port", type=int, help="listen port (default: server.port from the config)")
    s.add_argument(
        "--admin-port",
        type=int,
        help="the admin listener's port (default: server.admin_port from the config)",
    )
    s.set_defaults(func=cmd_serve)

    c = sub.add_parser("check-config", help="validate a config file and list its rules")
    c.add_argument("file")
    c.set_defaults(func=cmd_check_config)

    e = sub.add_parser("explain", help="show how a saved Sentry payload would be classified")
    e.add_argument("payload", help="a webhook body saved as JSON")
    e.add_argument("--config", help="config file (default: $BRIDGE_CONFIG or ./config.yaml)")
    e.add_argument("--resource", help="Sentry-Hook-Resource of the payload, when not guessable")
    e.add_argument("--state", help="the identity's state before this webhook (JSON, as stored)")
    e.set_defaults(func=cmd_explain)

    g = sub.add_parser(
        "sentry-schema",
        help="print the integration's Schema (the alert rule action's settings form) as JSON",
    )
    g.add_argument("--config", help="config file (default: $BRIDGE_CONFIG or ./config.yaml)")
    g.add_argument(
        "--public-url",
        help="where Sentry reaches the bridge, e.g. https://bridge.example.com "
        "(default: sentry.public_url)",
    )
    g.set_defaults(func=cmd_sentry_schema)

    quarantine_cli.add_parser(sub)
    w = sub.add_parser(
        "send",
        help="post a signed webhook to a running bridge, as Sentry would",
        description="Post a saved payload or a built-in example to a running bridge, signed "
        "as Sentry signs it. Examples: "
        + "; ".join(f"{name} ({spec.about})" for name, spec in EXAMPLES.items()),
    )
    what = w.add_mutually_exclusive_group(required=True)
    what.add_argument("payload", nargs="?", help="a webhook body saved as JSON")
    what.add_argument("--example", choices=sorted(EXAMPLES), help="a built-in example")
    w.add_argument("--config", help="config file (default: $BRIDGE_CONFIG or ./config.yaml)")
    w.add_argument("--url", help="the bridge (default: the config's port on 127.0.0.1)")
    w.add_argument(
        "--admin-url",
        help="the bridge's admin listener, asked by --wait which Alertmanagers the bridge "
        "posts to (default: server.admin_host:admin_port)",
    )
    w.add_argument("--secret", help="sign with this (default: the config's secret)")
    w.add_argument(
        "--family",
        choices=["integration", "service_hook", "legacy"],
        help="how to sign (default: guessed from the body)",
    )
    w.add_argument("--resource", help="Sentry-Hook-Resource (default: guessed from the body)")
    w.add_argument(
        "--wait", action="store_true", help="then wait until every Alertmanager shows it"
    )
    w.add_argument("--timeout", type=float, default=30.0, help="seconds --wait waits (default 30)")
    w.set_defaults(func=cmd_send)
    t = sub.add_parser("status", help="what a running bridge holds (GET /-/status)")
    t.add_argument(
        "--url", help="the bridge's admin listener (default: server.admin_host:admin_port)"
    )
    t.add_argument("--config", help="config file (default: $BRIDGE_CONFIG or ./config.yaml)")
    t.add_argument("--limit", type=int, default=100, help="alerts and dead letters listed")
    t.add_argument(
        "--requeue-dead-letters",
        action="store_true",
        help="first queue the dead letters again (after fixing what Alertmanager refused)",
    )
    t.add_argument("--json", action="store_true", help="the answer as JSON")
    t.set_defaults(func=cmd_status)
    d = sub.add_parser(
        "doctor",
        help="check the config, secrets, Sentry's API, each Alertmanager, the store, and "
        'send a test alert (low, sentry_test="true") through the running bridge',
    )
    d.add_argument("--config", help="config file (default: $BRIDGE_CONFIG or ./config.yaml)")
    d.add_argument("--url", help="the bridge (default: the config's port on 127.0.0.1)")
    d.add_argument(
        "--admin-url", help="the bridge's admin listener (default: server.admin_host:admin_port)"
    )
    d.add_argument(
        "--json", action="store_true", help="one JSON object: each check's name, ok, detail"
    )
    d.add_argument(
        "--timeout", type=float, default=30.0, help="seconds the test alert may take per step"
    )
    d.set_defaults(func=cmd_doctor)

    for command in sub.choices.values():  # `sentry-bridge serve --version` works too
        command.add_argument("--version", action="version", version=VERSION)
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
    except httpx.HTTPError as exc:  # send, status: the bridge did not answer
        print(f"error: the bridge did not answer: {exc}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    raise SystemExit(main())
