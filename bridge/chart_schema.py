"""The chart's ``values.schema.json``: its ``config`` part generated from the config models.

``python -m bridge.chart_schema`` (or ``scripts/chart-schema``) rewrites the file;
``--check`` only says whether it is current (tests/test_helm.py runs the same comparison).
The rest of the schema (image, persistence, ...) is hand-written and kept as it is.

The walk follows what ``bridge.config`` accepts, not pydantic's own ``model_json_schema``,
which knows nothing of the validators that run first: durations written ``30s``, lists
written ``a,b``, the shorthand conditions, blank strings for "unset", and ``${VAR}``
references substituted before validation. What JSON Schema cannot say (checks across
fields, a duration string's upper bound, a regex that compiles) is left to
``sentry-bridge check-config``, which the chart's pre-install/pre-upgrade hook runs.
"""

from __future__ import annotations

import argparse
import enum
import json
import sys
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel, BeforeValidator, SecretStr
from pydantic.fields import FieldInfo

from bridge import config, rules

SCHEMA_FILE = (
    Path(__file__).resolve().parents[1]
    / "helm"
    / "sentry-alertmanager-bridge"
    / "values.schema.json"
)
COMMAND = "scripts/chart-schema (python -m bridge.chart_schema)"

Schema = dict[str, Any]

# A value the bridge substitutes before validating it (bridge.config._substitute), so any
# key may hold one, whatever its type: ${VAR}, ${VAR:-default}, ${file:/path}.
VAR: Schema = {
    "description": "${VAR}, ${VAR:-default} or ${file:/path}, substituted at start",
    "type": "string",
    "pattern": r"\$\{[^}]+\}",
}
VAR_REF: Schema = {"$ref": "#/definitions/var"}
# bridge.config._parse_duration, with [0-9] for Python's \d; a positive one has a digit
# other than 0 (RE2, which Helm's validator uses, has no lookahead to say it shorter).
_UNIT = r"\s*(ms|s|m|h|d)?\s*$"
DURATION = r"^\s*[0-9]+(\.[0-9]+)?" + _UNIT
POSITIVE_DURATION = r"^\s*([0-9]*[1-9][0-9]*(\.[0-9]+)?|[0-9]+\.[0-9]*[1-9][0-9]*)" + _UNIT
SECONDS_NUMBER: Schema = {"type": "number", "exclusiveMinimum": 0}
SECONDS_STRING: Schema = {
    "description": "a duration such as 500ms, 30s, 5m, 1h or 1d",
    "type": "string",
    "pattern": POSITIVE_DURATION,
}
BLANK: Schema = {"type": "string", "pattern": r"^\s*$"}
_URL = r"https?://[^/\s,]+[^,]*"

# Field validators JSON Schema can say (the rest: UNEXPRESSED). A field validator added to a
# config model must be listed in one of the two, or generation fails and says so.
FIELD_CHECKS: dict[tuple[str, str], dict[str, Schema | None]] = {
    # Alertmanager._urls: http(s) URLs, at least one, none twice.
    ("Alertmanager", "urls"): {
        "array": {"minItems": 1, "uniqueItems": True, "items": {"pattern": f"^\\s*{_URL}$"}},
        "string": {"pattern": f"^\\s*{_URL}(,\\s*({_URL})?)*$"},
        "null": None,  # no URL at all
    },
    # Postgres._dsn: a postgresql:// URL, or blank for none.
    ("Postgres", "dsn"): {"string": {"pattern": r"^(postgres(ql)?://|\s*$)"}},
    # Sentry._public_url (config.check_public_url): an http(s) origin, no path; blank for none.
    ("Sentry", "public_url"): {"string": {"pattern": r"^(\s*https?://[^/\s?#@]+/?\s*|\s*)$"}},
    # RuleSettings._unique: no value twice.
    ("RuleSettings", "teams"): {"array": {"uniqueItems": True}},
    ("RuleSettings", "services"): {"array": {"uniqueItems": True}},
}
UNEXPRESSED = {
    ("Condition", "regex"),  # the regex compiles
    ("Condition", "not_regex"),
    ("EscalationStep", "labels"),  # no reserved label name
}


