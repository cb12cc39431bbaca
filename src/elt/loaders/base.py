"""What a destination is: a raw writer plus a bookkeeping store.

The **raw writer** is the one place that writes ``raw.*``: it runs a stream's
write strategy (see ``elt.strategies``) batch by batch, committing each
batch's rows, dead letters, schema trail and watermark in one transaction, so
data and bookkeeping cannot disagree.

The **bookkeeping store** holds the run log, the pipeline lock, stream state,
dead letters, alerts and the schema trail, and answers typed questions about
them (``last_runs``, ``unresolved_dead_letters``, ...). It never takes a query
string, so health checks, alerts, the scheduler, the CLI and replay work the
same on every destination.

Both are opened together as a :class:`Loader`; the runner sequences, the
writer writes, the store remembers.
"""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from elt.extractors.base import Extractor
from elt.limits import JsonLimits
from elt.records import to_json
from elt.state import Watermark
from elt.validation import PreparedBatch, Rejected

if TYPE_CHECKING:
    from elt.transforms.warehouse import Warehouse


def raw_data_columns(keys: Sequence[str], cursor: str | None, cursor_type: str, partition: str | None,
                     sources: Sequence[str], text: str) -> list[tuple[str, str, str]]:
    """``(column, type, stage column)`` of a raw table's data columns, the same on every destination.

    The key, cursor, partition and where-it-came-from columns, without repeats
    (a cursor that is also the key is one column), each named with the field of
    a prepared row it is filled from (see ``validation.PreparedBatch``).
    ``text`` is the destination's text type.
    """
    columns: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    for i, key in enumerate(keys):
        columns.append((key, text, f"_k{i}"))
        seen.add(key)
    if cursor and cursor not in seen:
        columns.append((cursor, cursor_type, "_cursor"))
        seen.add(cursor)
    if partition and partition not in seen:
        columns.append((partition, text, "_partition"))
    for i, name in enumerate(sources):
        columns.append((name, text, f"_s{i}"))
    return columns


def dead_letter_copy(rejected: Rejected, limits: JsonLimits) -> tuple[bytes, str]:
    """The JSON a destination stores for a rejected record, and the letter's kind.

    A letter is replayed by loading its stored copy, so that copy must be the
    record the source sent. When it cannot be (a record too deep or with a lone
    surrogate is stored as its ``repr``; ``\\u0000``, where the destination's
    JSON cannot hold it, becomes U+FFFD) the letter is a ``problem``: kept
    readable, never replayed.
    """
    kind = rejected.kind
    try:
        payload = to_json(rejected.record)
    except TypeError:
        payload, kind = to_json(repr(rejected.record)), "problem"
    if not limits.holds_nul and b"\\u0000" in payload:
        payload, kind = payload.replace(b"\\u0000", b"\\ufffd"), "problem"
    return payload, kind


@dataclass
class LoadResult:
    """What one batch did to its raw table."""

    inserted: int = 0
    updated: int = 0
    #: Records already stored exactly as they are (re-read overlaps, re-runs): nothing written.
    unchanged: int = 0
    #: Records that repeated a key within the batch: only the last version was written.
    collapsed: int = 0
    rejected: int = 0
    #: Replay only: hashes of the records written (the others were superseded by newer versions).
    written_hashes: set[str] = field(default_factory=set)

    @property
    def loaded(self) -> int:
        """Rows written: inserted plus updated (unchanged and collapsed records are counted apart)."""
        return self.inserted + self.updated


@dataclass
class SchemaChange:
    """A top-level field that is new to a stream, gone from it, or showing a type never seen before."""

    field: str
    change: str
    old_type: str | None
    new_type: str | None


@dataclass
class RunSummary:
    """The closing figures of a run, as written to ``pipeline.execution_log``."""

    status: str
    rows_extracted: int = 0
    rows_loaded: int = 0
    rows_rejected: int = 0
    rows_transformed: int = 0
    rows_unchanged: int = 0
    rows_collapsed: int = 0
    error_message: str | None = None
    error_detail: dict[str, Any] | None = None
    streams: dict[str, Any] = field(default_factory=dict)
    #: Per-model figures of the transforms built in the run.
    models: dict[str, Any] | None = None


@dataclass
class StreamTarget:
    """Everything a writer needs to know about the stream it writes."""

    pipeline: str
    stream: str
    table: str
    extractor: Extractor
    cursor_kind: str | None = None
    #: The watermark committed before the batch being loaded (records above it are new).
    watermark: Watermark | None = None


@dataclass
class DeadLetter:
    """One unresolved dead letter, as replay reads it."""

    id: int
    stream: str
    record: Any
    #: ``record``: a record that failed validation (replayable); ``problem``: a description of
    #: something the extractor could not read (a bad file, a ragged line), not a record.
    kind: str
    created_at: dt.datetime
    error: str = ""


