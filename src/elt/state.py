"""Stream state: the watermark an incremental stream has reached, and how to store it.

The loader stores state in ``pipeline.state`` in the same transaction as the
rows it describes. This module only turns watermarks into JSON and back and
computes where the next extraction starts (watermark minus lookback).
"""

from __future__ import annotations

import datetime as dt
import decimal
from dataclasses import dataclass, field
from typing import Any

from elt.records import coerce_cursor, cursor_kind


@dataclass(frozen=True)
class Watermark:
    """The highest cursor value committed for a stream, with its kind."""

    value: Any
    kind: str

    @classmethod
    def of(cls, value: Any, kind: str | None = None) -> Watermark:
        kind = kind or cursor_kind(value)
        return cls(coerce_cursor(value, kind), kind)

    def to_json(self) -> dict[str, Any]:
        value = self.value
        if isinstance(value, (dt.datetime, dt.date)):
            value = value.isoformat()
        elif isinstance(value, decimal.Decimal):
            value = str(value)
        return {"kind": self.kind, "value": value}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Watermark | None:
        if not data or data.get("value") is None:
            return None
        return cls(coerce_cursor(data["value"], data["kind"]), data["kind"])

    def minus(self, lookback: Any) -> Any:
        """The value to extract from: this watermark minus ``lookback`` (inclusive bound)."""
        if not lookback:
            return self.value
        if self.kind in ("timestamp", "date"):
            delta = lookback if isinstance(lookback, dt.timedelta) else dt.timedelta(seconds=float(lookback))
            return self.value - delta
        if self.kind == "integer":
            return self.value - int(lookback)
        if self.kind == "number":
            return self.value - decimal.Decimal(str(lookback))
        # Text cursors have no arithmetic; the overlap is just the last value.
        return self.value

    def later(self, other: Watermark | None) -> Watermark:
        """The later of two watermarks: stored state never moves backwards."""
        if other is None:
            return self
        return self if self.value >= other.value else other


@dataclass
class StreamState:
    """What an extractor is told at the start of a stream.

    ``since`` is where to start reading (inclusive): the stored watermark minus
    the stream's lookback, or the ``--since`` value of a backfill, or ``None``
    for a first or full-refresh run.
    """

    pipeline: str
    stream: str
    watermark: Watermark | None = None
    since: Any = None
    full_refresh: bool = False
    #: Extra state the extractor keeps (written with :attr:`Batch.state`), by key.
    values: dict[str, Any] = field(default_factory=dict)