def _unwrap(annotation: Any, metadata: list[Any]) -> tuple[Any, list[Any]]:
    while get_origin(annotation) is Annotated:
        annotation, *more = get_args(annotation)
        metadata = [*more, *metadata]
    # Field(...) inside Annotated (config.Seconds) holds its constraints as metadata too.
    flat = [
        m for item in metadata for m in (item.metadata if isinstance(item, FieldInfo) else [item])
    ]
    return annotation, flat


class _Walk:
    def __init__(self) -> None:
        self.definitions: dict[str, Schema] = {"var": VAR}

    def model(self, model: type[BaseModel]) -> Schema:
        name = model.__name__
        if name not in self.definitions:
            self.definitions[name] = {}  # a placeholder while recursing (Match holds Match)
            validators = model.__pydantic_decorators__.field_validators.values()
            checked = {(name, f) for v in validators for f in v.info.fields}
            unknown = checked - FIELD_CHECKS.keys() - UNEXPRESSED
            if unknown:
                raise TypeError(f"{sorted(unknown)}: add to FIELD_CHECKS or UNEXPRESSED")
            properties = {}
            required = []
            for field_name, field in model.model_fields.items():
                key = field.alias or field_name
                node = self.node(field.annotation, list(field.metadata))
                extra = FIELD_CHECKS.get((name, field_name))
                properties[key] = _refine(node, extra) if extra else node
                if field.is_required():
                    required.append(key)
            out: Schema = {"type": "object", "additionalProperties": False}
            out["properties"] = properties
            if required:
                out["required"] = required
            self.definitions[name] = out
        return {"$ref": f"#/definitions/{name}"}

    def node(self, annotation: Any, metadata: list[Any]) -> Schema:
        annotation, metadata = _unwrap(annotation, metadata)
        befores = [m.func for m in metadata if isinstance(m, BeforeValidator)]
        constraints = [m for m in metadata if not isinstance(m, BeforeValidator)]
        node = self.plain(annotation, constraints)
        for func in reversed(befores):  # the outermost runs first
            node = self.before(func, node)
        return node

    def before(self, func: Callable[..., Any], node: Schema) -> Schema:
        if func is config._parse_duration:
            [number] = [n for n in node.get("anyOf", [node]) if n.get("type") == "number"]
            if number == SECONDS_NUMBER:  # the common case, config.Seconds: one definition
                self.definitions["seconds"] = _any(SECONDS_NUMBER, SECONDS_STRING, VAR_REF)
                return {"$ref": "#/definitions/seconds"}
            positive = number.get("exclusiveMinimum", -1) >= 0 or number.get("minimum", 0) > 0
            pattern = POSITIVE_DURATION if positive else DURATION
            return _any(number, {"type": "string", "pattern": pattern}, VAR_REF)
        if func in (config._split_commas, config._secrets):
            return _any(node, {"type": "string"}, {"type": "null"})
        if func is config._empty_to_none:
            return _any(node, BLANK)
        if func is rules._shorthand:  # rules.Cond: `level: error`, `level: [a, b]` or operators
            scalar = self.node(rules.Scalar, [])
            self.definitions["cond"] = _any(scalar, {"type": "array", "items": scalar}, node)
            return {"$ref": "#/definitions/cond"}
        raise TypeError(f"teach bridge.chart_schema what {func.__qualname__} accepts")

    def plain(self, annotation: Any, constraints: list[Any]) -> Schema:
        origin, args = get_origin(annotation), get_args(annotation)
        if origin in (Union, types.UnionType):
            return _any(*(self.node(arg, constraints) for arg in args))
        if annotation is type(None):
            return {"type": "null"}
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return self.model(annotation)
        if origin is list:
            out = {"type": "array", "items": self.node(args[0], [])}
            return _constrained(out, constraints)
        if origin is dict:
            out = {"type": "object", "additionalProperties": self.node(args[1], [])}
            keys = _no_var(self.node(args[0], []))  # keys are not substituted
            if keys != {"type": "string"}:
                out["propertyNames"] = keys
            return out
        if origin is Literal:
            return _or_var({"enum": list(args)})
        if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
            return _or_var({"enum": [member.value for member in annotation]})
        if annotation is bool:
            return _or_var({"type": "boolean"})
        if annotation in (int, float):
            kind = "integer" if annotation is int else "number"
            return _or_var(_constrained({"type": kind}, constraints))
        if annotation in (str, Path, SecretStr):
            out = _constrained({"type": "string"}, constraints)
            return _or_var(out) if "pattern" in out else out
        raise TypeError(f"teach bridge.chart_schema the type {annotation!r}")


