"""Loading configuration: the shipped config.yaml, the environment, and messages that name
the wrong key without ever showing a secret."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from bridge import config
from bridge.errors import ConfigError
from bridge.model import Severity

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "config.yaml"

SECRET = "s3cret-client-value"
HOOK_SECRET = "s3cret-hook-value"
LEGACY = "s3cret-legacy-token"
API_TOKEN = "s3cret-api-token"
ALL_SECRETS = (SECRET, HOOK_SECRET, LEGACY, API_TOKEN)


BASE = {"sentry": {"client_secrets": "${SENTRY_CLIENT_SECRET}"}}


def parse(data: dict[str, Any], env: dict[str, str] | None = None) -> config.Config:
    """``data`` over a minimal valid config (a client secret from the environment)."""
    return config.parse(BASE | data, env={"SENTRY_CLIENT_SECRET": SECRET} if env is None else env)


def error(data: dict[str, Any], env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as exc:
        parse(data, env)
    return str(exc.value)


def rules(*items: dict[str, Any]) -> dict[str, Any]:
    return {"classification": {"rules": list(items)}}


# --- the shipped file ----------------------------------------------------------------------


def test_shipped_config_loads_with_only_a_secret_set() -> None:
    cfg = config.load(SHIPPED, env={"SENTRY_CLIENT_SECRET": SECRET})
    assert [s.get_secret_value() for s in cfg.sentry.client_secrets] == [SECRET]
    assert cfg.sentry.service_hook_secrets == []
    assert cfg.sentry.legacy_token is None
    assert cfg.sentry.api_token is None
    assert cfg.sentry.base_url == "https://sentry.io"
    assert cfg.alertmanager.urls == ["http://localhost:9093"]
    assert cfg.store.data_dir == Path("./data")
    assert (cfg.dedup.window, cfg.dedup.escalate_after, cfg.dedup.escalate_period) == (300, 3, 1800)
    assert cfg.alertmanager.alert_lifetime == 3600
    assert (cfg.server.port, cfg.server.max_body_bytes) == (8080, 1_048_576)
    assert (cfg.sentry.api_timeout, cfg.sentry.api_cache_ttl) == (2, 60)
    assert cfg.classification.default_severity is Severity.MEDIUM
    assert cfg.classification.severity_labels == {
        Severity.CRITICAL: {"priority": "P1", "page": "true"},
        Severity.HIGH: {"priority": "P2", "page": "true"},
        Severity.MEDIUM: {"priority": "P3", "page": "false"},
        Severity.LOW: {"priority": "P4", "page": "false"},
    }


def test_shipped_config_reads_the_environment() -> None:
    env = {
        "SENTRY_CLIENT_SECRET": f"{SECRET},{SECRET}-old",
        "SENTRY_SERVICE_HOOK_SECRET": HOOK_SECRET,
        "SENTRY_LEGACY_TOKEN": LEGACY,
        "SENTRY_API_TOKEN": API_TOKEN,
        "SENTRY_BASE_URL": "https://sentry.example.com",
        "ALERTMANAGER_URLS": "http://am-0:9093, http://am-1:9093/",
        "BRIDGE_DATA_DIR": "/var/lib/sentry-bridge",
    }
    cfg = config.load(SHIPPED, env=env)
    assert [s.get_secret_value() for s in cfg.sentry.client_secrets] == [SECRET, f"{SECRET}-old"]
    assert [s.get_secret_value() for s in cfg.sentry.service_hook_secrets] == [HOOK_SECRET]
    assert cfg.sentry.legacy_token is not None
    assert cfg.sentry.legacy_token.get_secret_value() == LEGACY
    assert cfg.sentry.api_token is not None
    assert cfg.sentry.api_token.get_secret_value() == API_TOKEN
    assert cfg.sentry.base_url == "https://sentry.example.com"
    assert cfg.alertmanager.urls == ["http://am-0:9093", "http://am-1:9093"]
    assert cfg.store.data_dir == Path("/var/lib/sentry-bridge")


@pytest.mark.parametrize(
    "variable", ["SENTRY_CLIENT_SECRET", "SENTRY_SERVICE_HOOK_SECRET", "SENTRY_LEGACY_TOKEN"]
)
def test_any_one_secret_is_enough(variable: str) -> None:
    assert config.load(SHIPPED, env={variable: "x"}).sentry.authenticated


@pytest.mark.parametrize(
    "env",
    [
        pytest.param({}, id="none-set"),
        pytest.param({"SENTRY_CLIENT_SECRET": "", "SENTRY_LEGACY_TOKEN": ""}, id="set-empty"),
        pytest.param({"SENTRY_CLIENT_SECRET": " , "}, id="only-commas"),
        pytest.param({"SENTRY_API_TOKEN": API_TOKEN}, id="api-token-is-not-auth"),
    ],
)
def test_shipped_config_refuses_to_run_unauthenticated(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="unauthenticated") as exc:
        config.load(SHIPPED, env=env)
    assert "SENTRY_CLIENT_SECRET" in str(exc.value)
    assert str(exc.value).startswith(f"{SHIPPED}: ")


@pytest.mark.parametrize(
    "sentry_section",
    [
        pytest.param({"client_secrets": ["${NEW:-}", "${OLD:-}"]}, id="yaml-list-of-unset"),
        pytest.param({"client_secrets": ["", "  "]}, id="yaml-list-of-empty"),
        pytest.param({"service_hook_secrets": ["${HOOK:-}"]}, id="hook-list-of-unset"),
        pytest.param({"client_secrets": "${NEW:-},${OLD:-}"}, id="comma-list-of-unset"),
        pytest.param({"legacy_token": "${TOKEN:-}"}, id="token-unset"),
        pytest.param({"legacy_token": "   "}, id="token-blank"),
        pytest.param({"client_secrets": ["${file:EMPTY}"]}, id="empty-secret-file"),
    ],
)
def test_empty_secrets_are_no_credential(sentry_section: dict[str, Any], tmp_path: Path) -> None:
    """An empty HMAC key signs anything: empty secrets are dropped wherever they come from,
    and with nothing left the bridge refuses to start unauthenticated."""
    empty = tmp_path / "empty"
    empty.write_text("\n", encoding="utf-8")
    section = {
        key: [item.replace("EMPTY", str(empty)) for item in value]
        if isinstance(value, list)
        else value
        for key, value in sentry_section.items()
    }
    with pytest.raises(ConfigError, match="unauthenticated"):
        config.parse({"sentry": section}, env={})


def test_an_unset_secret_beside_a_set_one_is_dropped() -> None:
    """Rotation: ``[${NEW:-}, ${OLD:-}]`` with only OLD set keeps OLD alone."""
    cfg = config.parse(
        {"sentry": {"client_secrets": ["${NEW:-}", "${OLD:-}"]}}, env={"OLD": "old-secret"}
    )
    assert [s.get_secret_value() for s in cfg.sentry.client_secrets] == ["old-secret"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [("acme", "acme"), ("", None), ("${SENTRY_ORG:-}", None), ("my-org_1", "my-org_1")],
)
def test_sentry_organization(value: str, expected: str | None) -> None:
    cfg = parse({"sentry": {"client_secrets": "x", "organization": value}})
    assert cfg.sentry.organization == expected


@pytest.mark.parametrize("value", ["ac/me", "a b", "x" * 65])
def test_a_bad_organization_names_the_key(value: str) -> None:
    problem = error({"sentry": {"client_secrets": "x", "organization": value}})
    assert problem.startswith("sentry.organization: ")


@pytest.mark.parametrize(
    ("section", "model"),
    [
        ("server", config.Server),
        ("dedup", config.Dedup),
        ("alertmanager", config.Alertmanager),
        ("store", config.Store),
        ("shutdown", config.Shutdown),
    ],
)
def test_shipped_sections_state_the_defaults(section: str, model: type[BaseModel]) -> None:
    """The file shows what runs: the values in it are config.py's defaults."""
    cfg = config.load(SHIPPED, env={"SENTRY_CLIENT_SECRET": SECRET})
    assert getattr(cfg, section) == model()


