"""Sample records for a generated project: deterministic, typed by the requirements, in each source's format."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import sqlite3
from pathlib import Path
from typing import Any

from elt.generator.requirements import Entity, Field_, Source, file_format

SAMPLE_ROWS = 25
_START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
_DEFAULT_FIELDS = [Field_(name="name"), Field_(name="status"), Field_(name="amount", type="number"),
                   Field_(name="updated_at", type="timestamp")]


def fields_of(entity: Entity) -> list[Field_]:
    """The entity's fields: as declared, else a plausible default; the key and cursor always present."""
    fields = list(entity.fields or _DEFAULT_FIELDS)
    names = [f.name for f in fields]
    if entity.primary_key not in names:
        fields.insert(0, Field_(name=entity.primary_key, type="integer"))
    if entity.cursor and entity.cursor not in names:
        fields.append(Field_(name=entity.cursor, type="timestamp"))
    return fields


def value(field: Field_, i: int) -> Any:
    if field.type == "integer":
        return i if field.name in ("id",) or field.name.endswith("_id") else (i * 37) % 1000
    if field.type == "number":
        return round(((i * 1913) % 50_000) / 100, 2)
    if field.type == "boolean":
        return i % 3 != 0
    if field.type == "timestamp":
        return (_START + dt.timedelta(hours=i * 5)).isoformat().replace("+00:00", "Z")
    if field.type == "date":
        return (_START + dt.timedelta(days=i)).date().isoformat()
    if field.type == "json":
        return {"n": i, "tags": ["sample"]}
    if field.name == "status":
        return ["active", "pending", "closed"][i % 3]
    if field.name == "email":
        return f"person{i}@example.com"
    return f"{field.name} {i}"


def records(entity: Entity) -> list[dict[str, Any]]:
    fields = fields_of(entity)
    rows = []
    for i in range(1, SAMPLE_ROWS + 1):
        row = {f.name: value(f, i) for f in fields}
        cursor = next((f for f in fields if f.name == entity.cursor), None)
        if cursor is not None and cursor.type in ("integer", "number"):
            row[cursor.name] = i * 10  # a sequence: increasing, as a cursor is read in order
        if entity.primary_key in row and not isinstance(row[entity.primary_key], int):
            row[entity.primary_key] = f"{entity.name[:3]}_{i:04d}"
        rows.append(row)
    return rows


def _text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (dict, list)):
        return json.dumps(v)
    return str(v)


#: The change table `elt cdc install` creates, as one SQLite table (SQLite has no schemas).
CHANGES_TABLE = "elt_cdc_changes"


def _write_changes(source: Source, folder: Path) -> dict[str, int]:
    """A change-capture sample: each entity's rows inserted, then one updated and one deleted."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{source.name}.db"
    path.unlink(missing_ok=True)
    counts: dict[str, int] = {}
    changes: list[tuple[Any, ...]] = []
    for entity in source.entities:
        rows = records(entity)
        table = f"public.{entity.name}"
        events: list[tuple[str, dict[str, Any] | None, dict[str, Any] | None]] = [("insert", None, row) for row in rows]
        events.append(("update", rows[0], {**rows[0], **{k: v for k, v in rows[1].items() if k != entity.primary_key}}))
        events.append(("delete", rows[-1], None))
        for op, before, after in events:
            seq = len(changes) + 1
            changes.append((seq, op, table, json.dumps(before) if before else None, json.dumps(after) if after else None,
                            (_START + dt.timedelta(minutes=seq)).isoformat(), 1000 + seq))
        counts[entity.name] = len(events)
    with sqlite3.connect(path) as con:
        con.execute(f"CREATE TABLE {CHANGES_TABLE} (seq INTEGER PRIMARY KEY, op TEXT, table_name TEXT, before TEXT,"
                    " after TEXT, changed_at TEXT, txid INTEGER)")
        con.executemany(f"INSERT INTO {CHANGES_TABLE} VALUES (?, ?, ?, ?, ?, ?, ?)", changes)
    return counts


def write(source: Source, folder: Path, *, cdc: bool = False) -> dict[str, int]:
    """Write the source's sample data under ``folder``; returns the records per entity."""
    counts: dict[str, int] = {}
    if source.type == "database" and cdc:
        return _write_changes(source, folder)
    if source.type == "database":
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{source.name}.db"
        path.unlink(missing_ok=True)
        with sqlite3.connect(path) as con:
            for entity in source.entities:
                rows = records(entity)
                fields = fields_of(entity)
                types = {"integer": "INTEGER", "number": "NUMERIC", "boolean": "BOOLEAN"}
                columns = ", ".join(f'"{f.name}" {types.get(f.type, "TEXT")}' for f in fields)
                con.execute(f'CREATE TABLE "{entity.name}" ({columns}, PRIMARY KEY ("{entity.primary_key}"))')
                con.executemany(
                    f'INSERT INTO "{entity.name}" VALUES ({", ".join("?" for _ in fields)})',
                    [[json.dumps(r[f.name]) if f.type == "json" else r[f.name] for f in fields] for r in rows])
                counts[entity.name] = len(rows)
        return counts
    target = folder / source.name
    target.mkdir(parents=True, exist_ok=True)
    for entity in source.entities:
        rows = records(entity)
        counts[entity.name] = len(rows)
        if source.type == "rest_api":
            (target / f"{entity.name}.json").write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
        elif source.type == "webhook":
            (target / f"{entity.name}-sample.ndjson").write_text(
                "".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        elif file_format(source) == "json":
            (target / f"{entity.name}-sample.json").write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
        elif file_format(source) == "ndjson":
            (target / f"{entity.name}-sample.ndjson").write_text(
                "".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        else:
            buffer = io.StringIO()
            writer = csv.writer(buffer, lineterminator="\n", delimiter="\t" if file_format(source) == "tsv" else ",")
            writer.writerow(list(rows[0]))
            writer.writerows([[_text(v) for v in r.values()] for r in rows])
            (target / f"{entity.name}-sample.{file_format(source)}").write_text(buffer.getvalue(), encoding="utf-8")
    return counts
