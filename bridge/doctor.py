"""``sentry-bridge doctor``: prove the path from Sentry to every Alertmanager, in words an
operator can act on.

Each check is bounded in time and answers a name, ok and a detail (what is wrong and what
to do); the command exits 1 when any fails, and ``--json`` prints them as one object.

* ``config``: the file ``serve`` reads, loaded the same way (offline: a missing secret is
  the next check's finding, not a crash);
* ``secrets``: each secret key, "set" or "missing" and from where (never its value);
* ``sentry_api``: ``GET /api/0/`` with ``sentry.api_token``. Sentry's ``IndexEndpoint``
  (getsentry/sentry src/sentry/api/endpoints/index.py) answers ``{"auth": {"scopes": [...]}}``
  for a token; enrichment reads "Retrieve an Issue" (``GroupDetailsEndpoint``), which
  ``GroupPermission`` (src/sentry/api/bases/group.py) opens to ``event:read`` (or
  ``event:write`` / ``event:admin``);
* ``alertmanager <host:port>``: ``GET /api/v2/status`` (openapi ``getStatus``):
  ``versionInfo.version``, ``cluster.status`` and ``cluster.peers``;
* ``store``: from here, the SQLite file's directory writable, or PostgreSQL reachable with
  its schema version (``bridge.store.pg.connection.schema_version``), pool and spool limits;
* ``bridge``: the running bridge's admin ``/-/status`` (store, queues, dead letters) and its
  ``/metrics`` (``sentry_bridge_store_up``, the spool against ``store.spool.max_webhooks``);
* ``test alert``: one sent through the running bridge, read back from every Alertmanager
  with its receivers, and resolved (``bridge.probe``).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import yaml

from bridge import client, config, probe, send
from bridge.alertmanager import build_client, public_url, target_name
from bridge.errors import ConfigError, StoreError
from bridge.probe import Check
from bridge.status import base_url as admin_base_url

CHECK_TIMEOUT = 5.0  # each HTTP check
# Sentry's API: a token needs one of these for "Retrieve an Issue" (GroupPermission GET).
ENRICH_SCOPES = frozenset({"event:read", "event:write", "event:admin"})
_REF = re.compile(r"^\$\{(file:[^}]+|[^}:]+)(?::-[^}]*)?\}$")


def _raw(data: Any, key: str) -> Any:
    for part in key.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def _where(raw: Any) -> str:
    """Where a secret comes from, never what it is."""
    text = ",".join(map(str, raw)) if isinstance(raw, list) else str(raw)
    found = _REF.match(text.strip())
    if found is None:
        return "in the config file"
    ref = found.group(1)
    return f"from the file {ref[5:]}" if ref.startswith("file:") else f"from ${ref}"


def _value(cfg: config.Config, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = getattr(node, part, None)
    return node


def secrets(path: str, offline: config.Offline) -> Check:
    """Each secret key: set or not, and from where (the variable or file named in the
    config), as the config resolves it here; a secret ``serve`` would need fails."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    cfg = offline.config
    parts = []
    for key in sorted(config.SECRET_KEYS):
        raw = _raw(data, key)
        if raw in (None, "", []) or (key.startswith("store.") and cfg.store.backend == "sqlite"):
            continue
        state = "set" if _value(cfg, key) not in (None, []) else "not set"
        parts.append(f"{key}: {state} ({_where(raw)})")
    detail = "; ".join(parts) or "none configured"
    if offline.needed:
        detail += ". Missing, set it where the bridge runs: " + "; ".join(offline.needed)
    return Check("secrets", not offline.needed, detail)