def test_shipped_sentry_section_states_the_defaults() -> None:
    cfg = config.load(SHIPPED, env={"SENTRY_CLIENT_SECRET": SECRET})
    assert cfg.sentry.model_dump(exclude={"client_secrets"}) == config.Sentry().model_dump(
        exclude={"client_secrets"}
    )


def test_every_key_is_in_the_shipped_file() -> None:
    """Every setting appears in config.yaml, set or in a comment, so an operator finds it."""
    text = SHIPPED.read_text(encoding="utf-8")
    sections: dict[str, type[BaseModel]] = {
        name: field.annotation  # type: ignore[misc]
        for name, field in config.Config.model_fields.items()
    }
    sections |= {"basic_auth": config.BasicAuth, "tls": config.TLS}
    sections |= {"postgres": config.Postgres, "ssl": config.PostgresSSL}
    for section, model in sections.items():
        assert re.search(rf"^\s*#?\s*{section}:", text, re.M), section
        for name, field in model.model_fields.items():
            key = field.alias or name
            assert re.search(rf"(?<![\w.]){key}:", text), f"{section}.{key}"


def test_every_shipped_setting_has_a_comment() -> None:
    """At 3 a.m. nobody reads config.py: each setting outside the rules (which have their
    own guide) has a comment on its line or just above it, shared by at most two."""
    lines = SHIPPED.read_text(encoding="utf-8").splitlines()
    start = lines.index("classification:")
    end = next(i for i in range(start + 1, len(lines)) if re.match(r"^[a-z]", lines[i]))
    settings = lines[:start] + lines[end:]
    for index, line in enumerate(settings):
        if not re.match(r"^\s*[a-z_]+:", line):
            continue
        above = [ln.strip() for ln in settings[max(0, index - 2) : index] if ln.strip()]
        commented = "#" in line or any(ln.startswith("#") for ln in above)
        assert commented, f"config.yaml: `{line.strip()}` has no comment"


