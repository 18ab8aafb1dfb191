"""The bridge's configuration: the only module that reads config files and the environment.

``load(path)`` reads YAML, substitutes ``${VAR}``, ``${VAR:-default}`` and
``${file:/path}`` inside string values (so secrets never live in the committed
file), and validates the result. Every key is checked: an unknown key or a bad
value raises :class:`ConfigError` naming the key's path, e.g.
``classification.rules[3].match.users.gt``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from bridge.errors import ConfigError
from bridge.model import Severity
from bridge.rules import (
    LabelName,
    Rule,
    Strict,
)

# --- small value types -------------------------------------------------------------------

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def _parse_duration(value: Any) -> Any:
    """``30s``, ``5m``, ``1h``, ``24h`` (Prometheus style) or a number of seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration such as 30s, 5m or 1h")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    raise ValueError(f"{value!r} is not a duration such as 30s, 5m or 1h")


def _split_commas(value: Any) -> Any:
    """Lists may be written as YAML lists or, from the environment, as ``a,b,c``."""
    if value is None:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _secrets(value: Any) -> Any:
    """Secrets as a list with the empty ones left out, however they are written: an unset
    variable in a YAML list (``["${NEW:-}", "${OLD:-}"]``) or in ``a,,b`` would otherwise be
    an empty HMAC key, which anyone can sign with."""
    value = _split_commas(value)
    if isinstance(value, list):
        return [v for v in value if not (isinstance(v, str) and not v.strip())]
    return value


Seconds = Annotated[float, BeforeValidator(_parse_duration), Field(gt=0)]
CommaList = Annotated[list[str], BeforeValidator(_split_commas)]
SecretList = Annotated[list[SecretStr], BeforeValidator(_secrets)]


