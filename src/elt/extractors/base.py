"""The extractor contract: declare a stream, yield batches of records as received.

An extractor reads; it never writes to the destination. A subclass declares
its stream with class attributes and implements :meth:`Extractor.records`
(or :meth:`Extractor.extract` for full control over batching)::

    class Orders(Extractor):
        name = "orders"
        primary_key = "id"
        cursor = Cursor("updated_at", lookback=timedelta(minutes=10))

        def records(self, state):
            yield from api.orders(updated_since=state.since)

Incremental streams must yield records in cursor order (or set
``sorted_by_cursor = False``, and the watermark only advances when the stream
completes).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

from pydantic import BaseModel

from elt.errors import ConfigError
from elt.state import StreamState


class WriteStrategy(StrEnum):
    """How a batch is written to its raw table (see DESIGN.md, "Write strategies")."""

    APPEND = "append"
    APPEND_DEDUP = "append_dedup"
    UPSERT = "upsert"
    DELETE_RELOAD = "delete_reload"
    REPLACE = "replace"


@dataclass(frozen=True)
class Cursor:
    """The incremental column of a stream and how far back to re-read on each run.

    ``lookback`` catches rows whose transaction committed after later cursor
    values were read: a ``timedelta`` for timestamps, a number for numeric
    cursors. The write strategy makes the re-read overlap harmless.

    ``param`` names the request parameter that carries the start value to the
    source (``updated_since``), for extractors that build requests (REST).
    """

    field: str
    lookback: dt.timedelta | int | float | None = None
    param: str | None = None


@dataclass
class Batch:
    """Records as received plus the high-water mark the batch reaches.

    ``high_water`` is ``None`` to let the runner take the greatest cursor value
    in ``records``. ``state`` holds extra stream state (a file manifest entry,
    say) committed in the same transaction as the records; ``rejected`` are
    ``(record, reason)`` pairs the extractor itself could not read, sent to
    ``pipeline.dead_letter`` with the batch; ``after_commit`` runs once the
    batch is committed (moving a processed file, say).

    ``supersedes`` maps a source (a file's path) to ``(version, read_from)``:
    the version now complete in the destination and the line this read
    started after (0: the whole source was read), for extractors whose
    ``source_fields`` are ``(id, version)`` with ids ``<source>:<line>``. In the
    batch's transaction, stored rows of that source with another version get
    ``_deleted_at`` (a changed file replaces its old version), and open dead
    letters of earlier runs about the whole source, or about lines this read
    covered, are resolved (a rejected file, loaded after the fix; lines still
    bad were rejected again by this read).
    """

    records: list[dict[str, Any]]
    high_water: Any = None
    state: dict[str, Any] = field(default_factory=dict)
    rejected: list[tuple[Any, str]] = field(default_factory=list)
    after_commit: Callable[[], None] | None = None
    supersedes: dict[str, tuple[str, int]] = field(default_factory=dict)


class Extractor:
    """Base class of every stream. Override :meth:`records` or :meth:`extract`."""

    #: The entity name; the raw table is ``raw.<source>_<name>``.
    name: ClassVar[str] = ""
    #: The source system; defaults to the pipeline's name.
    source: ClassVar[str | None] = None
    #: One field or several that identify a record.
    primary_key: ClassVar[str | Sequence[str]] = ()
    #: Incremental field (name or :class:`Cursor`); ``None`` for a full read each run.
    cursor: ClassVar[str | Cursor | None] = None
    #: One of :class:`WriteStrategy`; default: ``append_dedup`` for keyed incremental
    #: streams, ``upsert`` for keyed full reads, ``append`` without a key.
    write_strategy: ClassVar[str | WriteStrategy | None] = None
    #: Field whose values name the partitions ``delete_reload`` replaces.
    partition_by: ClassVar[str | None] = None
    #: Optional pydantic model every record must satisfy; failures go to dead_letter.
    contract: ClassVar[type[BaseModel] | None] = None
    #: Share of rejected records a run may have and still end ``partial`` (not ``failed``).
    max_bad_ratio: ClassVar[float] = 0.0
    #: Records per batch (one destination transaction each).
    batch_size: ClassVar[int] = 10_000
    #: Whether records arrive in cursor order (the watermark can advance per batch).
    sorted_by_cursor: ClassVar[bool] = True
    #: Fields the extractor adds to each record to say where it came from (a file and line, say):
    #: stored in raw columns of the same names, not in ``_raw_payload``, which stays as received.
    source_fields: ClassVar[tuple[str, ...]] = ()
    #: Freshness SLA for `elt check`: the raw table's newest row may not be older than this
    #: (a timedelta or "6h"); default: twice the pipeline's schedule interval.
    freshness: ClassVar[dt.timedelta | str | None] = None

    def __init__(self, **settings: Any) -> None:
        for key, value in settings.items():
            if not hasattr(type(self), key):
                raise ConfigError(f"{type(self).__name__} has no setting {key!r}")
            setattr(self, key, value)
        self._check()

    # --- hooks ----------------------------------------------------------------

    def records(self, state: StreamState) -> Iterable[dict[str, Any] | list[dict[str, Any]]]:
        """Yield records (dicts as received) or pages of records, from ``state.since`` on."""
        raise NotImplementedError(f"{type(self).__name__} must implement records() or extract()")

    def extract(self, state: StreamState) -> Iterator[Batch]:
        """Yield batches of at most ``batch_size`` records (lazily: memory stays bounded).

        When the source fails part-way, the records already read are yielded as
        a last batch before the error propagates: they load, the watermark
        covers exactly them, and the next run carries on from there.
        """
        size = max(1, int(self.batch_size))
        pending: list[dict[str, Any]] = []
        try:
            for item in self.records(state):
                if isinstance(item, dict):
                    pending.append(item)
                else:
                    pending.extend(item)
                while len(pending) >= size:
                    yield Batch(pending[:size])
                    pending = pending[size:]
        except Exception:
            if pending:
                yield Batch(pending)
            raise
        if pending:
            yield Batch(pending)

    def transform_record(self, record: dict[str, Any]) -> dict[str, Any]:
        """Reshape one record before validation and loading (default: unchanged).

        Applied again when dead letters are replayed, so a corrected hook fixes them.
        """
        return record

    # --- derived settings -------------------------------------------------------

    @property
    def key_fields(self) -> tuple[str, ...]:
        key = self.primary_key
        if not key:
            return ()
        return (key,) if isinstance(key, str) else tuple(key)

    @property
    def cursor_field(self) -> str | None:
        if self.cursor is None:
            return None
        return self.cursor if isinstance(self.cursor, str) else self.cursor.field

    @property
    def lookback(self) -> Any:
        return self.cursor.lookback if isinstance(self.cursor, Cursor) else None

    @property
    def strategy(self) -> WriteStrategy:
        if self.write_strategy is not None:
            return WriteStrategy(self.write_strategy)
        if not self.key_fields:
            return WriteStrategy.APPEND
        return WriteStrategy.APPEND_DEDUP if self.cursor_field else WriteStrategy.UPSERT

    def table_name(self, pipeline_name: str) -> str:
        return f"{self.source or pipeline_name}_{self.name}"

    def _check(self) -> None:
        label = f"stream {self.name or type(self).__name__!r}"
        if not self.name:
            raise ConfigError(f"{label}: set a name (the entity, e.g. name = 'orders')")
        try:
            strategy = self.strategy
        except ValueError:
            allowed = ", ".join(s.value for s in WriteStrategy)
            raise ConfigError(f"{label}: write_strategy {self.write_strategy!r} is not one of {allowed}") from None
        if strategy in (WriteStrategy.UPSERT, WriteStrategy.APPEND_DEDUP) and not self.key_fields:
            raise ConfigError(f"{label}: write_strategy {strategy.value} needs a primary_key")
        if strategy is WriteStrategy.DELETE_RELOAD and not self.partition_by:
            raise ConfigError(f"{label}: write_strategy delete_reload needs partition_by (the field naming the partition)")
        if not 0 <= float(self.max_bad_ratio) <= 1:
            raise ConfigError(f"{label}: max_bad_ratio must be between 0 and 1, got {self.max_bad_ratio!r}")
        reserved = {"_raw_payload", "_loaded_at", "_batch_id", "_run_id", "_record_hash", "_row_seq", "_deleted_at"}
        for column in (*self.key_fields, self.cursor_field, self.partition_by):
            if column in reserved:
                raise ConfigError(f"{label}: field {column!r} clashes with elt's own column of that name")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} stream {self.name!r}>"