async def sentry_api(cfg: config.Sentry) -> Check:
    if cfg.api_token is None:
        return Check("sentry_api", True, "sentry.api_token not set: enrichment is off (optional)")
    url = cfg.base_url.rstrip("/") + "/api/0/"
    headers = {"Authorization": f"Bearer {cfg.api_token.get_secret_value()}"}
    try:
        async with httpx.AsyncClient(timeout=CHECK_TIMEOUT, follow_redirects=False) as http:
            response = await http.get(url, headers=headers)
    except httpx.HTTPError as exc:
        return Check(
            "sentry_api",
            False,
            f"{url}: no answer ({type(exc).__name__}): check sentry.base_url and the network",
        )
    if response.status_code in (401, 403):
        return Check(
            "sentry_api",
            False,
            f"{url} refused the token ({response.status_code}): create a new token in Sentry "
            "(an internal integration's, with Issue & Event: Read) and set sentry.api_token",
        )
    try:
        auth = response.json().get("auth") if response.status_code == 200 else None
    except ValueError:
        auth = None
    if not isinstance(auth, dict):
        return Check(
            "sentry_api",
            False,
            f"{url} answered {response.status_code} without the token's scopes: is "
            "sentry.base_url Sentry's address (https://sentry.io or your own host)?",
        )
    scopes = sorted(str(s) for s in auth.get("scopes") or [])
    if not ENRICH_SCOPES & set(scopes):
        return Check(
            "sentry_api",
            False,
            f"the token's scopes ({', '.join(scopes) or 'none'}) lack event:read, which "
            "enrichment needs to read issues: give the token Issue & Event: Read",
        )
    org = cfg.organization or "not set"
    return Check(
        "sentry_api", True, f"{url}: token accepted, scopes {', '.join(scopes)}; organization {org}"
    )


async def alertmanager(cfg: config.Alertmanager, url: str) -> Check:
    name = f"alertmanager {target_name(url)}"
    try:
        async with build_client(cfg) as http:
            response = await http.get(f"{url}/api/v2/status", timeout=CHECK_TIMEOUT)
            response.raise_for_status()
            data = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        why = str(exc) or type(exc).__name__
        return Check(
            name,
            False,
            f"{public_url(url)}/api/v2/status: {why}: is Alertmanager running there, and "
            "are alertmanager.urls and its credentials right?",
        )
    version = (data.get("versionInfo") or {}).get("version", "?")
    cluster = data.get("cluster") or {}
    peers = cluster.get("peers") or []
    status = cluster.get("status", "?")
    detail = f"version {version}, cluster {status}, {len(peers)} peer(s)"
    if status == "settling":
        detail += " (still settling: wait and run again)"
    return Check(name, status != "failed", detail)


async def store(cfg: config.Config) -> Check:
    """The store as this shell reaches it: the SQLite file's directory writable here, or
    PostgreSQL reachable with the schema at this version's migration (read with the
    engine's own ``schema_version``), and the pool and spool settings."""
    from bridge.store import describe

    where = describe(cfg)
    if cfg.store.backend == "sqlite":
        data_dir = cfg.store.data_dir
        if not data_dir.is_dir() or not os.access(data_dir, os.W_OK):
            return Check(
                "store",
                False,
                f"{where}: {data_dir} is not a writable directory here: run doctor where the "
                "bridge runs (kubectl exec), with its BRIDGE_DATA_DIR",
            )
        return Check("store", True, f"{where}: directory writable")
    settings = cfg.store.postgres
    spool = cfg.store.spool
    limits = (
        f"pool_size {settings.pool_size} per replica; spool up to {spool.max_webhooks} "
        f"webhooks or {spool.max_bytes} bytes under {cfg.store.data_dir}"
    )
    if settings.dsn is None:
        return Check("store", False, f"{where}: set store.postgres.dsn (BRIDGE_DATABASE_URL)")
    from bridge.store.pg import connection
    from bridge.store.pg.schema import MIGRATIONS

    latest = MIGRATIONS[-1].version
    try:
        async with asyncio.timeout(settings.connect_timeout + CHECK_TIMEOUT):
            conn = await connection.connect_one(settings)
            try:
                version = await connection.schema_version(conn, settings.schema_)
            finally:
                await conn.close()
    except (OSError, TimeoutError, asyncpg.PostgresError, StoreError) as exc:
        return Check(
            "store",
            False,
            f"{where}: not reachable from here ({type(exc).__name__}): check the server, "
            "store.postgres.dsn and its TLS settings; meanwhile the bridge spools; " + limits,
        )
    detail = f"{where}: reachable, schema version {version}"
    if version < latest:
        detail += f": this bridge's is {latest}; start the bridge (it migrates at start)"
    elif version > latest:
        detail += f": this bridge's is {latest}; a newer bridge migrated it, run its doctor"
    return Check("store", version == latest, f"{detail}; {limits}")