_BOUNDS = {
    annotated_types.Gt: ("gt", "exclusiveMinimum"),
    annotated_types.Ge: ("ge", "minimum"),
    annotated_types.Lt: ("lt", "exclusiveMaximum"),
    annotated_types.Le: ("le", "maximum"),
    annotated_types.MinLen: ("min_length", None),
    annotated_types.MaxLen: ("max_length", None),
}


def _constrained(node: Schema, constraints: list[Any]) -> Schema:
    out = dict(node)
    for c in constraints:
        if type(c) in _BOUNDS:
            attr, keyword = _BOUNDS[type(c)]
            if keyword is None:
                prefix = {"string": "Length", "array": "Items"}[out["type"]]
                keyword = ("min" if attr == "min_length" else "max") + prefix
            out[keyword] = getattr(c, attr)
        elif getattr(c, "pattern", None) is not None:  # pydantic's Field(pattern=...)
            out["pattern"] = c.pattern
        elif type(c).__name__ != "_PydanticGeneralMetadata" or vars(c):
            raise TypeError(f"teach bridge.chart_schema the constraint {c!r}")
    return out


def _or_var(node: Schema) -> Schema:
    return {"anyOf": [node, VAR_REF]}


def _no_var(node: Schema) -> Schema:
    return _any(*[n for n in node.get("anyOf", [node]) if n != VAR_REF])


def _any(*nodes: Schema) -> Schema:
    """anyOf, flattened and without repeats; a plain string admits blanks and ${VAR}s."""
    flat: list[Schema] = []
    for node in nodes:
        for sub in node["anyOf"] if list(node) == ["anyOf"] else [node]:
            if sub not in flat:
                flat.append(sub)
    if {"type": "string"} in flat:
        flat = [n for n in flat if n not in (BLANK, VAR_REF)]
    return flat[0] if len(flat) == 1 else {"anyOf": flat}


def _refine(node: Schema, extra: dict[str, Schema | None]) -> Schema:
    """A field validator's rule added to the alternatives of its type (array, string)."""
    subs = node["anyOf"] if list(node) == ["anyOf"] else [node]
    out = []
    for sub in subs:
        kind = sub.get("type", "")
        if kind in extra and extra[kind] is None:
            continue  # an alternative the validator refuses
        more = extra.get(kind) or {}
        merged = sub | more
        if "items" in more:
            merged["items"] = _or_var(sub["items"] | more["items"])
        out.append(_or_var(merged) if "pattern" in more and kind == "string" else merged)
    return _any(*out)


def generate(current: Schema) -> Schema:
    """``current`` with its ``config`` and ``definitions`` made from ``bridge.config``."""
    walk = _Walk()
    root = walk.model(config.Config)
    config_node = dict(walk.definitions.pop("Config"))
    assert root == {"$ref": "#/definitions/Config"}
    config_node["description"] = (
        f"The bridge's config file (config.yaml); generated from bridge/config.py by {COMMAND}"
    )
    out = dict(current)
    out["definitions"] = dict(sorted(walk.definitions.items()))
    out["properties"] = dict(current["properties"]) | {"config": config_node}
    return out


def render(current: Schema) -> str:
    return json.dumps(generate(current), indent=2) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bridge.chart_schema", description=__doc__)
    p.add_argument("--file", type=Path, default=SCHEMA_FILE, help="the values.schema.json")
    p.add_argument("--check", action="store_true", help="only say whether it is current")
    args = p.parse_args(argv)
    text = args.file.read_text(encoding="utf-8")
    new = render(json.loads(text))
    if new == text:
        print(f"{args.file}: current")
        return 0
    if args.check:
        print(f"{args.file}: differs from bridge/config.py; run {COMMAND}", file=sys.stderr)
        return 1
    args.file.write_text(new, encoding="utf-8")
    print(f"{args.file}: rewritten")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
