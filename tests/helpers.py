"""Small helpers shared by tests: in-process pipelines over a mutable list of records."""

from __future__ import annotations

from typing import Any

from elt import Cursor, Pipeline, extractor
from elt.progress import LogProgress
from elt.records import coerce_cursor, cursor_kind
from elt.runner import Runner, RunResult


def list_stream(records: list[dict[str, Any]], **settings: Any) -> Any:
    """A stream over ``records`` (read at run time), filtered by the cursor when it has one."""
    cursor = settings.get("cursor")
    field = cursor.field if isinstance(cursor, Cursor) else cursor

    def read(since: Any) -> Any:
        rows = list(records)
        if field:
            rows.sort(key=lambda r: (r[field], str(r.get("id"))))
            if since is not None:
                # `since` arrives typed (a datetime for ISO timestamps), like an API client would want it.
                kind = cursor_kind(since)
                rows = [r for r in rows if coerce_cursor(r[field], kind) >= since]
        yield from rows

    settings.setdefault("name", "items")
    return extractor(read, **settings)


def run(pipeline: Pipeline, loader: Any = None, **options: Any) -> RunResult:
    return Runner(pipeline, loader=loader, progress=LogProgress(interval=3600), **options).run()


def table_rows(db: Any, table: str, columns: str = "*", order: str = "1") -> list[dict[str, Any]]:
    return db.execute(f"SELECT {columns} FROM {table} ORDER BY {order}").fetchall()