def _empty_to_none(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


OptionalSecret = Annotated[SecretStr | None, BeforeValidator(_empty_to_none)]
OptionalPath = Annotated[Path | None, BeforeValidator(_empty_to_none)]
# Sentry's organization slugs: letters, digits, "-" and "_"; it becomes a host and path part.
OrgSlug = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


RESERVED_LABELS = frozenset(
    {"alertname", "severity", "source", "project", "environment", "escalated"}
    | {"sentry_issue_id", "sentry_alert_rule_id"}
)


SettingValue = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^\S(.*\S)?$")]


class RuleSettings(Strict):
    """What a Sentry user may choose in the bridge's alert rule action (docs/sentry.md): the
    values of the ``team`` and ``service`` labels. Only these reach Alertmanager, so a user of
    Sentry's UI cannot add a label or a value the config does not list."""

    teams: list[SettingValue] = Field(default_factory=list)
    services: list[SettingValue] = Field(default_factory=list)

    @field_validator("teams", "services")
    @classmethod
    def _unique(cls, values: list[str]) -> list[str]:
        if len(set(values)) != len(values):
            raise ValueError("a value is listed twice")
        return values


class Classification(Strict):
    default_severity: Severity = Severity.MEDIUM
    severity_labels: dict[Severity, dict[LabelName, str]] = Field(default_factory=dict)
    rules: list[Rule] = Field(default_factory=list)
    rule_settings: RuleSettings = Field(default_factory=RuleSettings)

    @model_validator(mode="after")
    def _checks(self) -> Self:
        names = [rule.name for rule in self.rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"rule names must be unique; repeated: {', '.join(dupes)}")
        for rule in self.rules:
            clash = RESERVED_LABELS & set(rule.labels)
            if clash:
                raise ValueError(f"rule {rule.name!r} sets reserved label(s) {sorted(clash)}")
        for severity, labels in self.severity_labels.items():
            clash = RESERVED_LABELS & set(labels)
            if clash:
                raise ValueError(f"severity_labels.{severity} sets reserved {sorted(clash)}")
        return self


def check_public_url(url: str) -> str:
    """An http(s) origin without a path: Sentry keeps only the scheme and host of the
    integration's Webhook URL when it calls a UI component's URI."""
    m = re.match(r"^(https?://[^/\s?#@]+)/?$", url.strip())
    if m is None:
        raise ValueError(
            "an http(s) URL with no path, e.g. https://bridge.example.com (Sentry calls the "
            "alert rule action's URIs at the root of the Webhook URL's host)"
        )
    return m.group(1)


# --- the sections ------------------------------------------------------------------------


class Server(Strict):
    host: str = "0.0.0.0"
    port: int = Field(default=8080, ge=1, le=65535)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    # The operator listener (bridge/admin.py: /-/reload, /-/status, re-queue, quarantine):
    # loopback by default, reached with `kubectl exec` or `kubectl port-forward`; never the
    # port Sentry and Prometheus reach.
    admin_host: str = "127.0.0.1"
    admin_port: int = Field(default=8081, ge=1, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # Webhooks handled at once; past it the oldest one still receiving its body is cut off
    # (503) to make room, or, when every one is past its body, the new one is answered 503.
    # Probes and /metrics do not count against it (bridge/admission.py).
    max_concurrency: int = Field(default=256, ge=1)
    # Open connections on the webhook port; past it the one idle longest (kept alive, or
    # connected without a complete request head yet) is closed first (bridge/protocol.py).
    max_connections: int = Field(default=4096, ge=16)
    # Bytes of webhook bodies being received, before their signature is checked, across
    # all connections; past it the oldest body still arriving is cut off (503).
    max_pending_body_bytes: int = Field(default=64 * 1_048_576, ge=1024)
    # A request's headers, and then its body, must arrive within this; a connection that
    # sends no request for this long is closed (slow or idle clients hold no slot forever).
    read_timeout: Seconds = 10.0
    # How long a webhook waits for the store to make it durable before a 503 (retried).
    store_timeout: Seconds = 5.0
    # Unless idle (nothing this replica may take), the pipeline must complete a batch
    # within this, or /-/healthy goes 503 (bridge.compose).
    progress_timeout: Seconds = 10.0
    # One JSON object per line (for a log pipeline) or key=value text (for a terminal).
    log_format: Literal["json", "text"] = "json"

    @model_validator(mode="after")
    def _limits(self) -> Self:
        if self.admin_port == self.port:
            raise ValueError("admin_port must differ from port (the webhook listener)")
        if self.max_pending_body_bytes < self.max_body_bytes:
            raise ValueError(
                "max_pending_body_bytes must be at least max_body_bytes, or a body of the "
                "largest allowed size could never be received"
            )
        if self.max_connections < self.max_concurrency + 16:
            raise ValueError(
                "max_connections must exceed max_concurrency by at least 16, so probes and "
                "/metrics always find a connection while webhooks are in flight"
            )
        return self


class Sentry(Strict):
    # Integration-platform webhooks: Sentry-Hook-Signature, keyed with the client secret.
    client_secrets: SecretList = Field(default_factory=list)
    # Project service hooks: X-ServiceHook-Signature, keyed with the hook's secret.
    service_hook_secrets: SecretList = Field(default_factory=list)
    # The legacy WebHooks plugin cannot sign: a token in the URL (?token=...).
    legacy_token: OptionalSecret = None
    allow_unauthenticated: bool = False
    # Sentry's web/API base, for self-hosted Sentry; links and enrichment use it.
    base_url: str = "https://sentry.io"
    # Where Sentry reaches the bridge (the integration's Webhook URL is this plus
    # /webhooks/sentry), for `sentry-bridge sentry-schema`. Sentry calls the alert rule
    # action's URIs on this host with the path replaced (sentry_apps/external_requests/
    # select_requester.py _build_url), so it can have no path of its own.
    public_url: Annotated[str | None, BeforeValidator(_empty_to_none)] = None
    # The organization's slug: every issue alert then links to its issue's page, even from
    # webhooks whose links do not name the organization.
    organization: Annotated[OrgSlug | None, BeforeValidator(_empty_to_none)] = None
    api_token: OptionalSecret = None
    api_timeout: Seconds = 2.0
    api_cache_ttl: Seconds = 60.0
    api_cache_size: int = Field(default=10_000, ge=1)
    # With api_token set: how often the reconciler asks Sentry for the status of the issues
    # behind firing (and recently resolved) alerts (bridge/reconcile.py, issue 16 item 3).
    reconcile_interval: Seconds = 60.0
    # Refuse webhooks whose Sentry-Hook-Timestamp is further than this from now. Off by
    # default. Sentry does not sign the timestamp, so this only bounds how long a captured
    # webhook can be replayed together with remembering recent Request-IDs.
    max_timestamp_skew: Annotated[Seconds | None, BeforeValidator(_empty_to_none)] = None

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, url: str | None) -> str | None:
        return None if url is None else check_public_url(url)

    @property
    def authenticated(self) -> bool:
        # Each list holds no empty secret (_secrets), and an empty token is None.
        return bool(self.client_secrets or self.service_hook_secrets or self.legacy_token)

    def auth_modes(self) -> list[str]:
        """The ways a webhook can authenticate with this config (for the start-up line)."""
        modes = [
            name
            for name, on in (
                ("integration", bool(self.client_secrets)),
                ("service_hook", bool(self.service_hook_secrets)),
                ("legacy_token", self.legacy_token is not None),
                ("unauthenticated", self.allow_unauthenticated),
            )
            if on
        ]
        return modes


class Dedup(Strict):
    window: Seconds = 300.0
    escalate_after: int = Field(default=3, ge=2)
    escalate_period: Seconds = 1800.0


class BasicAuth(Strict):
    username: str
    password: SecretStr


class TLS(Strict):
    ca_file: OptionalPath = None
    cert_file: OptionalPath = None
    key_file: OptionalPath = None
    insecure_skip_verify: bool = False


class Alertmanager(Strict):
    urls: CommaList = Field(default_factory=lambda: ["http://localhost:9093"])
    timeout: Seconds = 5.0
    # Firing alerts carry endsAt = now + alert_lifetime; Sentry firing again extends it.
    alert_lifetime: Seconds = 3600.0
    # Re-send active alerts so a restarted Alertmanager converges (Prometheus: 1m),
    # and resolved ones for a while (Prometheus: 15m).
    resend_interval: Seconds = 60.0
    resolved_resend: Seconds = 900.0
    batch_size: int = Field(default=256, ge=1, le=10_000)
    max_age: Seconds = 86400.0
    backoff_initial: Seconds = 0.5
    backoff_max: Seconds = 30.0
    basic_auth: BasicAuth | None = None
    bearer_token: OptionalSecret = None
    tls: TLS = Field(default_factory=TLS)

    @field_validator("urls")
    @classmethod
    def _urls(cls, urls: list[str]) -> list[str]:
        if not urls:
            raise ValueError("at least one Alertmanager URL is needed")
        for index, url in enumerate(urls):
            if not re.match(r"^https?://[^/\s]+", url):
                # Not the URL itself: it may carry user:password@.
                raise ValueError(f"entry {index + 1} is not an http(s) URL")
        if len(set(urls)) != len(urls):
            raise ValueError("an Alertmanager URL is listed twice")
        return [u.rstrip("/") for u in urls]

    @model_validator(mode="after")
    def _one_auth(self) -> Self:
        if self.basic_auth and self.bearer_token:
            raise ValueError("set basic_auth or bearer_token, not both")
        return self


# PostgreSQL identifiers: unquoted, lower case, at most 63 bytes (NAMEDATALEN - 1); the schema
# name is interpolated into SQL (search_path, CREATE SCHEMA), so nothing else gets through.
_IDENTIFIER = r"^[a-z_][a-z0-9_]{0,62}$"


class PostgresSSL(Strict):
    # libpq's sslmode values (PostgreSQL docs, "SSL Support", table 34.1); no "allow", which
    # only protects against nothing. None: what the DSN's sslmode says (libpq: prefer).
    mode: Literal["disable", "prefer", "require", "verify-ca", "verify-full"] | None = None
    root_cert: OptionalPath = None
    cert: OptionalPath = None
    key: OptionalPath = None

    @model_validator(mode="after")
    def _checks(self) -> Self:
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key go together")
        if self.mode in {None, "disable"} and (self.root_cert or self.cert):
            raise ValueError(
                f"certificates are set but mode is {self.mode or 'unset'}; set mode to "
                "require, verify-ca or verify-full"
            )
        return self


class Postgres(Strict):
    # postgresql://user:password@host:5432/db: a secret (it usually holds the password).
    dsn: OptionalSecret = None
    schema_: str = Field(default="sentry_bridge", alias="schema", pattern=_IDENTIFIER)
    pool_size: int = Field(default=10, ge=1, le=1000)
    connect_timeout: Seconds = 5.0
    statement_timeout: Seconds = 5.0
    ssl: PostgresSSL = Field(default_factory=PostgresSSL)

    @field_validator("dsn")
    @classmethod
    def _dsn(cls, dsn: SecretStr | None) -> SecretStr | None:
        if dsn is not None and not re.match(
            r"^postgres(ql)?://", dsn.get_secret_value()
        ):  # the value itself is never shown: it may hold a password
            raise ValueError("not a postgresql:// URL")
        return dsn


class Spool(Strict):
    """With ``backend: postgres`` only: where webhooks wait while PostgreSQL does not take
    them (``bridge.store.spool``), a SQLite file under ``store.data_dir``."""

    # How long a webhook waits for PostgreSQL before it is spooled instead: with the spool's
    # own commit it must fit in Sentry's one-second timeout for its webhooks.
    accept_timeout: Seconds = Field(default=0.3, le=0.8)
    # Beyond either bound a webhook is answered 503 (Sentry retries it).
    max_webhooks: int = Field(default=100_000, ge=1)
    max_bytes: int = Field(default=256 * 1024 * 1024, ge=1024 * 1024)


class Store(Strict):
    # sqlite: embedded, one replica. postgres: shared by several replicas (docs/scaling.md).
    backend: Literal["sqlite", "postgres"] = "sqlite"
    # The SQLite store's file, or with postgres this pod's spool (BRIDGE_DATA_DIR overrides).
    data_dir: Path = Path("./data")
    # Alerts waiting for an Alertmanager, at most; beyond it a webhook is answered 503.
    max_queued: int = Field(default=100_000, ge=1)
    # The same signed body again within this is acknowledged with no effect (Sentry's
    # retries resend the very body); at most max_bodies digests are kept, newest win.
    body_retention: Seconds = 86400.0
    max_bodies: int = Field(default=100_000, ge=1)
    postgres: Postgres = Field(default_factory=Postgres)
    spool: Spool = Field(default_factory=Spool)

    @model_validator(mode="after")
    def _checks(self, info: ValidationInfo) -> Self:
        offline = bool(info.context and info.context.get("offline"))  # load_offline notes it
        if self.backend == "postgres" and self.postgres.dsn is None and not offline:
            raise ValueError(
                "postgres.dsn: required with backend: postgres (e.g. ${BRIDGE_DATABASE_URL})"
            )
        return self


# "escalation: none" on a rule: no policy, whatever escalation.default says.
NO_ESCALATION = "none"
PolicyName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]