class RawWriter(ABC):
    """Writes one destination's raw tables."""

    #: What the raw payload column (and the dead letters' record column) holds exactly; validation
    #: dead-letters a record beyond it rather than let the destination round or refuse it.
    json_limits: ClassVar[JsonLimits] = JsonLimits()
    #: The most bytes (UTF-8, all key fields together) a record's primary key may take in a stream whose
    #: strategy matches on the key (``keyed`` or ``latest_view``), where the destination indexes it; None:
    #: no limit. Validation dead-letters a longer key (``validation.prepare``) so that one record, not its
    #: whole batch, is what the destination cannot take.
    max_key_bytes: ClassVar[int | None] = None
    #: Why the limit is there, for the dead letter's reason (say what the destination cannot do).
    max_key_bytes_why: ClassVar[str] = ""

    @abstractmethod
    def table_cursor_kind(self, table: str, cursor: str | None) -> str | None:
        """The cursor kind an existing raw table stores, or None."""

    @abstractmethod
    def begin_stream(self, target: StreamTarget, run_id: int) -> None:
        """Before the first batch of a read (a stream-atomic strategy starts its shadow here)."""

    @abstractmethod
    def load_batch(
        self,
        target: StreamTarget,
        run_id: int,
        batch: PreparedBatch,
        watermark: Watermark | None,
        schema_changes: Sequence[SchemaChange],
        known_fields: dict[str, Any],
        state: dict[str, Any] | None = None,
        supersedes: dict[str, tuple[str, int]] | None = None,
    ) -> LoadResult:
        """Write one batch with the stream's strategy, plus its dead letters, watermark, extra state and
        schema trail, in one transaction.

        ``supersedes`` (:attr:`Batch.supersedes`): sources now complete at a version; their rows of
        other versions get ``_deleted_at`` and their open dead letters are resolved, in the same transaction.
        """

    @abstractmethod
    def replay_batch(
        self,
        target: StreamTarget,
        run_id: int,
        batch: PreparedBatch,
        schema_changes: Sequence[SchemaChange],
        known_fields: dict[str, Any],
        resolved: dict[int, str],
        resolved_by: str,
    ) -> LoadResult:
        """Load replayed records by the strategy's replay rule; resolve each dead letter id in ``resolved``
        (id -> record hash) as ``replayed`` when written or ``superseded`` when a newer version is stored."""

    @abstractmethod
    def finish_stream(self, target: StreamTarget, run_id: int, watermark: Watermark | None, complete: bool,
                      state: dict[str, Any] | None = None) -> None:
        """After the last batch: apply (or, for an incomplete read, discard) a stream-atomic strategy's shadow,
        with the deferred watermark and state, in one transaction."""

    @abstractmethod
    def mark_deleted(self, target: StreamTarget, source_keys: Iterable[list[tuple[Any, ...]]]) -> tuple[int, int]:
        """Set ``_deleted_at`` on stored keys absent from ``source_keys`` (and clear it on keys back again).

        Returns (newly deleted, restored) key counts.
        """

    @abstractmethod
    def close(self) -> None:
        """Release connections."""