# --- environment, durations, lists ---------------------------------------------------------


def test_variables_and_defaults() -> None:
    data = {
        "sentry": {"client_secrets": "${A}", "base_url": "${B:-https://sentry.example.com}"},
        "server": {"log_level": "${LEVEL:-info}"},
    }
    cfg = config.parse(data, env={"A": "x", "LEVEL": ""})
    assert cfg.sentry.base_url == "https://sentry.example.com"
    assert cfg.server.log_level == "info", "an empty variable takes the default"


def test_a_required_variable_that_is_unset_is_named() -> None:
    with pytest.raises(ConfigError) as exc:
        config.parse({"sentry": {"client_secrets": "${NOT_SET_ANYWHERE}"}}, env={})
    assert str(exc.value) == (
        "sentry.client_secrets: environment variable NOT_SET_ANYWHERE is not set"
    )


def test_file_substitution_reads_and_trims(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text(f"{SECRET}\n", encoding="utf-8")
    cfg = config.parse({"sentry": {"client_secrets": f"${{file:{secret}}}"}}, env={})
    assert [s.get_secret_value() for s in cfg.sentry.client_secrets] == [SECRET]


def test_file_substitution_names_a_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError) as exc:
        config.parse({"sentry": {"legacy_token": f"${{file:{missing}}}"}}, env={})
    assert str(exc.value).startswith(f"sentry.legacy_token: cannot read {missing}")


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        pytest.param("5m", 300.0, id="minutes"),
        pytest.param("1h", 3600.0, id="hours"),
        pytest.param("1d", 86400.0, id="days"),
        pytest.param("30s", 30.0, id="seconds"),
        pytest.param("1.5s", 1.5, id="fraction"),
        pytest.param("500ms", 0.5, id="milliseconds"),
        pytest.param(45, 45.0, id="number"),
        pytest.param("45", 45.0, id="bare-text"),
    ],
)
def test_durations(value: object, seconds: float) -> None:
    assert parse({"shutdown": {"grace_period": value}}).shutdown.grace_period == seconds


@pytest.mark.parametrize("value", ["5 minutes", "5M", "-5s", "0s", True, "", [5]], ids=str)
def test_bad_durations_name_the_key(value: object) -> None:
    assert error({"shutdown": {"grace_period": value}}).startswith("shutdown.grace_period: ")


def test_comma_lists() -> None:
    cfg = parse({"sentry": {"client_secrets": "a, b,,c ,"}})
    assert [s.get_secret_value() for s in cfg.sentry.client_secrets] == ["a", "b", "c"]
    yaml_list = parse({"sentry": {"client_secrets": ["a", "b"]}})
    assert len(yaml_list.sentry.client_secrets) == 2