class EscalationStep(Strict):
    """One tier: once the alert has fired for ``after``, one more alert fires with the same
    labels plus ``labels`` (issue 16), so Alertmanager routes it to the next receiver."""

    after: Seconds
    labels: dict[LabelName, str] = Field(min_length=1)

    @field_validator("labels")
    @classmethod
    def _not_reserved(cls, labels: dict[str, str]) -> dict[str, str]:
        clash = RESERVED_LABELS & set(labels)
        if clash:
            raise ValueError(f"sets reserved label(s) {sorted(clash)}")
        return labels


class Escalation(Strict):
    """Escalation policies (docs/alertmanager.md, "Escalation tiers"): which alert fires
    after how long, and which severity uses which policy when its rule names none."""

    default: dict[Severity, PolicyName] = Field(default_factory=dict)
    policies: dict[PolicyName, Annotated[list[EscalationStep], Field(min_length=1)]] = Field(
        default_factory=dict
    )
    # How often due steps are looked for (one replica at a time); a step held by a
    # silence is looked at again after this.
    interval: Seconds = 10.0

    @model_validator(mode="after")
    def _checks(self) -> Self:
        if NO_ESCALATION in self.policies:
            raise ValueError(f"policies: {NO_ESCALATION!r} is reserved (no escalation)")
        for name, steps in self.policies.items():
            afters = [s.after for s in steps]
            if afters != sorted(set(afters)):
                raise ValueError(f"policies.{name}: each step's `after` must exceed the last")
            sets = [tuple(sorted(s.labels.items())) for s in steps]
            if len(set(sets)) != len(sets):
                raise ValueError(f"policies.{name}: two steps add the same labels")
        for severity, name in self.default.items():
            if name not in self.policies and name != NO_ESCALATION:
                raise ValueError(f"default.{severity}: no policy named {name!r}")
        return self


