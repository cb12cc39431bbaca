"""Transform models: one SQL file (or ``Transform`` subclass) per relation, with its settings.

``sql/mart/finance_revenue.sql`` builds ``mart.finance_revenue``: the folder is
the schema, the file name the relation. Settings sit in a comment header::

    -- materialized: table
    -- unique_key: id
    -- tests: unique(id), not_null(customer_id), warn accepted_values(status: paid, refunded)
    SELECT ...

Header keys: ``materialized`` (view | table | materialized_view | incremental;
default view in stg and rpt, table in mart), ``unique_key`` (columns, comma
separated), ``watermark`` (the column an incremental model merges from),
``tests``, ``description``, ``swap`` (rename | delete_insert, see
:mod:`elt.loaders.postgres.swap`), and for incremental models ``lookback`` and
``full_refresh_every`` (see :mod:`elt.transforms.incremental`).
"""

from __future__ import annotations

import difflib
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from elt.errors import ConfigError
from elt.pipeline import on_clear

#: The layers, in the order data flows through them; each is a schema and a folder.
LAYERS = ("stg", "mart", "rpt")
DEFAULT_MATERIALIZED = {"stg": "view", "mart": "table", "rpt": "view"}
TEST_KINDS = ("unique", "not_null", "accepted_values", "relationships", "row_count", "freshness", "readable")
_HEADER = re.compile(r"^\s*--\s*([a-z_]+)\s*:\s*(.*?)\s*$")
_TEST = re.compile(r"^(?:(warn)\s+)?([a-z_]+)\s*(?:\((.*)\)|(>\s*\d+))?$", re.S)


@dataclass(frozen=True)
class DataTest:
    """One data test of a model: ``kind`` over ``columns`` with ``args``; ``warn`` only logs a failure."""

    kind: str
    columns: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    warn: bool = False
    text: str = ""

    @classmethod
    def parse(cls, text: str) -> DataTest:
        match = _TEST.match(text.strip())
        if not match or match.group(2) not in TEST_KINDS:
            raise ValueError(f"unknown test {text.strip()!r}; tests are {', '.join(TEST_KINDS)}")
        warn, kind, inner, comparison = match.groups()
        columns: tuple[str, ...] = ()
        args: tuple[str, ...] = ()
        if inner is not None:
            head, _, tail = inner.partition(":")
            columns = tuple(c.strip() for c in head.split(",") if c.strip())
            args = tuple(a.strip().strip("'\"") for a in re.split(r"[,|]", tail) if a.strip()) if tail else ()
        if kind == "row_count":
            minimum = (comparison or inner or "> 0").lstrip(">").strip()
            if not minimum.isdigit():
                raise ValueError(f"row_count takes '> N', got {text.strip()!r}")
            return cls(kind, (), (minimum,), bool(warn), text.strip())
        if kind == "readable":
            return cls(kind, (), (), bool(warn), text.strip())
        needs = {"unique": "(column[, column...])", "not_null": "(column)", "accepted_values": "(column: a, b)",
                 "relationships": "(column: schema.table.column)", "freshness": "(column: 24h)"}
        if not columns or (kind in ("accepted_values", "relationships", "freshness") and not args):
            raise ValueError(f"test {text.strip()!r} needs {kind}{needs[kind]}")
        if kind == "relationships" and len(args[0].split(".")) != 3:
            raise ValueError(f"relationships needs schema.table.column after the colon, got {args[0]!r}")
        if kind == "freshness":
            parse_duration(args[0])
        return cls(kind, columns, args, bool(warn), text.strip())