def test_data_dir_from_the_environment_wins() -> None:
    env = {"SENTRY_CLIENT_SECRET": SECRET, "BRIDGE_DATA_DIR": "/srv/bridge"}
    assert parse({}, env).store.data_dir == Path("/srv/bridge")
    assert parse({"store": {"data_dir": "/elsewhere"}}, env).store.data_dir == Path("/srv/bridge")
    assert parse({"store": {"data_dir": "/elsewhere"}}).store.data_dir == Path("/elsewhere")


# --- refusals ------------------------------------------------------------------------------

UNKNOWN_KEYS = [
    pytest.param({"servre": {}}, "servre", id="top-level"),
    pytest.param({"server": {"prot": 80}}, "server.prot", id="section"),
    pytest.param({"alertmanager": {"tls": {"ca": "x"}}}, "alertmanager.tls.ca", id="nested"),
    pytest.param(
        rules(
            {"name": "a", "severity": "low"},
            {"name": "b", "severity": "low"},
            {"name": "c", "match": {"usres": {"gt": 10}}, "severity": "low"},
        ),
        "classification.rules[2].match.usres",
        id="rule-match",
    ),
    pytest.param(
        rules({"name": "a", "match": {"users": {"gtt": 10}}, "severity": "low"}),
        "classification.rules[0].match.users.gtt",
        id="operator",
    ),
    pytest.param(
        rules({"name": "a", "match": {"tags": {"component": {"eqq": "x"}}}, "severity": "low"}),
        "classification.rules[0].match.tags.component.eqq",
        id="tag-operator",
    ),
    pytest.param(
        rules(
            {"name": "a", "match": {"any": [{"level": "error"}, {"levle": "x"}]}, "severity": "low"}
        ),
        "classification.rules[0].match.any[1].levle",
        id="inside-any",
    ),
    pytest.param(
        rules({"name": "a", "match": {"not": {"enviroment": "x"}}, "severity": "low"}),
        "classification.rules[0].match.not.enviroment",
        id="inside-not",
    ),
    pytest.param(
        rules({"name": "a", "severity": "low", "lables": {}}),
        "classification.rules[0].lables",
        id="rule",
    ),
]


# Keys of past designs (docs/upgrading.md, "Renamed keys"): refused, never read as aliases.
RENAMED_KEYS = [
    pytest.param({"outbox": {"data_dir": "/d"}}, "outbox", id="outbox"),
    pytest.param({"dedup": {"max_tracked": 5}}, "dedup.max_tracked", id="max_tracked"),
    pytest.param({"dedup": {"body_retention": "1h"}}, "dedup.body_retention", id="retention"),
    pytest.param({"dedup": {"max_bodies": 5}}, "dedup.max_bodies", id="max_bodies"),
    pytest.param({"server": {"worker_timeout": "1m"}}, "server.worker_timeout", id="worker"),
]


@pytest.mark.parametrize(("data", "where"), UNKNOWN_KEYS + RENAMED_KEYS)
def test_unknown_keys_are_named_with_their_path(data: dict[str, Any], where: str) -> None:
    assert f"{where}: unknown key" in error(data).splitlines()


def test_unknown_key_in_a_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "sentry: {client_secrets: x}\nclassification:\n  rules:\n"
        "    - {name: a, severity: low}\n    - {name: b, severity: low}\n"
        "    - {name: c, match: {usres: {gt: 10}}, severity: low}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as exc:
        config.load(path, env={})
    assert str(exc.value) == f"{path}: classification.rules[2].match.usres: unknown key"


