"""What a loader is: the one place that writes to a destination.

A loader owns one destination. It writes raw rows with the stream's write
strategy, and keeps the run log, watermarks, schema trail and dead letters in
that same destination, so data and bookkeeping commit together and cannot
disagree. The runner sequences; the loader never decides what runs next.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from elt.extractors.base import Extractor
from elt.state import Watermark
from elt.validation import PreparedBatch


@dataclass
class LoadResult:
    """What one batch did to its raw table."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0

    @property
    def loaded(self) -> int:
        """Records now present in the destination (new, updated or already there unchanged)."""
        return self.inserted + self.updated + self.unchanged


@dataclass
class SchemaChange:
    """A top-level field that is new to a stream, or whose JSON type changed."""

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
    error_message: str | None = None
    error_detail: dict[str, Any] | None = None
    streams: dict[str, Any] = field(default_factory=dict)
    #: Per-model figures of the transforms built in the run.
    models: dict[str, Any] | None = None


@dataclass
class StreamTarget:
    """Everything a loader needs to know about the stream it writes."""

    pipeline: str
    stream: str
    table: str
    extractor: Extractor
    cursor_kind: str | None = None
    #: The watermark committed before the batch being loaded (records above it are new).
    watermark: Watermark | None = None


class Loader(ABC):
    """A destination's writer and bookkeeper."""

    description: str

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
        """The other open run of ``pipeline`` (id, start, host, pid), for the skipped-run message."""

    @abstractmethod
    def mark_abandoned(self, pipeline: str, run_id: int) -> int:
        """Close ``running`` rows left by dead processes as failed; call while holding the lock."""

    @abstractmethod
    def table_cursor_kind(self, table: str, cursor: str | None) -> str | None:
        """The cursor kind an existing raw table stores, or None."""

    @abstractmethod
    def query(self, statement: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[dict[str, Any]]:
        """Read bookkeeping rows as dicts."""

    @abstractmethod
    def execute(self, statement: str, params: Sequence[Any] | dict[str, Any] = ()) -> int:
        """Change bookkeeping rows (autocommit); returns the row count."""

    @abstractmethod
    def try_lock(self, pipeline: str) -> bool:
        """Take the pipeline's run lock; False when another process holds it."""

    @abstractmethod
    def unlock(self, pipeline: str) -> None:
        """Release the pipeline's run lock."""

    @abstractmethod
    def read_state(self, pipeline: str, stream: str) -> tuple[Watermark | None, dict[str, str]]:
        """The stream's committed watermark and its known top-level fields."""

    @abstractmethod
    def read_values(self, pipeline: str, stream: str) -> dict[str, Any]:
        """The stream's extra state (keys written with ``Batch.state``)."""

    @abstractmethod
    def begin_stream(self, target: StreamTarget, run_id: int) -> None:
        """Prepare the stream's raw table (and shadow, for ``replace``)."""

    @abstractmethod
    def load_batch(
        self,
        target: StreamTarget,
        run_id: int,
        batch: PreparedBatch,
        watermark: Watermark | None,
        schema_changes: Sequence[SchemaChange],
        known_fields: dict[str, str],
        resolves: Sequence[int] = (),
        resolved_by: str | None = None,
        state: dict[str, Any] | None = None,
        supersedes: dict[str, tuple[str, int]] | None = None,
    ) -> LoadResult:
        """Write one batch, its dead letters, watermark, extra state and schema trail in one transaction.

        ``supersedes`` (:attr:`Batch.supersedes`): sources now complete at a version; their rows of
        other versions get ``_deleted_at`` and their open dead letters are resolved, in the same transaction.
        """

    @abstractmethod
    def mark_deleted(self, target: StreamTarget, source_keys: Iterable[list[tuple[Any, ...]]]) -> tuple[int, int]:
        """Set ``_deleted_at`` on stored keys absent from ``source_keys`` (and clear it on keys back again).

        Returns (newly deleted, restored) key counts.
        """

    @abstractmethod
    def finish_stream(self, target: StreamTarget, run_id: int, watermark: Watermark | None) -> None:
        """Complete the stream (swap a ``replace`` shadow in; commit a deferred watermark)."""

    @abstractmethod
    def close(self) -> None:
        """Release connections and locks."""