def _metrics(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            try:
                out[series] = float(value)
            except ValueError:
                continue
    return out


async def bridge(cfg: config.Config, webhook: str, admin: str) -> Check:
    """The running bridge: its store and queues (admin /-/status), its spool (/metrics)."""
    root = webhook.removesuffix(send.WEBHOOK_PATH)
    problems: list[str] = []
    facts: list[str] = []
    async with httpx.AsyncClient(timeout=CHECK_TIMEOUT) as http:
        try:
            status = await http.get(f"{admin}/-/status", params={"limit": 1})
        except httpx.HTTPError as exc:
            return Check(
                "bridge",
                False,
                f"{admin}/-/status: no answer ({type(exc).__name__}): is the bridge running, "
                "and server.admin_host/admin_port (or --admin-url) right?",
            )
        if status.status_code == 200:
            data = status.json()
            facts.append(f"store {data.get('store', '?')}")
            facts.append(f"inbox {data.get('inbox', '?')}")
            depth = data.get("queue_depth") or {}
            facts += [f"queue {name}: {count}" for name, count in depth.items()]
            if data.get("alertmanager_down"):
                problems.append("failing now: " + ", ".join(data["alertmanager_down"]))
            if data.get("dead_letter_count"):
                problems.append(
                    f"{data['dead_letter_count']} dead letter(s): see sentry-bridge status"
                )
        else:
            problems.append(f"/-/status answered {status.status_code}: {status.text.strip()}")
        try:
            scraped = _metrics((await http.get(f"{root}/metrics")).text)
        except httpx.HTTPError:
            scraped = {}
    if scraped.get("sentry_bridge_store_up") == 0:
        problems.append("the store does not take writes now (sentry_bridge_store_up 0)")
    if cfg.store.backend == "postgres" and "sentry_bridge_spool_webhooks" in scraped:
        spooled = int(scraped["sentry_bridge_spool_webhooks"])
        limit = cfg.store.spool.max_webhooks
        facts.append(f"spool {spooled} of {limit} webhooks")
        if spooled >= limit:
            problems.append(
                f"the spool is full ({spooled} of store.spool.max_webhooks {limit}): new "
                "webhooks are refused 503; bring PostgreSQL back (store.postgres.dsn)"
            )
    detail = "; ".join(facts + problems)
    return Check("bridge", not problems, detail)


async def _run(
    path: str, webhook_url: str | None, admin_url: str | None, wait: float
) -> list[Check]:
    try:
        offline = client.load(path)
    except ConfigError as exc:
        return [Check("config", False, f"{exc}: fix it (sentry-bridge check-config {path})")]
    cfg = offline.config
    checks = [Check("config", True, "valid")]
    checks.append(secrets(path, offline))
    webhook = send.webhook_url(webhook_url, cfg)
    admin = admin_base_url(admin_url, cfg)
    found = await asyncio.to_thread(client.bridge_status, admin)
    urls = client.alertmanagers(cfg, found)
    checks += await asyncio.gather(
        sentry_api(cfg.sentry),
        store(cfg),
        *(alertmanager(cfg.alertmanager, url) for url in urls),
        bridge(cfg, webhook, admin),
    )
    checks.append(await probe.test_alert(cfg, webhook, urls, wait))
    return checks


def run(
    *, config_path: str, url: str | None, admin_url: str | None, as_json: bool, timeout: float
) -> int:
    checks = asyncio.run(_run(config_path, url, admin_url, timeout))
    ok = all(check.ok for check in checks)
    if as_json:
        print(json.dumps({"ok": ok, "checks": [asdict(c) for c in checks]}, indent=2))
    else:
        for check in checks:
            first, *rest = check.detail.split("; ")
            print(f"{'ok  ' if check.ok else 'FAIL'} {check.name}: {first}")
            for part in rest:
                print(f"       {part}")
        print("all checks passed" if ok else "some checks FAILED (see above)")
    return 0 if ok else 1
