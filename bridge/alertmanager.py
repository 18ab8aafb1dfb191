"""Alertmanager's side of the wire: the postable alert of API v2.

The model encodes ``postableAlert`` from prometheus/alertmanager
``api/v2/openapi.yaml``: ``labels`` (required labelSet), ``annotations``
(labelSet), ``startsAt`` / ``endsAt`` (date-time) and ``generatorURL`` (uri).
An alert is resolved by posting it again with ``endsAt`` in the past.
"""

from __future__ import annotations

import re
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator

# Alertmanager 0.25 validates label and annotation names against the classic
# Prometheus pattern and answers 400 otherwise (pkg/labels, model.LabelName.IsValid).
LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


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

    @field_serializer("starts_at", "ends_at")
    def _rfc3339(self, value: datetime | None) -> str | None:
        return value.isoformat().replace("+00:00", "Z") if value else None

    def wire(self) -> dict[str, object]:
        """The JSON object Alertmanager receives (camelCase, no nulls)."""
        return self.model_dump(by_alias=True, exclude_none=True)
