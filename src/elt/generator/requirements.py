"""The requirements file of `elt init --spec`: what a data engineer asks first, as a pydantic model.

A minimal file::

    project: shopfront
    destination: {kind: postgres}
    sources:
      - name: stripe
        type: rest_api
        auth: {kind: bearer, secret_env: STRIPE_KEY}
        volume: {rows_per_sync: 2000, total_rows: 400000}
        rate_limit: {requests_per_second: 25, page_size: 100}
        freshness: hourly
        entities: [{name: charges, primary_key: id, cursor: created}]

Errors name the field and the allowed values.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from elt.errors import ConfigError
from elt.secrets import mask_passwords

SourceType = Literal["rest_api", "database", "file_drop", "webhook", "manual"]
FRESHNESS_WORDS = ("real_time", "near_real_time", "hourly", "daily", "on_demand")
#: Or a duration: "15m", "2h", "30s", "1d".
_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d)\s*$")
AuthKind = Literal["none", "api_key", "bearer", "basic", "oauth2"]
_NAME = r"^[a-z][a-z0-9_]*$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Field_(_Model):
    """A field of an entity, for sample data and the typed staging model."""

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    type: Literal["string", "integer", "number", "boolean", "timestamp", "date", "json"] = "string"


class Entity(_Model):
    name: str = Field(pattern=_NAME)
    primary_key: str = "id"
    #: The incremental field (updated_at, created, id); none: the source has no change tracking.
    cursor: str | None = None
    fields: list[Field_] = []
    description: str = ""


class Auth(_Model):
    kind: AuthKind = "none"
    #: The environment variable that will hold the secret (never the secret itself).
    secret_env: str | None = Field(default=None, pattern=r"^[A-Z][A-Z0-9_]*$")
    #: api_key only: where the key goes, and the header or query parameter's name.
    key_in: Literal["header", "query"] = "header"
    key_name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]+$")

    @model_validator(mode="after")
    def _needs_env(self) -> Auth:
        if self.kind != "none" and not self.secret_env:
            raise ValueError(f"auth kind {self.kind!r} needs secret_env: the environment variable holding the secret")
        return self


class Volume(_Model):
    rows_per_sync: int = Field(default=1000, ge=0)
    total_rows: int = Field(default=10_000, ge=0)


class RateLimit(_Model):
    requests_per_second: float | None = Field(default=None, gt=0)
    requests_per_minute: float | None = Field(default=None, gt=0)
    requests_per_day: float | None = Field(default=None, gt=0)
    page_size: int = Field(default=100, gt=0)

    def per_second(self) -> float | None:
        rates = [r for r in (self.requests_per_second,
                             self.requests_per_minute / 60 if self.requests_per_minute else None,
                             self.requests_per_day / 86400 if self.requests_per_day else None) if r]
        return min(rates) if rates else None


class Source(_Model):
    name: str = Field(pattern=_NAME)
    type: SourceType
    #: json, csv, ndjson, postgres, mysql, ... (free text; decides the file reader and driver hints).
    format: str = ""
    #: Base URL, host, folder or webhook path: how it is reached.
    access: str = ""
    auth: Auth = Auth()
    volume: Volume = Volume()
    update_frequency: str = ""
    rate_limit: RateLimit = RateLimit()
    #: real_time, near_real_time, hourly, daily, on_demand, or a duration such as "15m" or "6h".
    freshness: str = "daily"
    #: Whether the source can say what changed (updated_at, an event id, CDC). False forces full refresh.
    change_tracking: bool = True
    entities: list[Entity] = Field(min_length=1)

    @field_validator("freshness")
    @classmethod
    def _freshness(cls, value: str) -> str:
        value = value.strip()
        if value in FRESHNESS_WORDS:
            return value
        match = _DURATION.match(value)
        if not match or int(match.group(1)) <= 0:
            words = ", ".join(repr(w) for w in FRESHNESS_WORDS[:-1]) + f" or {FRESHNESS_WORDS[-1]!r}"
            raise ValueError(f"must be one of {words}, or a duration like '15m', '6h' or '1d'; got {value!r}")
        return f"{int(match.group(1))}{match.group(2)}"

    @field_validator("access")
    @classmethod
    def _no_password(cls, value: str) -> str:
        # A password in the access URL goes no further than this: the plan, the document and the
        # project's files see it masked; the real URL belongs in .env.
        return mask_passwords(value)

    @property
    def access_had_password(self) -> bool:
        return "***" in self.access

    @field_validator("entities", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        # `entities: [orders, customers]` is fine too.
        if isinstance(value, list):
            return [{"name": v} if isinstance(v, str) else v for v in value]
        return value


class Destination(_Model):
    kind: Literal["postgres", "supabase", "bigquery"] = "postgres"
    url_env: str = Field(default="ELT_DATABASE_URL", pattern=r"^[A-Z][A-Z0-9_]*$")


class Reliability(_Model):
    impact_of_failure: Literal["low", "medium", "high"] = "medium"
    loss_acceptable: bool = False
    retention_days: int = Field(default=365, gt=0)


class Constraints(_Model):
    runtime: Literal["vps", "supabase", "serverless"] = "vps"
    budget: Literal["minimal", "moderate", "flexible"] = "minimal"
    team_skill: Literal["sql", "python", "data_engineer"] = "sql"


class Requirements(_Model):
    project: str = Field(pattern=_NAME)
    description: str = ""
    #: The business's time zone: schedules are read in it.
    timezone: str = "UTC"
    sources: list[Source] = Field(min_length=1)
    destination: Destination = Destination()
    secondary_destinations: list[Destination] = []
    #: In plain words: cleaning, enrichment, aggregation, business rules, denormalisation.
    transformations: list[str] = []
    key_entities: list[str] = []
    reliability: Reliability = Reliability()
    constraints: Constraints = Constraints()
    alert_email: str | None = None

    @model_validator(mode="after")
    def _unique(self) -> Requirements:
        names = [s.name for s in self.sources]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"source names must be unique; repeated: {', '.join(duplicates)}")
        return self


def _problem(error: Any) -> str:
    where = ".".join(str(p) for p in error["loc"]) or "file"
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "literal_error":
        message = f"must be one of {error['ctx']['expected']}, got {error.get('input')!r}"
    elif error["type"] == "extra_forbidden":
        message = "is not a known field (check the spelling)"
    return f"{where}: {message}"


def parse(data: Any, where: str = "requirements") -> Requirements:
    try:
        return Requirements.model_validate(data)
    except ValidationError as exc:
        problems = "\n  ".join(_problem(e) for e in exc.errors())
        raise ConfigError(f"{where} has {exc.error_count()} problem(s):\n  {problems}") from None


def load(path: Path) -> Requirements:
    """Read a YAML (or JSON) requirements file."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"no requirements file at {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    return parse(data, str(path))


def freshness_seconds(freshness: str) -> int | None:
    """Seconds between syncs that a freshness need allows (None: on demand)."""
    words = {"real_time": 60, "near_real_time": 300, "hourly": 3600, "daily": 86400, "on_demand": None}
    if freshness in words:
        return words[freshness]
    match = _DURATION.match(freshness)
    assert match, freshness  # validated by Source
    return int(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


def file_format(source: Source) -> str:
    """How a file source's files are read: csv (default), tsv, json or ndjson, from its ``format``."""
    text = source.format.strip().lower()
    return {"jsonl": "ndjson", "json lines": "ndjson", "tab": "tsv"}.get(text, text if text in (
        "csv", "tsv", "json", "ndjson") else "csv")


def env_name(text: str) -> str:
    return re.sub(r"[^A-Z0-9]+", "_", text.upper()).strip("_")
