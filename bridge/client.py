"""What the client commands (``send``, ``status``, ``quarantine``) read, and saying so.

They read the config file ``serve`` reads (``--config``, else ``$BRIDGE_CONFIG``, else
``./config.yaml``), with the same ``${VAR}`` substitution and ``BRIDGE_DATA_DIR``
override, but offline (``config.load_offline``): a secret a command does not use need not
be set (the Sentry secret for ``status``, the database URL for ``send``); the one it does
use is asked for when it is used.

A shell's environment is often not the bridge's (``ALERTMANAGER_URLS`` set in the pod, not
in the operator's terminal), so each command says on stderr which config, bridge, store and
Alertmanagers it used, and ``send --wait`` asks the running bridge which Alertmanagers it
posts to (``GET /-/status``) rather than trusting this shell's defaults.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import httpx

from bridge import config
from bridge.alertmanager import public_url

STATUS_TIMEOUT = 5.0


def say(line: str) -> None:
    """A line about what the command uses: on stderr, so stdout stays the answer."""
    print(line, file=sys.stderr)


def load(path: str) -> config.Offline:
    offline = config.load_offline(path)
    say(f"config: {Path(path).resolve()}")
    return offline


def bridge_status(base: str) -> dict[str, Any] | str:
    """The running bridge's ``/-/status`` (one alert listed), or why there is none."""
    try:
        response = httpx.get(f"{base}/-/status", params={"limit": 1}, timeout=STATUS_TIMEOUT)
    except httpx.HTTPError as exc:
        return f"no answer from {base}: {type(exc).__name__}"
    if response.status_code != 200:
        return f"{base}/-/status answered {response.status_code}"
    data: dict[str, Any] = response.json()
    return data


def alertmanagers(cfg: config.Config, status: dict[str, Any] | str) -> list[str]:
    """The Alertmanager URLs to poll: the running bridge's (``status``), each with this
    config's credentials when the config names the same URL; else the config's. Says which."""
    mine = {public_url(url): url for url in cfg.alertmanager.urls}
    if isinstance(status, str) or not status.get("alertmanagers"):
        why = status if isinstance(status, str) else "the bridge does not say"
        say(f"alertmanagers: {', '.join(mine)} (from the config; {why})")
        return list(cfg.alertmanager.urls)
    theirs: list[str] = status["alertmanagers"]
    say(f"alertmanagers: {', '.join(theirs)} (as the running bridge reports)")
    if set(theirs) != set(mine):
        say(
            f"  note: this shell's config gives {', '.join(mine)}; the bridge's environment "
            "differs (e.g. ALERTMANAGER_URLS), so the bridge's are used"
        )
    return [mine.get(url, url) for url in theirs]