class BookkeepingStore(ABC):
    """Run log, lock, state, dead letters, alerts and schema trail of one destination."""

    description: str

    # --- schema and run log --------------------------------------------------------

    @abstractmethod
    def migrate(self) -> list[str]:
        """Create or upgrade the bookkeeping schema; return the versions applied now."""

    @abstractmethod
    def start_run(self, pipeline: str, trigger: str) -> int:
        """Open a ``running`` execution-log row and return its id (the run id)."""

    @abstractmethod
    def update_run(self, run_id: int, summary: RunSummary) -> None:
        """Write a running run's figures so far (for `elt status` during long runs)."""

    @abstractmethod
    def finish_run(self, run_id: int, summary: RunSummary) -> None:
        """Close the run's log row with its status and figures."""

    @abstractmethod
    def running_elsewhere(self, pipeline: str, run_id: int) -> dict[str, Any] | None:
        """The other open run of ``pipeline`` (run_id, started_at, hostname, pid), for the skipped-run message."""

    @abstractmethod
    def mark_abandoned(self, pipeline: str, run_id: int) -> int:
        """Close ``running`` rows left by dead processes as failed; call while holding the lock."""

    @abstractmethod
    def close_runs_of(self, pid: int, hostname: str, since: dt.datetime, message: str) -> int:
        """Mark the open (or interrupted) rows of a stopped process failed with ``message`` first."""

    @abstractmethod
    def last_runs(self, pipeline: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        """Recent runs, newest first, as `elt status` shows them."""

    @abstractmethod
    def recent_failures(self) -> list[dict[str, Any]]:
        """Per pipeline, the latest failed or partial run of the last 24 hours not followed by a success."""

    @abstractmethod
    def stream_freshness(self) -> dict[tuple[str, str], dt.datetime]:
        """Per (pipeline, stream): when the stream last finished a read without an error."""

    @abstractmethod
    def run_history(self) -> dict[str, dict[str, Any]]:
        """Per pipeline: ``last_success`` and ``first_run`` start times."""

    @abstractmethod
    def open_runs(self) -> list[dict[str, Any]]:
        """Runs still ``running``: id, pipeline_name, started_at, hostname, pid."""

    # --- lock ------------------------------------------------------------------------

    @abstractmethod
    def try_lock(self, pipeline: str) -> bool:
        """Take the pipeline's run lock; False when another process holds it."""

    @abstractmethod
    def unlock(self, pipeline: str) -> None:
        """Release the pipeline's run lock."""

    # --- state -----------------------------------------------------------------------

    @abstractmethod
    def read_state(self, pipeline: str, stream: str) -> tuple[Watermark | None, dict[str, Any]]:
        """The stream's committed watermark and its known top-level fields (field -> observed types)."""

    @abstractmethod
    def read_values(self, pipeline: str, stream: str) -> dict[str, Any]:
        """The stream's extra state (keys written with ``Batch.state``)."""

    @abstractmethod
    def watermarks(self, pipeline: str | None = None) -> list[dict[str, Any]]:
        """Stored watermarks: pipeline_name, stream_name, value, updated_at, updated_by_run."""

    @abstractmethod
    def reset_watermarks(self, pipeline: str, streams: Sequence[str] = ()) -> int:
        """Forget the watermarks of ``pipeline`` (all streams, or these); returns how many."""

    @abstractmethod
    def record_schema_changes(self, pipeline: str, stream: str, table: str, run_id: int,
                              changes: Sequence[SchemaChange], known_fields: dict[str, Any]) -> None:
        """Write schema changes found outside a batch (fields gone at the end of a read)."""

    # --- dead letters ------------------------------------------------------------------

    @abstractmethod
    def dead_letters(self, pipeline: str | None = None, stream: str | None = None, *, include_resolved: bool = False,
                     limit: int = 50) -> list[dict[str, Any]]:
        """Dead letters, newest first, for `elt dead-letter list`."""

    @abstractmethod
    def dead_letter(self, id: int) -> dict[str, Any] | None:
        """One dead letter in full."""

    @abstractmethod
    def unresolved_dead_letters(self, pipeline: str, streams: Sequence[str] = (), ids: Sequence[int] = ()) -> list[DeadLetter]:
        """Unresolved dead letters of ``pipeline`` (optionally only these streams or ids), oldest first."""

    @abstractmethod
    def old_dead_letters(self, older_than: dt.timedelta) -> list[dict[str, Any]]:
        """Per pipeline and stream: unresolved dead letters older than ``older_than`` (n, oldest)."""

    @abstractmethod
    def resolve_dead_letters(self, ids: Sequence[int], by: str, resolution: str) -> int:
        """Mark dead letters handled; returns how many were open."""

    # --- alerts ------------------------------------------------------------------------

    @abstractmethod
    def open_alerts(self) -> dict[str, dict[str, Any]]:
        """Open alerts by key: id, key, detail, first_seen, last_sent."""

    @abstractmethod
    def open_alert(self, key: str, check: str, subject: str, detail: str) -> dict[str, Any]:
        """Record a new problem; returns its row as :meth:`open_alerts` gives it."""

    @abstractmethod
    def alert_sent(self, alert_id: int, detail: str) -> None:
        """Note that an alert (or its reminder) was delivered."""

    @abstractmethod
    def resolve_alert(self, alert_id: int) -> None:
        """Close an alert whose problem is gone."""

    # --- raw tables, as the checks, `elt stage` and `elt docs` read them ------------------

    @abstractmethod
    def raw_tables(self) -> set[str]:
        """Names of the existing raw tables."""

    @abstractmethod
    def newest_load(self, table: str) -> dt.datetime | None:
        """When the newest row of ``raw.<table>`` was loaded (None: no rows)."""

    @abstractmethod
    def sample_payloads(self, table: str, limit: int = 200) -> list[dict[str, Any]]:
        """The newest ``limit`` payloads of ``raw.<table>``."""

    @abstractmethod
    def raw_columns(self, table: str) -> list[tuple[str, str]]:
        """``(column, type)`` of ``raw.<table>`` in order; empty when it does not exist."""

    @abstractmethod
    def model_refreshes(self, relations: Sequence[str]) -> dict[str, dt.datetime | None]:
        """When each incremental model was last fully refreshed (``pipeline.model_state``; for ``elt check``)."""

    @abstractmethod
    def close(self) -> None:
        """Release connections."""


class Loader:
    """An opened destination: its raw writer and its bookkeeping store."""

    def __init__(self, writer: RawWriter, store: BookkeepingStore, description: str) -> None:
        self.writer = writer
        self.store = store
        self.description = description

    def warehouse(self) -> Warehouse:
        """Where this destination builds the project's SQL models (``elt.transforms.warehouse``)."""
        from elt.errors import ConfigError

        raise ConfigError("this destination cannot build SQL models yet")

    def close(self) -> None:
        self.writer.close()
        self.store.close()
