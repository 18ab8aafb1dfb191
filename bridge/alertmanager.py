"""Alertmanager's side of the wire: the postable alert of API v2, and the HTTP client.

The model encodes ``postableAlert`` from prometheus/alertmanager
``api/v2/openapi.yaml``: ``labels`` (required labelSet), ``annotations``
(labelSet), ``startsAt`` / ``endsAt`` (date-time) and ``generatorURL`` (uri).
An alert is resolved by posting it again with ``endsAt`` in the past.

What Alertmanager 0.25 refuses, and so :func:`problem` and :func:`is_link` check first:
``generatorURL`` goes through go-openapi's ``uri`` format (``api/v2/models/alert.go``
``validateGeneratorURL``; strfmt v0.21.3 ``default.go`` registers ``uri`` as
``govalidator.IsRequestURI``, i.e. Go's ``url.ParseRequestURI``), answered 422 for the
whole batch; label and annotation names and values go through prometheus/common
``model.Alert.Validate`` (``api/v2/api.go`` ``postAlertsHandler``), answered 400:
names ``^[a-zA-Z_][a-zA-Z0-9_]*$``, values valid UTF-8, at least one label, an end not
before the start.
``bridge.delivery`` sends what the store queued with the client built here.
"""

from __future__ import annotations

import re
import ssl
from datetime import datetime

import httpx
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from bridge import __version__, config
from bridge.errors import ConfigError

# Alertmanager 0.25 validates label and annotation names against the classic
# Prometheus pattern and answers 400 otherwise (pkg/labels, model.LabelName.IsValid).
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

# The links the bridge sends (``generatorURL``, the ``sentry_url`` annotation): absolute
# http(s) URIs in RFC 3986's own characters, every ``%`` a valid escape, no userinfo (no
# credentials in a page), a plain or bracketed-IPv6 host and a numeric port. Narrower than
# Go's ``url.ParseRequestURI`` (which also takes relative paths, other schemes and raw
# non-ASCII), so whatever passes here passes Alertmanager's check as well.
LINK_MAX = 2048
_LINK = re.compile(
    r"(?i:https?)://(?P<host>[A-Za-z0-9._~-]+|\[[0-9A-Fa-f:.]+\])(?::(?P<port>[0-9]{1,5}))?"
    # After the authority, a path or a query, not a bare "#": ParseRequestURI keeps the
    # fragment (it expects none), so "http://h#x" reads as the host "h#x" and is refused.
    r"(?:[/?](?:[A-Za-z0-9._~!$&'()*+,;=:@/?#\[\]-]|%[0-9A-Fa-f]{2})*+)?"
)


def is_link(url: str) -> bool:
    """True for a link the bridge may send: see ``_LINK``; at most ``LINK_MAX`` long
    (a cut link is a wrong link, so a longer one is dropped, not truncated)."""
    if len(url) > LINK_MAX:
        return False
    match = _LINK.fullmatch(url)
    return match is not None and int(match["port"] or 0) <= 65535


class PostableAlert(BaseModel):
    """One element of the JSON array ``POST /api/v2/alerts`` takes."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    starts_at: datetime | None = Field(default=None, alias="startsAt")
    ends_at: datetime | None = Field(default=None, alias="endsAt")
    generator_url: str | None = Field(default=None, alias="generatorURL")

    @field_validator("labels", "annotations")
    @classmethod
    def _valid_label_set(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not LABEL_NAME.match(name):
                raise ValueError(f"invalid label or annotation name {name!r}")
            if text == "":
                # Alertmanager drops empty labels, silently changing the alert's identity.
                raise ValueError(f"empty value for {name!r}")
        return value

    @field_validator("labels")
    @classmethod
    def _has_alertname(cls, value: dict[str, str]) -> dict[str, str]:
        if not value:
            raise ValueError("an alert needs at least one label")
        return value

    # Times go out as RFC 3339 in pydantic-core's own ISO 8601 form: ``Z`` for UTC, the
    # fraction only when there is one, which is ``isoformat()`` with ``+00:00`` as ``Z``
    # (tests/test_alertmanager.py holds the two to each other). A Python serializer was
    # called twice per alert dumped, some 14 us of a webhook's CPU (issue 15's profile).

    def wire(self) -> dict[str, object]:
        """The JSON object Alertmanager receives (camelCase, no nulls)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


_SET = object.__setattr__  # past the frozen model's __setattr__, as model_construct goes
_FIELDS = frozenset(PostableAlert.model_fields)


