"""Stream state: the watermark an incremental stream has reached, and when it may move.

The loader stores state in ``pipeline.state`` in the same transaction as the
rows it describes. This module owns the rules: the cursor's kind, where the
next extraction starts (watermark minus lookback), how far each batch may
move the watermark, and the sort check (:class:`WatermarkTracker`). The runner
asks the tracker; nothing else decides.
"""

from __future__ import annotations

import datetime as dt
import decimal
from dataclasses import dataclass, field
from typing import Any

from elt.errors import ConfigError, EltError
from elt.records import coerce_cursor, cursor_kind

#: The kinds a cursor can have; ``Cursor(kind=...)`` takes one of these.
CURSOR_KINDS = ("timestamp", "integer", "number", "date", "text")


def in_utc(value: Any) -> Any:
    """A timestamp cursor value in UTC (the same instant); any other value as it is."""
    if isinstance(value, dt.datetime) and value.tzinfo is not None and value.tzinfo is not dt.UTC:
        return value.astimezone(dt.UTC)
    return value


#: What ``--since`` accepts for a cursor of each kind, for the usage error that refuses anything else.
SINCE_FORMATS = {
    "timestamp": "an ISO-8601 timestamp (2026-01-31T08:00:00Z, '2026-01-31 08:00:00+02:00') or a date (2026-01-31)",
    "date": "a date (2026-01-31)",
    "integer": "a whole number (1200)",
    "number": "a number (12.5)",
    "text": "any text",
}


def _kind_of_since(value: Any) -> str:
    # The command line gives text: "1200" is a number there, though a record's "1200" is text.
    if isinstance(value, str):
        try:
            number = decimal.Decimal(value.strip())
        except decimal.InvalidOperation:
            return cursor_kind(value)
        if number.is_finite():
            return "integer" if number == number.to_integral_value() and "." not in value else "number"
    return cursor_kind(value)


def since_value(stream: str, cursor: str, value: Any, kind: str | None) -> Any:
    """``--since`` as a cursor value of the stream's ``kind`` (None: not known yet), or a ConfigError saying
    what the flag accepts.

    A stream whose kind is not known yet (no run stored it, none declared) takes a
    number, a date or a timestamp: text there is far likelier a typo than a text
    cursor, and read as text it would be compared with the first values as text.
    """
    label = f"--since {value!r} for stream {stream!r} (cursor {cursor!r})"
    if kind is None:
        kind = _kind_of_since(value)
        if kind == "text":
            raise ConfigError(
                f"{label}: not a number, a date or an ISO-8601 timestamp, and the stream's cursor kind is not known"
                f" yet; give {SINCE_FORMATS['integer']}, {SINCE_FORMATS['timestamp']}, or declare"
                f" Cursor({cursor!r}, kind='text') to backfill a text cursor")
    try:
        return in_utc(coerce_cursor(value, kind))
    except ValueError:
        raise ConfigError(f"{label}: not a valid {kind}; give {SINCE_FORMATS[kind]}") from None


def check_lookback(stream: str, kind: str, lookback: Any) -> None:
    """Refuse a lookback that cannot apply to a cursor of ``kind`` (it would be ignored silently)."""
    if not lookback:
        return
    label = f"stream {stream!r}"
    if kind == "text":
        raise ConfigError(
            f"{label}: the cursor holds text, which has no arithmetic, so lookback={lookback!r} cannot apply."
            " If the values are timestamps or numbers, declare Cursor(..., kind='timestamp') (or 'integer');"
            " otherwise remove the lookback")
    if isinstance(lookback, dt.timedelta):
        if kind not in ("timestamp", "date"):
            raise ConfigError(
                f"{label}: lookback is a timedelta but the cursor is a {kind}; give the lookback as a number"
                " of cursor units (lookback=1000)")
    elif kind == "date":
        raise ConfigError(f"{label}: a date cursor needs its lookback as a timedelta (lookback=timedelta(days=2))")
    elif isinstance(lookback, bool) or not isinstance(lookback, (int, float, decimal.Decimal)):
        raise ConfigError(f"{label}: lookback {lookback!r} is neither a timedelta nor a number")
    elif kind == "integer" and int(lookback) != lookback:
        raise ConfigError(f"{label}: an integer cursor needs a whole-number lookback, got {lookback!r}")


class UnsortedStream(EltError):
    """A stream declared sorted by cursor went backwards: the watermark would pass unread records."""


@dataclass(frozen=True)
class Watermark:
    """The highest cursor value committed for a stream, with its kind."""

    value: Any
    kind: str

    def __post_init__(self) -> None:
        # README promises UTC: a source in another zone (a session at +02:00) gives the same instant
        # with its offset, which would be stored, shown and handed to the extractor as it came.
        object.__setattr__(self, "value", in_utc(self.value))

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
        return _minus(self.value, self.kind, lookback)

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


def _minus(value: Any, kind: str, lookback: Any) -> Any:
    """``value`` moved back by ``lookback`` (checked by :func:`check_lookback` first)."""
    if not lookback:
        return value
    if kind in ("timestamp", "date"):
        delta = lookback if isinstance(lookback, dt.timedelta) else dt.timedelta(seconds=float(lookback))
        return value - delta
    if kind == "integer":
        return value - int(lookback)
    if kind == "number":
        return value - decimal.Decimal(str(lookback))
    return value


#: How far ahead of this machine's clock a timestamp or date cursor may be. Beyond it the
#: value is taken for a placeholder (9999-12-31) or a wrong time zone: such a record is
#: dead-lettered, and the watermark never goes there (clock skew stays well inside a day).
FUTURE_TOLERANCE = dt.timedelta(days=1)