REFUSALS = [
    pytest.param(
        rules({"name": "a", "match": {"title": {"regex": "(unclosed"}}, "severity": "low"}),
        "classification.rules[0].match.title.regex: invalid regular expression '(unclosed'",
        id="bad-regex",
    ),
    pytest.param(
        rules({"name": "a", "match": {"tags": {"x": {"not_regex": "*"}}}, "severity": "low"}),
        "classification.rules[0].match.tags.x.not_regex: invalid regular expression",
        id="bad-regex-in-tag",
    ),
    pytest.param(
        rules({"name": "a", "severity": "low"}, {"name": "a", "severity": "high"}),
        "rule names must be unique; repeated: a",
        id="duplicate-names",
    ),
    pytest.param(
        rules({"name": "a", "severity": "low", "drop": True}),
        "classification.rules[0]: a rule sets either `severity` or `drop: true`, exactly one",
        id="severity-and-drop",
    ),
    pytest.param(
        rules({"name": "a"}),
        "classification.rules[0]: a rule sets either `severity` or `drop: true`",
        id="neither",
    ),
    pytest.param(
        rules({"name": "a", "drop": True, "labels": {"team": "x"}}),
        "a rule that drops cannot add labels",
        id="drop-with-labels",
    ),
    pytest.param(
        rules({"name": "a", "severity": "urgent"}),
        "classification.rules[0].severity: Input should be",
        id="bad-severity",
    ),
    pytest.param(
        rules({"name": "a", "match": {"users": {}}, "severity": "low"}),
        "classification.rules[0].match.users: a condition needs at least one operator",
        id="empty-condition",
    ),
    pytest.param(
        rules({"name": "a", "severity": "low", "labels": {"severity": "x"}}),
        "rule 'a' sets reserved label(s) ['severity']",
        id="reserved-label",
    ),
    pytest.param(
        rules({"name": "a", "severity": "low", "labels": {"bad-name": "x"}}),
        "classification.rules[0].labels.bad-name",
        id="label-name",
    ),
    pytest.param(
        {"dedup": {"window": "1h"}, "alertmanager": {"alert_lifetime": "1h"}},
        "dedup.window: must be shorter than alertmanager.alert_lifetime",
        id="window-not-below-lifetime",
    ),
    pytest.param(
        {"dedup": {"escalate_after": 1}}, "dedup.escalate_after: ", id="escalate-after-one"
    ),
    pytest.param(
        {
            "sentry": {"legacy_token": "x", "api_token": "t", "reconcile_interval": "30m"},
            "alertmanager": {"alert_lifetime": "1h"},
        },
        "sentry.reconcile_interval: must be at most a third of alertmanager.alert_lifetime",
        id="reconcile-interval-too-long-for-the-lifetime",
    ),
    pytest.param(
        {"alertmanager": {"urls": "localhost:9093"}},
        "alertmanager.urls: entry 1 is not an http(s) URL",
        id="url-without-scheme",
    ),
    pytest.param(
        {"alertmanager": {"urls": "http://a:9093,user:hunter2@b"}},
        "alertmanager.urls: entry 2 is not an http(s) URL",
        id="url-error-hides-credentials",
    ),
    pytest.param(
        {"classification": {"rules": [{"name": "a", "match": {"any": []}, "severity": "low"}]}},
        "classification.rules[0].match.any: List should have at least 1 item",
        id="empty-any",
    ),
    pytest.param(
        {
            "classification": {
                "rules": [{"name": "a", "match": {"level": {"eq": None}}, "severity": "low"}]
            }
        },
        "classification.rules[0].match.level: a condition needs at least one operator",
        id="null-only-condition",
    ),
    pytest.param({"server": {"port": 0}}, "server.port: ", id="port"),
    pytest.param(
        {"server": {"admin_port": 8080}},
        "server: admin_port must differ from port",
        id="admin-port-is-the-webhook-port",
    ),
    pytest.param(
        {"server": {"max_body_bytes": 2_000_000, "max_pending_body_bytes": 1_000_000}},
        "server: max_pending_body_bytes must be at least max_body_bytes",
        id="pending-bytes-below-one-body",
    ),
    pytest.param(
        {"server": {"max_concurrency": 100, "max_connections": 110}},
        "server: max_connections must exceed max_concurrency by at least 16",
        id="no-connections-left-for-probes",
    ),
]


@pytest.mark.parametrize(("data", "message"), REFUSALS)
def test_refusals_say_what_is_wrong(data: dict[str, Any], message: str) -> None:
    assert message in error(data)


def test_not_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        config.load(path, env={})


