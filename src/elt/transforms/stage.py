"""``elt stage``: a starter staging model for a raw stream, typed from the fields seen so far.

The file casts each top-level field out of ``_raw_payload`` with the type its
values have shown (integers, decimals, timestamps and dates recognised in
strings, as CSV files give them), an empty string becoming NULL before any
cast; keeps the latest version per key, and declares a ``readable`` test (every
cast of every row is computed when the model builds, so a cast that fails on
data outside the sample fails the build, not the first reader) and ``unique``
and ``not_null`` tests on the key. It is a starting point: the user owns the file afterwards, and ``elt``
never overwrites it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from elt.errors import ConfigError
from elt.extractors.base import Extractor
from elt.records import parse_timestamp

# How each JSON type of the schema trail is cast out of the payload.
_CASTS = {"integer": "bigint", "number": "numeric", "boolean": "boolean", "timestamp": "timestamptz", "date": "date"}
_SAFE = re.compile(r"^[a-z_][a-z0-9_]*$")
#: PostgreSQL keeps the first 63 bytes of an identifier: two long field names can meet there.
_NAME_BYTES = 63
_BIGINT = range(-(2**63), 2**63)


def column_name(field: str) -> str:
    """A lower-case SQL column name for a JSON field (``createdAt`` -> ``created_at``)."""
    name = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", field).lower()
    name = re.sub(r"[^a-z0-9_]+", "_", name).strip("_") or "field"
    name = name if not name[0].isdigit() else f"f_{name}"
    return name[:_NAME_BYTES]


def _unique(name: str, used: set[str]) -> str:
    """``name``, or with a numbered suffix (within the 63 bytes) when a column already has it."""
    number = 1
    candidate = name
    while candidate in used:
        number += 1
        suffix = f"_{number}"
        candidate = name[:_NAME_BYTES - len(suffix)] + suffix
    used.add(candidate)
    return candidate


def refine(kind: str, samples: list[Any]) -> str:
    """A string field whose sampled values all look like timestamps, dates or decimals is one."""
    if kind == "integer" and any(isinstance(v, int) and v not in _BIGINT for v in samples):
        return "number"  # beyond bigint: numeric holds every digit
    values = [v for v in samples if isinstance(v, str) and v]
    if kind != "string" or not values:
        return kind
    if all(re.fullmatch(r"\d{4}-\d{2}-\d{2}", v) for v in values):
        return "date"
    # Money as text ("12.50") is common in APIs; a leading-zero code ("007") stays text.
    if all(re.fullmatch(r"-?(0|[1-9]\d{0,17})", v) for v in values):
        return "integer"  # up to 18 digits: always a bigint
    if all(re.fullmatch(r"-?(0|[1-9]\d*)(\.\d+)?", v) for v in values):
        return "number"
    try:
        for value in values:
            if not re.match(r"\d{4}-\d{2}-\d{2}[T ]\d", value):
                return kind
            parse_timestamp(value)
    except ValueError:
        return kind
    return "timestamp"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _relation(schema: str, name: str) -> str:
    """A quoted schema.name: stream names come from sources and may hold any character."""
    return ".".join('"' + part.replace('"', '""') + '"' for part in (schema, name))


def expression(field: str, kind: str) -> str:
    literal = _literal(field)
    if kind in ("object", "array") or "|" in kind:
        return f"_raw_payload -> {literal}"  # stays jsonb: nested or mixed-type data
    text = f"_raw_payload ->> {literal}"
    cast = _CASTS.get(kind)
    # CSV files have no NULL: an empty field is '' and must not reach the cast ('' is no number).
    return f"NULLIF({text}, '')::{cast}" if cast else text


def starter_sql(table: str, extractor: Extractor, fields: dict[str, str], samples: dict[str, list[Any]],
                *, keep_payload: bool = False, sequence: str | None = "_row_seq") -> str:
    """The text of ``sql/stg/<table>.sql``; ``keep_payload`` adds the record as received (fields not known yet).

    ``sequence`` is the raw table's arrival-order column, the last tie-break between versions of a key
    (PostgreSQL's ``_row_seq``); None where the raw table has none (BigQuery): then ``_loaded_at``.
    """
    keys = list(extractor.key_fields)
    columns: list[str] = []
    used: set[str] = set()
    # Key fields first: they keep their plain column names (the tests below name them), and a
    # field like "ID" that maps to the same name gets the suffix instead.
    for field, kind in sorted(fields.items(), key=lambda item: item[0] not in keys):
        name = _unique(column_name(field), used)
        quoted = name if _SAFE.match(name) else f'"{name}"'
        columns.append(f"    {expression(field, refine(kind, samples.get(field, [])))} AS {quoted}")
    if keep_payload:
        columns.append("    _raw_payload AS payload")
    columns += [f"    {name}" for name in extractor.source_fields]  # raw columns: where each row came from
    columns.append("    _loaded_at")
    key_names = [column_name(k) for k in keys]
    header = [
        f"-- Staging model for raw.{table}: one typed row per {', '.join(keys) or 'record'}.",
        "-- Written by `elt stage`; yours to edit (elt never overwrites it). Types come from the",
        "-- values seen so far: check them, rename columns, drop what you do not need.",
        "-- materialized: view",
    ]
    if keys:
        header.append(f"-- unique_key: {', '.join(key_names)}")
        header.append(f"-- tests: readable, unique({', '.join(key_names)}), "
                      + ", ".join(f"not_null({k})" for k in key_names))
    else:
        header.append("-- tests: readable")
    select = "SELECT\n" + ",\n".join(columns)
    relation = _relation("raw", table)
    if not keys:
        return "\n".join(header) + f"\n{select}\nFROM {relation}\n"
    # The latest version of each key: raw keeps every version the source sent.
    order = [f"_raw_payload ->> {_literal(k)}" for k in keys]
    cursor = extractor.cursor_field
    if cursor:
        kind = refine(fields.get(cursor, "string"), samples.get(cursor, []))
        order.append(f"{expression(cursor, kind)} DESC NULLS LAST")
    order.append(f"{sequence} DESC" if sequence else "_loaded_at DESC")
    distinct = ", ".join(f"_raw_payload ->> {_literal(k)}" for k in keys)
    # `elt reconcile` marks every stored version of a key gone from the source, so leaving
    # marked rows out before DISTINCT ON leaves deleted keys out (a key back again is unmarked).
    return ("\n".join(header) + f"\nSELECT DISTINCT ON ({distinct})\n" + ",\n".join(columns)
            + f"\nFROM {relation}\nWHERE _deleted_at IS NULL\nORDER BY {', '.join(order)}\n")


def write_starter(project_dir: Path, pipeline: str, extractor: Extractor, store: Any, *, force: bool = False) -> Path:
    """Write ``sql/stg/<table>.sql`` for a stream that has loaded at least once."""
    table = extractor.table_name(pipeline)
    path = project_dir / "sql" / "stg" / f"{table}.sql"
    if path.exists() and not force:
        raise ConfigError(f"{path} exists and is yours now; delete it (or pass --force) to write a new starter")
    _, known = store.read_state(pipeline, extractor.name)
    # The schema trail keeps every type a field showed; several types stay jsonb.
    fields = {name: "|".join(types) if isinstance(types, list) else str(types) for name, types in known.items()}
    if not fields:
        raise ConfigError(
            f"stream {extractor.name!r} of {pipeline} has not loaded any records yet, so its fields are unknown;"
            f" run `elt run {pipeline} --stream {extractor.name}` first"
        )
    samples: dict[str, list[Any]] = {}
    for payload in store.sample_payloads(table, 200):
        for field, value in payload.items():
            samples.setdefault(field, []).append(value)
    columns = {name for name, _ in store.raw_columns(table)}
    sequence = "_row_seq" if "_row_seq" in columns or not columns else None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(starter_sql(table, extractor, fields, samples, sequence=sequence), encoding="utf-8")
    return path
