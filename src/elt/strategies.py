"""Write strategies: what each may do, and the steps it takes, in one object per strategy.

A strategy is found by name (``write_strategy = "upsert"``) and declares its
rules: whether it accepts an incremental cursor, when the watermark may move,
whether and how a dead letter may be replayed into it, and its unit of
atomicity. Pipelines are checked against these declarations when they are
declared, so an unsafe combination (an incremental slice swapped in as a whole
table) is refused with the fix instead of discovered at 2am.

The steps (:meth:`WriteStrategy.begin`, :meth:`write`, :meth:`finish`,
:meth:`replay`) are written against :class:`RawOps`, the few primitives every
destination implements (dbt's materialisations and adapters are the model):
the strategy decides *what* happens to a batch, the destination *how* in its
own SQL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Protocol

from elt.errors import ConfigError

if TYPE_CHECKING:
    from elt.extractors.base import Extractor


class RawOps(Protocol):
    """The primitives a destination offers on one stream's raw table (inside the batch's transaction).

    Each write primitive takes the batch's staged rows and returns ``(inserted, updated)``.
    """

    def insert_new(self, *, shadow: bool = False) -> tuple[int, int]:
        """Insert rows whose exact record (``_record_hash``) is not stored yet; clear ``_deleted_at`` of keys back again."""

    def merge_by_key(self, *, shadow: bool = False) -> tuple[int, int]:
        """Insert or update by primary key (the batch's last version of a key wins; unchanged rows untouched).

        A table without a primary key falls back to :meth:`insert_new`.
        """

    def merge_newer(self) -> tuple[int, int]:
        """Replay: write a row by key only where the stored version is provably older (a smaller cursor)."""

    def insert_newest(self) -> tuple[int, int]:
        """Replay into a history table: insert only rows every stored version of the key is provably older than.

        A table without a primary key falls back to :meth:`insert_new`.
        """

    def create_shadow(self) -> None:
        """Start an empty shadow of the raw table for this read (dropping any a killed run left)."""

    def drop_shadow(self) -> None:
        """Discard the shadow: the read is not applied."""

    def swap_shadow(self) -> None:
        """Make the shadow's rows the table's rows, atomically."""

    def replace_partitions(self) -> None:
        """Replace every partition the shadow holds with the shadow's rows for it, atomically."""


class WriteStrategy:
    """Base of the five strategies. Subclasses declare their rules; ``get(name)`` finds one."""

    name: ClassVar[str]
    #: What a batch does, for the README table and the docs.
    summary: ClassVar[str]
    #: Whether an incremental cursor (a ``since`` slice of the source) may feed it.
    accepts_cursor: ClassVar[bool] = True
    #: Unit of atomicity: ``batch`` (each batch commits on its own) or ``stream`` (batches
    #: collect in a shadow that is applied whole only when the read completes).
    unit: ClassVar[str] = "batch"
    #: Rows are unique per primary key in the raw table (conflicts resolve on the key).
    keyed: ClassVar[bool] = False
    needs_key: ClassVar[bool] = False
    needs_partition: ClassVar[bool] = False
    #: The destination keeps a generated ``stg`` view of the latest version per key.
    latest_view: ClassVar[bool] = False
    #: How a dead letter is loaded by `elt dead-letter replay`, in words (README table).
    replay_rule: ClassVar[str]
    #: What an incomplete read left as it was, for the run's message.
    kept_when_incomplete: ClassVar[str] = ""
    #: Whether a read with rejected records is applied. A batch strategy loads the good records and
    #: keeps the old versions of the rejected ones; a swap would drop them, so it swaps only for a
    #: stream with max_bad_ratio > 0 and at least one accepted record (see Runner._run_stream).
    applies_with_rejects: ClassVar[bool] = True

    # Kept for code that reads ``strategy.value`` (the enum this class replaced).
    @property
    def value(self) -> str:
        return self.name

    def __str__(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"<write strategy {self.name}>"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            return other == self.name
        return isinstance(other, WriteStrategy) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    # --- declaration checks ------------------------------------------------------

    def check(self, extractor: Extractor) -> None:
        """Refuse a stream this strategy cannot load safely, naming the stream and the fix."""
        label = f"stream {extractor.name!r}"
        if self.needs_key and not extractor.key_fields:
            raise ConfigError(f"{label}: write_strategy {self.name} needs a primary_key")
        if self.needs_partition and not extractor.partition_by:
            raise ConfigError(f"{label}: write_strategy {self.name} needs partition_by (the field naming the partition)")
        if extractor.cursor_field and not self.accepts_cursor:
            raise ConfigError(
                f"{label}: write_strategy {self.name} replaces what it loads {self._replaces}, so an incremental"
                f" cursor ({extractor.cursor_field!r}) would swap in only the slice read since the last run."
                " Remove the cursor (read the whole source each run), or use upsert or append_dedup to load"
                " incrementally"
            )

    _replaces = ""

    # --- steps -------------------------------------------------------------------

    @property
    def watermark_per_batch(self) -> bool:
        """Whether a batch's commit may carry the watermark (only when each batch lands for good)."""
        return self.accepts_cursor and self.unit == "batch"

    def begin(self, ops: RawOps) -> None:
        """Before the first batch of a read."""
        if self.unit == "stream":
            ops.create_shadow()

    def write(self, ops: RawOps) -> tuple[int, int]:
        """Apply one staged batch; return (inserted, updated)."""
        raise NotImplementedError

    def finish(self, ops: RawOps, complete: bool) -> None:
        """After the last batch: apply a stream-atomic read only when it is known complete."""

    def replay(self, ops: RawOps) -> tuple[int, int]:
        """Load replayed dead letters (staged) without undoing newer data."""
        raise ConfigError(self.replay_refusal or f"write_strategy {self.name} cannot replay")

    #: Why replay is refused (None: it is allowed).
    replay_refusal: ClassVar[str | None] = None

    def empty_read_problem(self, extractor: Extractor) -> str | None:
        """Why a read that returned no records must not be applied (None: it may)."""
        return None


class Append(WriteStrategy):
    name = "append"
    summary = "insert every record (a record already stored byte for byte is not stored twice)"
    replay_rule = "inserts the record"

    def write(self, ops: RawOps) -> tuple[int, int]:
        return ops.insert_new()

    def replay(self, ops: RawOps) -> tuple[int, int]:
        return ops.insert_new()


class AppendDedup(Append):
    name = "append_dedup"
    summary = "insert every version; a generated stg view keeps the latest per key"
    needs_key = True
    latest_view = True
    replay_rule = ("inserts the record only where every stored version of its key has a smaller cursor (or none is"
                   " stored): an older version never becomes the current one")

    def replay(self, ops: RawOps) -> tuple[int, int]:
        return ops.insert_newest()


class Upsert(WriteStrategy):
    name = "upsert"
    summary = "insert or update by primary key, skipping unchanged rows"
    keyed = True
    needs_key = True
    replay_rule = ("writes the record only where the stored version of its key has a smaller cursor (or none is"
                   " stored)")

    def write(self, ops: RawOps) -> tuple[int, int]:
        return ops.merge_by_key()

    def replay(self, ops: RawOps) -> tuple[int, int]:
        return ops.merge_newer()


class DeleteReload(WriteStrategy):
    name = "delete_reload"
    summary = ("replace each partition the read holds, whole: batches collect in a shadow that replaces those"
               " partitions in one transaction when the read completes")
    accepts_cursor = False
    unit = "stream"
    needs_partition = True
    _replaces = "(every partition the read touches)"
    kept_when_incomplete = "; the partitions it read were not replaced"
    # A partition swapped in without its rejected records would drop their stored versions.
    applies_with_rejects = False
    replay_rule = ("adds the record to its partition, unless a newer version of its key is stored (streams with a"
                   " primary_key); nothing else is deleted")

    def write(self, ops: RawOps) -> tuple[int, int]:
        return ops.insert_new(shadow=True)

    def finish(self, ops: RawOps, complete: bool) -> None:
        if complete:
            ops.replace_partitions()
        else:
            ops.drop_shadow()

    def replay(self, ops: RawOps) -> tuple[int, int]:
        return ops.insert_newest()


class Replace(WriteStrategy):
    name = "replace"
    summary = "build a shadow table from the whole read, swap it in when the read completes"
    accepts_cursor = False
    unit = "stream"
    _replaces = "(the whole table)"
    kept_when_incomplete = "; the replace table was kept as it was"
    applies_with_rejects = False
    replay_rule = "refused: the next run reloads the whole source"
    replay_refusal = ("uses replace: its next run reloads the whole source, so replay does not apply; fix the cause,"
                      " run the pipeline, then `elt dead-letter resolve` these records")

    keyed = True  # on its primary key when it has one, else on the record hash

    def write(self, ops: RawOps) -> tuple[int, int]:
        return ops.merge_by_key(shadow=True)

    def empty_read_problem(self, extractor: Extractor) -> str | None:
        # An empty answer is far likelier a broken query, filter or grant than a source emptied.
        if extractor.allow_empty:
            return None
        return (f"stream {extractor.name!r}: the read returned no records, so the replace table was kept as it was"
                " (an empty answer is likelier a broken source than an empty one). If the source really is empty,"
                " set allow_empty = True on the stream")

    def finish(self, ops: RawOps, complete: bool) -> None:
        if complete:
            ops.swap_shadow()
        else:
            ops.drop_shadow()


STRATEGIES: dict[str, WriteStrategy] = {s.name: s for s in (Append(), AppendDedup(), Upsert(), DeleteReload(), Replace())}


def get(name: str | WriteStrategy) -> WriteStrategy:
    """The strategy called ``name``; a ``ValueError`` listing the valid names otherwise."""
    if isinstance(name, WriteStrategy):
        return name
    try:
        return STRATEGIES[str(name)]
    except KeyError:
        raise ValueError(f"write_strategy {name!r} is not one of {', '.join(STRATEGIES)}") from None
