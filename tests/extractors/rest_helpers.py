"""Shared pieces of the REST extractor tests: a record set and a way to read a stream without a database."""

from __future__ import annotations

import datetime as dt
from typing import Any

from elt import Extractor
from elt.state import StreamState

START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def make_items(count: int) -> list[dict[str, Any]]:
    return [
        {"id": i, "name": f"item {i}", "updated_at": (START + dt.timedelta(minutes=i)).isoformat()}
        for i in range(1, count + 1)
    ]


def read_all(extractor: Extractor, since: Any = None) -> list[dict[str, Any]]:
    """Every record the stream yields, as the runner would pull them."""
    state = StreamState("test", extractor.name, since=since)
    return [record for batch in extractor.extract(state) for record in batch.records]


def ids(records: list[dict[str, Any]]) -> list[Any]:
    return [r["id"] for r in records]
