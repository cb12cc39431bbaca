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
from typing import Any, ClassVar

from pydantic import BaseModel

from elt import strategies
from elt.errors import ConfigError
from elt.state import CURSOR_KINDS, StreamState, check_lookback
from elt.strategies import WriteStrategy


@dataclass(frozen=True)
class Cursor:
    """The incremental column of a stream and how far back to re-read on each run.

    ``lookback`` catches rows whose transaction committed after later cursor
    values were read: a ``timedelta`` for timestamps, a number for numeric
    cursors. The write strategy makes the re-read overlap harmless.

    ``param`` names the request parameter that carries the start value to the
    source (``updated_since``), for extractors that build requests (REST).

    ``kind`` (``timestamp``, ``integer``, ``number``, ``date`` or ``text``) fixes
    how values compare; without it the first accepted non-null value decides.
    """

    field: str
    lookback: dt.timedelta | int | float | None = None
    param: str | None = None
    kind: str | None = None


@dataclass
class Batch:
    """Records as received plus the high-water mark the batch reaches.

    ``high_water`` is ``None`` to let the runner take the greatest cursor value
    in ``records``. ``state`` holds extra stream state (a file manifest entry,
    say) committed in the same transaction as the records; ``rejected`` are
    ``(record, reason)`` pairs the extractor itself could not read, sent to
    ``pipeline.dead_letter`` with the batch; ``after_commit`` runs once the
    batch is committed (moving a processed file, say).

    ``incomplete`` holds reasons the read may have skipped records (a page that
    failed for good, unreadable rows, a key seen twice by offset paging over
    moving data), each naming the cause and the fix. The runner then ends the
    run ``partial``, keeps the watermark at what is proven complete and never
    swaps a ``replace`` table for that read. A batch may carry only reasons.
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
    incomplete: list[str] = field(default_factory=list)
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
    #: Whether records arrive in cursor order (the watermark can advance per batch). A
    #: sorted stream whose cursor goes backwards fails at that batch (see state.WatermarkTracker).
    sorted_by_cursor: ClassVar[bool] = True
    #: Whether each batch, once yielded, is known complete up to its high-water mark. False for
    #: reads that can only tell at the end (offset paging over moving data): the watermark then
    #: moves only when the whole read completed.
    complete_per_batch: ClassVar[bool] = True
    #: ``replace`` only: an empty read empties the table. By default an empty read keeps the
    #: table and fails the stream (an empty answer is likelier a broken source than an empty one).
    allow_empty: ClassVar[bool] = False
    #: `elt reconcile` marks rows whose key vanished from the source; needs :meth:`source_keys`.
    detect_deletes: ClassVar[bool] = False
    #: Fields the extractor adds to each record to say where it came from (a file and line, say):
    #: stored in raw columns of the same names, not in ``_raw_payload``, which stays as received.
    source_fields: ClassVar[tuple[str, ...]] = ()
    #: Freshness SLA for `elt check`: the raw table's newest row may not be older than this
    #: (a timedelta or "6h"); default: twice the pipeline's schedule interval.
    freshness: ClassVar[dt.timedelta | str | None] = None
    #: Set while the stream reads stand-in data instead of its real source: what it reads and how
    #: to go live ("sample_data/shop: set SHOP_BASE_URL in .env"). Every run logs it, `elt status`
    #: shows it, and `elt check` fails on it when ELT_ENV=production.
    sample_data: ClassVar[str | None] = None

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

    def source_keys(self) -> Iterator[list[tuple[Any, ...]]]:
        """Every primary key in the source now, in pages of tuples (for ``detect_deletes``)."""
        raise NotImplementedError(f"{type(self).__name__} cannot list its source keys")

    def listed_keys(self) -> Iterator[list[tuple[Any, ...]]]:
        """:meth:`source_keys`, checked page by page (what ``elt reconcile`` reads).

        A wrong shape (a flat list of ids, a page of strings) would otherwise meet
        the destination as a cryptic COPY or type error, or worse, compare wrongly:
        it fails here naming the contract, before any key is marked deleted.
        """
        fields = self.key_fields
        example = ", ".join(f"({i},)" for i in (1, 2)) if len(fields) == 1 else "(1, 'eu'), (2, 'us')"

        def wrong(what: Any) -> ConfigError:
            shown = repr(what)
            shown = shown if len(shown) <= 80 else shown[:77] + "..."
            return ConfigError(
                f"stream {self.name!r}: source_keys() must yield pages (lists) of key tuples, one value per"
                f" primary_key field {tuple(fields)}, e.g. [{example}]; got {shown}. Nothing was marked deleted")

        for page in self.source_keys():
            if not isinstance(page, (list, tuple)):
                raise wrong(page)
            for key in page:
                if not isinstance(key, (list, tuple)) or len(key) != len(fields):
                    raise wrong(key)
            yield [tuple(key) for key in page]

    @property
    def lists_keys(self) -> bool:
        """Whether :meth:`source_keys` is implemented (``detect_deletes`` needs it)."""
        return type(self).source_keys is not Extractor.source_keys

    def fault_report(self) -> dict[str, Any]:
        """Faults the last read met and survived or not (REST: retries by cause, URLs failed for good).

        The run stores it with the stream's figures in ``pipeline.execution_log``; empty when none.
        """
        return {}

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
    def cursor_declared_kind(self) -> str | None:
        return self.cursor.kind if isinstance(self.cursor, Cursor) else None

    @property
    def strategy(self) -> WriteStrategy:
        if self.write_strategy is not None:
            return strategies.get(self.write_strategy)
        if not self.key_fields:
            return strategies.get("append")
        return strategies.get("append_dedup" if self.cursor_field else "upsert")

    def table_name(self, pipeline_name: str) -> str:
        return f"{self.source or pipeline_name}_{self.name}"

    def _check(self) -> None:
        label = f"stream {self.name or type(self).__name__!r}"
        if not self.name:
            raise ConfigError(f"{label}: set a name (the entity, e.g. name = 'orders')")
        try:
            strategy = self.strategy
        except ValueError as exc:
            raise ConfigError(f"{label}: {exc}") from None
        strategy.check(self)
        kind = self.cursor_declared_kind
        if kind is not None and kind not in CURSOR_KINDS:
            raise ConfigError(f"{label}: Cursor kind {kind!r} is not one of {', '.join(CURSOR_KINDS)}")
        if self.cursor_field and self.lookback and kind:
            check_lookback(self.name, kind, self.lookback)
        if not 0 <= float(self.max_bad_ratio) <= 1:
            raise ConfigError(f"{label}: max_bad_ratio must be between 0 and 1, got {self.max_bad_ratio!r}")
        if self.detect_deletes and not self.key_fields:
            raise ConfigError(f"{label}: detect_deletes needs a primary_key (deleted rows are found by key)")
        if self.detect_deletes and not self.lists_keys:
            raise ConfigError(
                f"{label}: detect_deletes = True needs a way to list the source's keys, and"
                f" {type(self).__name__} has none: implement source_keys() (a key-only listing of the source),"
                " or remove detect_deletes"
            )
        reserved = {"_raw_payload", "_loaded_at", "_batch_id", "_run_id", "_record_hash", "_row_seq", "_deleted_at"}
        for column in (*self.key_fields, self.cursor_field, self.partition_by):
            if column in reserved:
                raise ConfigError(f"{label}: field {column!r} clashes with elt's own column of that name")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} stream {self.name!r}>"