def built(
    labels: dict[str, str],
    annotations: dict[str, str],
    starts_at: datetime | None,
    ends_at: datetime | None,
    generator_url: str | None,
) -> PostableAlert:
    """``PostableAlert.model_construct`` with every field given, the same instance (fields,
    fields set, no extra, no private attributes) without its walk over each field's aliases
    and defaults (a third of a new alert's labels and annotations, issue 15's profile).
    Not validated: for alerts built from checked parts (``bridge.labels``); the sender
    checks every alert before it posts (:func:`check_wire`)."""
    alert = PostableAlert.__new__(PostableAlert)
    _SET(
        alert,
        "__dict__",
        {
            "labels": labels,
            "annotations": annotations,
            "starts_at": starts_at,
            "ends_at": ends_at,
            "generator_url": generator_url,
        },
    )
    _SET(alert, "__pydantic_fields_set__", set(_FIELDS))
    _SET(alert, "__pydantic_extra__", None)
    _SET(alert, "__pydantic_private__", None)
    return alert


def ended(alert: PostableAlert, ends_at: datetime) -> PostableAlert:
    """``alert.model_copy(update={"ends_at": ends_at})``, built as :func:`built` builds."""
    fields = alert.__dict__
    copy = built(
        fields["labels"],
        fields["annotations"],
        fields["starts_at"],
        ends_at,
        fields["generator_url"],
    )
    _SET(copy, "__pydantic_fields_set__", {*alert.model_fields_set, "ends_at"})
    return copy


def wire_json(alert: PostableAlert) -> str:
    """The alert as Alertmanager receives it, serialised (same as :meth:`PostableAlert.wire`)."""
    return alert.model_dump_json(by_alias=True, exclude_none=True)


def target_name(url: str) -> str:
    """An Alertmanager's metric label: ``host:port`` (plus the path, if any), never userinfo."""
    parsed = httpx.URL(url)
    host = f"[{parsed.host}]" if ":" in parsed.host else parsed.host
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return f"{host}:{port}{parsed.path.rstrip('/')}"


def public_url(url: str) -> str:
    """The URL without its ``user:password@``, for logs and ``check-config``."""
    return str(httpx.URL(url).copy_with(userinfo=b""))


def problem(alert: PostableAlert) -> str | None:
    """What Alertmanager would reject in an alert the model accepted, else None.

    Alertmanager 0.25 validates each alert of a batch (``Alert.Validate`` in
    prometheus/common ``model``) and answers 400 "start time must be before end
    time" to an end before the start; RFC 3339 times need an offset, so naive ones
    cannot be sent either. A ``generatorURL`` that is not an absolute http(s) link
    (:func:`is_link`) would be refused with 422, so it is caught here too.
    """
    if alert.generator_url is not None and not is_link(alert.generator_url):
        return "generatorURL is not an absolute http(s) URI"
    for name, value in (("startsAt", alert.starts_at), ("endsAt", alert.ends_at)):
        if value is not None and value.utcoffset() is None:
            return f"{name} has no time zone"
    if alert.starts_at and alert.ends_at and alert.ends_at < alert.starts_at:
        return "endsAt is before startsAt"
    return None


def check_wire(body: str) -> str | None:
    """Validate a stored alert before sending it: the model, then :func:`problem`."""
    try:
        alert = PostableAlert.model_validate_json(body)
    except ValidationError as exc:
        return "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" if e["loc"] else e["msg"]
            for e in exc.errors(include_url=False, include_input=False)
        )
    return problem(alert)


def ssl_context(tls: config.TLS) -> ssl.SSLContext | bool:
    """``True`` (system trust) unless a CA, a client certificate or skipping is configured."""
    if not (tls.ca_file or tls.cert_file or tls.key_file or tls.insecure_skip_verify):
        return True
    if tls.key_file and not tls.cert_file:
        raise ConfigError("alertmanager.tls.key_file needs alertmanager.tls.cert_file")
    try:
        context = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
        if tls.cert_file:
            context.load_cert_chain(tls.cert_file, tls.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"alertmanager.tls: {exc}") from exc
    if tls.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def build_client(
    cfg: config.Alertmanager, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    headers = {"User-Agent": f"sentry-alertmanager-bridge/{__version__}"}
    if cfg.bearer_token is not None:
        headers["Authorization"] = f"Bearer {cfg.bearer_token.get_secret_value()}"
    auth = (
        httpx.BasicAuth(cfg.basic_auth.username, cfg.basic_auth.password.get_secret_value())
        if cfg.basic_auth
        else None
    )
    return httpx.AsyncClient(
        transport=transport,
        auth=auth,
        headers=headers,
        timeout=cfg.timeout,
        verify=ssl_context(cfg.tls),
    )