def test_not_yaml(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("server: {port: 80\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        config.load(path, env={})


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        config.load(tmp_path / "absent.yaml", env={})


# --- secrets -------------------------------------------------------------------------------

SECRET_ENV = {
    "SENTRY_CLIENT_SECRET": SECRET,
    "SENTRY_SERVICE_HOOK_SECRET": HOOK_SECRET,
    "SENTRY_LEGACY_TOKEN": LEGACY,
    "SENTRY_API_TOKEN": API_TOKEN,
}


def test_secrets_never_appear_in_str_or_repr() -> None:
    data = yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))
    data["alertmanager"]["basic_auth"] = {"username": "bridge", "password": "${AM_PASSWORD}"}
    cfg = config.parse(data, env=SECRET_ENV | {"AM_PASSWORD": "s3cret-am-password"})
    shown = " ".join(
        (str(cfg), repr(cfg), str(cfg.sentry), repr(cfg.alertmanager), cfg.model_dump_json())
    )
    for secret in (*ALL_SECRETS, "s3cret-am-password"):
        assert secret not in shown
    assert "**********" in shown


SECRET_LEAKS = [
    pytest.param({"server": {"port": "${SENTRY_LEGACY_TOKEN}"}}, id="secret-where-a-port-goes"),
    pytest.param(
        {"sentry": {"client_secrets": {"nested": "${SENTRY_CLIENT_SECRET}"}}}, id="wrong-shape"
    ),
    pytest.param({"sentry": {"client_secrets": ["${SENTRY_CLIENT_SECRET}", 5]}}, id="wrong-item"),
    pytest.param(
        {"alertmanager": {"basic_auth": {"password": "${SENTRY_API_TOKEN}"}}},
        id="missing-username",
    ),
    pytest.param({"alertmanager": {"bearer_token": ["${SENTRY_API_TOKEN}"]}}, id="token-as-a-list"),
    pytest.param(
        {"alertmanager": {"urls": "http://user:${SENTRY_API_TOKEN}@am:9093,bad"}},
        id="bad-url-next-to-one-with-credentials",
    ),
]


@pytest.mark.parametrize("data", SECRET_LEAKS)
def test_secrets_never_appear_in_error_messages(data: dict[str, Any]) -> None:
    message = error(data, SECRET_ENV)
    for secret in (SECRET, HOOK_SECRET, LEGACY, API_TOKEN):
        assert secret not in message


# --- store ---------------------------------------------------------------------------------

DSN = "postgresql://bridge:s3cret-db-password@db.example:5432/bridge"


def test_store_defaults_to_the_embedded_engine() -> None:
    cfg = config.load(SHIPPED, env={"SENTRY_CLIENT_SECRET": SECRET})
    assert cfg.store.backend == "sqlite"
    assert cfg.store.postgres.dsn is None
    assert cfg.store.postgres.schema_ == "sentry_bridge"


def test_postgres_from_the_environment_and_from_a_file(tmp_path: Path) -> None:
    env = {"SENTRY_CLIENT_SECRET": SECRET, "BRIDGE_DATABASE_URL": DSN}
    data = yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))
    data["store"]["backend"] = "postgres"
    cfg = config.parse(data, env=env)
    assert cfg.store.postgres.dsn is not None
    assert cfg.store.postgres.dsn.get_secret_value() == DSN
    secret = tmp_path / "database-url"
    secret.write_text(f"{DSN}\n", encoding="utf-8")
    from_file = parse(
        {"store": {"backend": "postgres", "postgres": {"dsn": f"${{file:{secret}}}"}}}
    )
    assert from_file.store.postgres.dsn == cfg.store.postgres.dsn


def test_postgres_settings() -> None:
    cfg = parse(
        {
            "store": {
                "backend": "postgres",
                "postgres": {
                    "dsn": DSN,
                    "schema": "bridge_prod",
                    "pool_size": 6,
                    "connect_timeout": "2s",
                    "statement_timeout": "750ms",
                    "ssl": {"mode": "verify-full", "root_cert": "/ca.pem"},
                },
            }
        }
    )
    pg = cfg.store.postgres
    assert (pg.schema_, pg.pool_size, pg.connect_timeout, pg.statement_timeout) == (
        "bridge_prod",
        6,
        2.0,
        0.75,
    )
    assert (pg.ssl.mode, pg.ssl.root_cert, pg.ssl.cert) == ("verify-full", Path("/ca.pem"), None)


def test_spool_settings() -> None:
    spool = {"accept_timeout": "250ms", "max_webhooks": 500, "max_bytes": 64 << 20}
    cfg = parse({"store": {"backend": "postgres", "postgres": {"dsn": DSN}, "spool": spool}})
    got = cfg.store.spool
    assert (got.accept_timeout, got.max_webhooks, got.max_bytes) == (0.25, 500, 64 << 20)