class Shutdown(Strict):
    grace_period: Seconds = 25.0


class Config(Strict):
    server: Server = Field(default_factory=Server)
    sentry: Sentry = Field(default_factory=Sentry)
    classification: Classification = Field(default_factory=Classification)
    dedup: Dedup = Field(default_factory=Dedup)
    alertmanager: Alertmanager = Field(default_factory=Alertmanager)
    store: Store = Field(default_factory=Store)
    escalation: Escalation = Field(default_factory=Escalation)
    shutdown: Shutdown = Field(default_factory=Shutdown)

    @model_validator(mode="after")
    def _checks(self, info: ValidationInfo) -> Self:
        offline = bool(info.context and info.context.get("offline"))
        if not self.sentry.authenticated and not self.sentry.allow_unauthenticated and not offline:
            raise ValueError(
                "sentry: no client_secrets, service_hook_secrets or legacy_token is set, so "
                "every webhook would be unauthenticated; set SENTRY_CLIENT_SECRET (or "
                "another), or set sentry.allow_unauthenticated: true to accept that explicitly"
            )
        if self.dedup.window >= self.alertmanager.alert_lifetime:
            raise ValueError(
                "dedup.window: must be shorter than alertmanager.alert_lifetime, or an alert "
                "Sentry keeps firing would expire in Alertmanager while its repeats are suppressed"
            )
        known = {*self.escalation.policies, NO_ESCALATION}
        for rule in self.classification.rules:
            if rule.escalation is not None and rule.escalation not in known:
                raise ValueError(
                    f"classification.rules: rule {rule.name!r} names escalation policy "
                    f"{rule.escalation!r}, which escalation.policies does not define"
                )
        lifetime = self.alertmanager.alert_lifetime
        if self.sentry.api_token is not None and self.sentry.reconcile_interval * 3 > lifetime:
            raise ValueError(
                "sentry.reconcile_interval: must be at most a third of "
                "alertmanager.alert_lifetime, or an alert Sentry holds open could lapse in "
                "Alertmanager between two checks"
            )
        needed = postgres_connections(len(self.alertmanager.urls))
        if self.store.backend == "postgres" and self.store.postgres.pool_size < needed:
            raise ValueError(
                f"store.postgres.pool_size: {self.store.postgres.pool_size} is too small for "
                f"{len(self.alertmanager.urls)} Alertmanager(s); at least {needed}"
            )
        return self