def parse_duration(text: str) -> int:
    """Seconds in ``30m``, ``24h``, ``2d`` (or a plain number of seconds)."""
    match = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text)
    if not match:
        raise ValueError(f"duration {text!r} should look like 30m, 24h or 2d")
    return int(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside parentheses."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += (char == "(") - (char == ")")
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


class ModelConfig(BaseModel):
    """A model's settings, from its comment header or its ``Transform`` class."""

    model_config = ConfigDict(extra="forbid")

    materialized: Literal["view", "table", "materialized_view", "incremental"]
    unique_key: tuple[str, ...] = ()
    watermark: str | None = None
    tests: tuple[DataTest, ...] = ()
    description: str = ""
    #: How a rebuilt table replaces the live one: ``rename`` (readers blocked for catalog work only;
    #: a REPEATABLE READ reader that first reads it after the swap sees it empty) or ``delete_insert``
    #: (rows replaced in one transaction: snapshot readers keep the old rows; costs a table-sized write).
    swap: Literal["rename", "delete_insert"] = "rename"
    #: incremental: how far behind the newest watermark each run re-reads (``3d``; a number for numeric watermarks).
    lookback: str | None = None
    #: incremental: ``elt check`` reports the model when its last full refresh is older than this (``7d``).
    full_refresh_every: str | None = None

    @field_validator("unique_key", mode="before")
    @classmethod
    def _columns(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(c.strip() for c in value.split(",") if c.strip())
        return value

    @field_validator("tests", mode="before")
    @classmethod
    def _tests(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = _split_top_level(value)
        return tuple(t if isinstance(t, DataTest) else DataTest.parse(t) for t in value)

    @field_validator("full_refresh_every")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value

    @field_validator("lookback")
    @classmethod
    def _lookback(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"\s*\d+(\.\d+)?\s*[smhd]?\s*", value):
            raise ValueError(f"lookback {value!r} should look like 3d, 12h (timestamp watermark) or 100 (numeric)")
        return value.strip() if value is not None else None

    @model_validator(mode="after")
    def _incremental(self) -> ModelConfig:
        if self.materialized == "incremental" and (not self.unique_key or not self.watermark):
            raise ValueError("materialized: incremental needs unique_key (what to merge on) and watermark"
                             " (the column whose newest rows are merged each run)")
        if self.materialized != "incremental" and (self.lookback or self.full_refresh_every):
            raise ValueError("lookback and full_refresh_every apply to materialized: incremental only")
        return self


@dataclass
class Model:
    """One relation to build: ``schema.name`` from ``sql`` (or a Python transform)."""

    schema: str
    name: str
    path: str
    sql: str
    config: ModelConfig
    depends_on: set[str] = field(default_factory=set)
    transform: Transform | None = None
    #: Every ``schema.table`` the SQL reads (models and sources), parsed once when the graph is built.
    reads: set[str] = field(default_factory=set)

    @property
    def relation(self) -> str:
        return f"{self.schema}.{self.name}"

    def __repr__(self) -> str:
        return f"<Model {self.relation} ({self.config.materialized})>"


class Transform:
    """A model whose SQL is built in Python, for logic a static file cannot express.

    Subclass it in the project's ``pipelines.py``; it builds like a SQL model::

        class ClientHealth(Transform):
            schema = "rpt"
            name = "client_health"
            materialized = "table"
            depends_on = ("mart.customers",)

            def sql(self) -> str:
                buckets = " + ".join(f"(score > {n})::int" for n in (10, 50, 90))
                return f"SELECT id, {buckets} AS health FROM mart.customers"

    ``depends_on`` is read from the SQL too; list what the SQL cannot show.
    """

    schema: ClassVar[str] = "mart"
    name: ClassVar[str] = ""
    materialized: ClassVar[str | None] = None
    unique_key: ClassVar[tuple[str, ...] | str] = ()
    watermark: ClassVar[str | None] = None
    tests: ClassVar[tuple[str, ...] | str] = ()
    depends_on: ClassVar[tuple[str, ...]] = ()

    _registry: ClassVar[list[type[Transform]]] = []

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name:
            Transform._registry.append(cls)

    def sql(self) -> str:
        raise NotImplementedError(f"{type(self).__name__} must implement sql()")

    def model(self) -> Model:
        where = _where(type(self))
        if self.schema not in LAYERS:
            raise ConfigError(f"{where}: schema must be one of {', '.join(LAYERS)}, got {self.schema!r}")
        config = _config(where, {
            "materialized": self.materialized or DEFAULT_MATERIALIZED[self.schema], "unique_key": self.unique_key,
            "watermark": self.watermark, "tests": self.tests, "description": (type(self).__doc__ or "").strip()})
        return Model(self.schema, self.name, where, _body(self.sql()), config, set(self.depends_on), self)


def _where(cls: type[Transform]) -> str:
    """``pipelines.py:ClientHealth``: the file and class, the same in every run (not the import name)."""
    module = sys.modules.get(cls.__module__)
    filename = getattr(module, "__file__", None)
    return f"{Path(filename).name if filename else cls.__module__}:{cls.__qualname__}"


def registered_transforms() -> list[type[Transform]]:
    return list(Transform._registry)


def clear_transforms() -> None:
    Transform._registry.clear()


on_clear(clear_transforms)


def _body(sql: str) -> str:
    # CREATE ... AS (<sql>) cannot take a trailing semicolon.
    return sql.strip().rstrip(";").strip()


def _config(where: str, values: dict[str, Any]) -> ModelConfig:
    try:
        return ModelConfig(**values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'header'}: {e['msg'].removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise ConfigError(f"{where}: {problems}") from None


def parse_model(path: Path, root: Path) -> Model:
    """Read one model file: the header settings, then the SELECT."""
    schema, name = path.parent.name, path.stem
    where = str(path.relative_to(root.parent) if root.parent in path.parents else path)
    text = path.read_text(encoding="utf-8-sig")
    values: dict[str, Any] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        match = _HEADER.match(line)
        if not match:
            if line.lstrip().startswith("--"):
                continue  # an ordinary comment inside the header
            break
        key, value = match.groups()
        if key not in ModelConfig.model_fields:
            close = difflib.get_close_matches(key, ModelConfig.model_fields, n=1)
            if close:
                raise ConfigError(f"{where}: header setting {key!r} is not known; did you mean {close[0]!r}?")
            continue  # a comment that happens to contain a colon
        if key == "tests" and "tests" in values:
            value = f"{values['tests']}, {value}"  # tests may span several header lines
        values[key] = value
    values.setdefault("materialized", DEFAULT_MATERIALIZED[schema])
    if not _body(text) or not re.search(r"\bselect\b|\bwith\b|\bvalues\b", text, re.I):
        raise ConfigError(f"{where}: the file holds no SELECT; a model is one SELECT statement")
    return Model(schema, name, where, _body(text), _config(where, values))


def discover(project_dir: Path) -> list[Model]:
    """Every model of a project: ``sql/<layer>/*.sql`` plus registered ``Transform`` subclasses."""
    root = project_dir / "sql"
    models = [parse_model(path, root) for layer in LAYERS for path in sorted((root / layer).glob("*.sql"))]
    models += [cls().model() for cls in registered_transforms()]
    seen: dict[str, Model] = {}
    for model in models:
        if model.relation in seen:
            raise ConfigError(f"{model.path} and {seen[model.relation].path} both build {model.relation}; rename one")
        seen[model.relation] = model
    return models