STORE_REFUSALS = [
    pytest.param(
        {"backend": "postgres"},
        "store: postgres.dsn: required with backend: postgres (e.g. ${BRIDGE_DATABASE_URL})",
        id="postgres-without-dsn",
    ),
    pytest.param(
        {"backend": "postgres", "postgres": {"dsn": ""}},
        "store: postgres.dsn: required with backend: postgres",
        id="postgres-with-empty-dsn",
    ),
    pytest.param({"backend": "mysql"}, "store.backend: Input should be 'sqlite' or", id="backend"),
    pytest.param(
        {"postgres": {"dsn": "db.example:5432"}},
        "store.postgres.dsn: not a postgresql:// URL",
        id="dsn-not-a-url",
    ),
    pytest.param(
        {"postgres": {"schema": "Bridge; DROP"}},
        "store.postgres.schema: String should match pattern",
        id="schema-not-an-identifier",
    ),
    pytest.param(
        {"postgres": {"schema": "s" * 64}},
        "store.postgres.schema: String should match pattern",
        id="schema-too-long",
    ),
    pytest.param({"postgres": {"pool_size": 0}}, "store.postgres.pool_size:", id="pool-size"),
    pytest.param(
        {"postgres": {"statement_timeout": "0s"}},
        "store.postgres.statement_timeout: Input should be greater than 0",
        id="statement-timeout",
    ),
    pytest.param(
        {"postgres": {"ssl": {"mode": "allow"}}}, "store.postgres.ssl.mode:", id="ssl-mode"
    ),
    pytest.param(
        {"postgres": {"ssl": {"mode": "require", "cert": "/c.pem"}}},
        "store.postgres.ssl: cert and key go together",
        id="cert-without-key",
    ),
    pytest.param(
        {"postgres": {"ssl": {"root_cert": "/ca.pem"}}},
        "store.postgres.ssl: certificates are set but mode is unset",
        id="certificates-without-mode",
    ),
    pytest.param(
        {"postgres": {"ssl": {"mode": "disable", "cert": "/c.pem", "key": "/k.pem"}}},
        "store.postgres.ssl: certificates are set but mode is disable",
        id="certificates-with-tls-off",
    ),
    pytest.param({"postgres": {"host": "db"}}, "store.postgres.host: unknown key", id="unknown"),
    pytest.param(
        {"spool": {"accept_timeout": "1s"}},
        "store.spool.accept_timeout: Input should be less than or equal to 0.8",
        id="spool-timeout-beyond-sentrys",
    ),
    pytest.param(
        {"spool": {"accept_timeout": 0}},
        "store.spool.accept_timeout: Input should be greater than 0",
        id="spool-timeout-zero",
    ),
    pytest.param({"spool": {"max_webhooks": 0}}, "store.spool.max_webhooks:", id="spool-empty"),
    pytest.param(
        {"spool": {"max_bytes": 1000}},
        "store.spool.max_bytes: Input should be greater than or equal to 1048576",
        id="spool-tiny",
    ),
    pytest.param({"spool": {"dir": "/x"}}, "store.spool.dir: unknown key", id="spool-unknown"),
]


@pytest.mark.parametrize(("store", "message"), STORE_REFUSALS)
def test_store_refusals_say_what_is_wrong(store: dict[str, Any], message: str) -> None:
    assert message in error({"store": store})


@pytest.mark.parametrize(
    "dsn", [DSN, "postgres://u:s3cret-db-password@h/d", "mysql://u:s3cret-db-password@h/d"]
)
def test_the_dsn_is_never_shown(dsn: str) -> None:
    """The DSN carries the database password: not in str/repr/JSON, nor in an error."""
    data = {"store": {"backend": "postgres", "postgres": {"dsn": "${BRIDGE_DATABASE_URL}"}}}
    env = {"SENTRY_CLIENT_SECRET": SECRET, "BRIDGE_DATABASE_URL": dsn}
    try:
        cfg = parse(data, env)
    except ConfigError as exc:
        shown = str(exc)
        assert "not a postgresql:// URL" in shown
    else:
        shown = " ".join((str(cfg), repr(cfg.store), cfg.model_dump_json()))
    assert "s3cret-db-password" not in shown