def clock_ceiling() -> dict[str, Any]:
    """The latest acceptable value of each kind that has one, read from the clock once (per batch)."""
    latest = dt.datetime.now(dt.UTC) + FUTURE_TOLERANCE
    return {"timestamp": latest, "date": latest.date()}


def beyond_the_clock(value: Any, kind: str | None, ceiling: dict[str, Any] | None = None) -> bool:
    """Whether a typed cursor value is further ahead of the clock than ``FUTURE_TOLERANCE``."""
    limit = (ceiling or clock_ceiling()).get(kind or "")
    return limit is not None and bool(value > limit)


@dataclass
class WatermarkTracker:
    """When and how far one stream's watermark moves during a read.

    - The cursor's kind is locked from the declaration (``Cursor(kind=...)``),
      the stored state, the raw table's column, or the first accepted
      non-null value, in that order; never defaulted to text.
    - A batch may carry the watermark only when each batch lands for good
      (``per_batch``: the strategy commits per batch, the stream is sorted and
      proves completeness per batch). Otherwise the highest value waits for
      :meth:`final`, which writes it only for a complete read.
    - Once the read reports that it may have skipped records, the watermark
      stays where it is for the rest of the read.
    - Sort check: a sorted stream whose batch goes below the highest value
      already committed in this read, by more than the lookback, raises
      :class:`UnsortedStream` (the Singer SDK's ``InvalidStreamSortException``).
    """

    stream: str
    cursor: str | None
    committed: Watermark | None
    kind: str | None
    lookback: Any = None
    sorted: bool = True
    per_batch: bool = True
    #: Reasons the read may have skipped records (see ``Batch.incomplete``).
    incomplete: list[str] = field(default_factory=list)
    #: Reasons the watermark was held although the read was complete (a cursor value in the future).
    held: list[str] = field(default_factory=list)
    _deferred: Watermark | None = None
    _run_high: Any = None

    def __post_init__(self) -> None:
        if self.kind is not None:
            self._lock_kind(self.kind)

    def _lock_kind(self, kind: str) -> None:
        self.kind = kind
        if self.cursor:
            check_lookback(self.stream, kind, self.lookback)

    def learn(self, kind: str | None) -> None:
        """Take the kind the first accepted value showed, when nothing fixed it before."""
        if self.kind is None and kind is not None:
            self._lock_kind(kind)

    def since(self, full_refresh: bool, override: Any = None) -> Any:
        """Where the read starts (inclusive): ``--since``, else the watermark minus the lookback."""
        if not self.cursor or full_refresh:
            return None
        if override is not None:
            return since_value(self.stream, self.cursor, override, self.kind)
        if self.committed is not None:
            return self.committed.minus(self.lookback)
        return None

    def check_sort(self, low: Any, drop: Any, batch_no: int) -> None:
        """Raise :class:`UnsortedStream` when this batch goes back beyond the lookback."""
        if not (self.sorted and self.cursor and self.kind):
            return
        tolerance = self.lookback or None
        problems = []
        if low is not None and self._run_high is not None:
            floor = _minus(self._run_high, self.kind, tolerance) if tolerance else self._run_high
            if low < floor:
                problems.append(f"batch {batch_no} holds {self.cursor} = {low} after {self._run_high} was committed")
        if drop is not None and (tolerance is None or self.kind == "text" or drop > _as_step(tolerance, self.kind)):
            problems.append(f"batch {batch_no} goes back by {drop} within itself")
        if problems:
            raise UnsortedStream(
                f"stream {self.stream!r}: records are not in {self.cursor} order ({'; '.join(problems)}), beyond the"
                " lookback, so the watermark would pass records not read yet. It stays at the last good batch."
                f" Sort the source by {self.cursor}, or set sorted_by_cursor = False on the stream (the watermark"
                " then moves only when a read completes); then run once with --full-refresh to pick up records"
                " earlier runs may have passed")

    def advance(self, high: Any, incomplete: list[str]) -> Watermark | None:
        """The watermark to commit with this batch (None: leave the stored one as it is)."""
        self.incomplete += incomplete
        if not self.cursor or high is None or self.kind is None:
            return None
        candidate = Watermark(coerce_cursor(high, self.kind), self.kind)
        if self._run_high is None or candidate.value > self._run_high:
            self._run_high = candidate.value
        if not self.held and beyond_the_clock(candidate.value, self.kind):
            # One bad value (a year 9999 placeholder, a wrong time zone) would move the watermark
            # past every record changed from now until then: each later run would read nothing
            # and still succeed. So the watermark stays, and the run says why.
            self.held.append(
                f"a record has {self.cursor} = {candidate.value}, more than {FUTURE_TOLERANCE} ahead of this"
                " machine's clock, so the watermark stays where it was: moving it there would skip every record"
                " changed before that moment. The records were loaded. Fix the value at the source (or the"
                " time zone it is read in); until then each run reads again from the held watermark")
        if self.incomplete or self.held:
            return None
        candidate = candidate.later(self.committed)
        if not self.per_batch:
            self._deferred = candidate.later(self._deferred)
            return None
        if candidate == self.committed:
            return None
        self.committed = candidate
        return candidate

    def final(self, complete: bool) -> Watermark | None:
        """The deferred watermark to commit at the end of a read, only when it is complete."""
        if not complete or self.incomplete or self.held or self._deferred is None:
            return None
        final = self._deferred.later(self.committed)
        if final == self.committed:
            return None
        self.committed = final
        return final


def _as_step(lookback: Any, kind: str) -> Any:
    """The lookback in the unit a within-batch drop is measured in (see validation.prepare)."""
    if kind in ("timestamp", "date"):
        return lookback if isinstance(lookback, dt.timedelta) else dt.timedelta(seconds=float(lookback))
    if kind == "number":
        return decimal.Decimal(str(lookback))
    return lookback