def postgres_connections(alertmanagers: int) -> int:
    """Connections the PostgreSQL store may hold at once: a take's transaction, an accept's
    group commit, the lease or the sizes, and per Alertmanager its lane and what its sender
    writes while holding the lane. A smaller pool could leave delivery waiting for itself."""
    return 3 + 2 * alertmanagers


# --- loading -----------------------------------------------------------------------------

_VAR = re.compile(r"\$\{(file:[^}]+|[^}:]+)(?::-([^}]*))?\}")


# The keys that hold secrets: an offline check (check-config, explain) validates the rest
# of the file without them and says which would be needed at serve time.
SECRET_KEYS = frozenset(
    {
        "sentry.client_secrets",
        "sentry.service_hook_secrets",
        "sentry.legacy_token",
        "sentry.api_token",
        "alertmanager.bearer_token",
        "alertmanager.basic_auth.password",
        "store.postgres.dsn",
    }
)


def _substitute(
    value: Any, path: str, env: Mapping[str, str], missing: list[str] | None = None
) -> Any:
    if isinstance(value, dict):
        return {
            k: _substitute(v, f"{path}.{k}" if path else str(k), env, missing)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_substitute(v, f"{path}[{i}]", env, missing) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def replace(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name.startswith("file:"):
            file = Path(name.removeprefix("file:"))
            try:
                return file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                if missing is not None and path in SECRET_KEYS:
                    missing.append(f"{path}: the file {file}")
                    return ""
                raise ConfigError(f"{path}: cannot read {file}: {exc.strerror}") from exc
        if name in env and env[name] != "":
            return env[name]
        if default is not None:
            return default
        if missing is not None and path in SECRET_KEYS:
            missing.append(f"{path}: the environment variable {name}")
            return ""
        raise ConfigError(f"{path}: environment variable {name} is not set")

    return _VAR.sub(replace, value)


def _location(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith("function-") or part in {"list[str]", "str", "float", "int"}:
            continue  # pydantic's internal validator steps, not config keys
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors(include_url=False, include_input=False):
        where = _location(err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(msg if where == "(top level)" else f"{where}: {msg}")
    return "\n".join(dict.fromkeys(lines))


def parse(data: Any, env: Mapping[str, str] | None = None) -> Config:
    """Validate an already-parsed YAML document (used by ``load`` and the tests)."""
    return _parse(data, env, None)


def _parse(data: Any, env: Mapping[str, str] | None, missing: list[str] | None) -> Config:
    env = os.environ if env is None else env
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("the config file must be a YAML mapping")
    data = _substitute(data, "", env, missing)
    if env.get("BRIDGE_DATA_DIR"):
        data.setdefault("store", {})
        if isinstance(data["store"], dict):
            data["store"]["data_dir"] = env["BRIDGE_DATA_DIR"]
    try:
        return Config.model_validate(data, context={"offline": missing is not None})
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def _read(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None


def load(path: str | Path, env: Mapping[str, str] | None = None) -> Config:
    path = Path(path)
    data = _read(path)
    try:
        return parse(data, env)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


@dataclass(frozen=True)
class Offline:
    """A config checked without its secrets (``check-config``, ``explain``, and the client
    commands ``send``, ``status``, ``quarantine``: each uses only the secrets it needs)."""

    config: Config
    # What is not there now and ``serve`` will need: unset variables and unreadable files
    # of secret keys, and the missing authentication.
    needed: list[str]


def load_offline(path: str | Path, env: Mapping[str, str] | None = None) -> Offline:
    """Validate everything but the secrets: a secret's unset variable or unreadable file
    is noted, not an error, and so is a config with no way to authenticate webhooks."""
    path = Path(path)
    data = _read(path)
    missing: list[str] = []
    try:
        cfg = _parse(data, env, missing)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if not cfg.sentry.authenticated and not cfg.sentry.allow_unauthenticated:
        missing.append(
            "sentry: one of client_secrets (SENTRY_CLIENT_SECRET in the shipped config), "
            "service_hook_secrets (SENTRY_SERVICE_HOOK_SECRET) or legacy_token "
            "(SENTRY_LEGACY_TOKEN); serve refuses to start without one"
        )
    if (
        cfg.store.backend == "postgres"
        and cfg.store.postgres.dsn is None
        and not any(m.startswith("store.postgres.dsn:") for m in missing)
    ):
        missing.append(
            "store.postgres.dsn: required with backend: postgres (BRIDGE_DATABASE_URL in the "
            "shipped config)"
        )
    return Offline(cfg, missing)
