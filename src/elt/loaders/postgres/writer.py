"""The PostgreSQL raw writer: COPY into a stage, set-based SQL, one transaction per batch.

It owns the data connection. Each batch's rows, dead letters, schema trail and
watermark commit together; what a batch does to its raw table is the stream's
write strategy (``elt.strategies``), run through :class:`_Ops`, the primitives
this destination offers it.
"""

from __future__ import annotations

import operator
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import orjson
import psycopg
from psycopg import sql

from elt import secrets
from elt.errors import ConfigError, LoadError
from elt.limits import JsonLimits
from elt.loaders.base import LoadResult, RawWriter, SchemaChange, StreamTarget, dead_letter_copy
from elt.loaders.postgres.connection import (
    connect,
    ensure_schema,
    lost,
    privilege_hint,
    reconnect,
    widen_send_buffer,
)
from elt.loaders.postgres.raw import GENERATED_VIEW_MARK, KEY_TEXT, KIND_OF_TYPE, RawTable, short_identifier
from elt.loaders.postgres.store import write_schema_changes, write_state
from elt.logs import get_logger
from elt.records import key_bytes_over, key_text, record_hash
from elt.state import Watermark
from elt.validation import PreparedBatch


class _Ops:
    """The strategy primitives (``elt.strategies.RawOps``) on one batch, inside its transaction.

    The batch is staged (COPY into a temporary table) only when a primitive
    needs the stage: a new append batch goes straight into the table.
    """

    def __init__(self, writer: PostgresWriter, cur: psycopg.Cursor[Any], table: RawTable, target: StreamTarget,
                 batch: PreparedBatch | None, params: dict[str, Any]) -> None:
        self.writer = writer
        self.cur = cur
        self.table = table
        self.target = target
        self.batch = batch
        self.params = params
        self._staged = False

    def _stage(self) -> None:
        if self._staged or self.batch is None:
            return
        self.cur.execute(self.table.stage_sql())
        with self.cur.copy(self.table.copy_sql()) as copy:
            for row in self.batch.rows:
                copy.write_row(row)
        self._staged = True

    def _counts(self, statements: list[Any]) -> tuple[int, int]:
        for statement in statements:
            self.cur.execute(statement, self.params)
        counts = self.cur.fetchone()
        assert counts is not None
        return int(counts[0]), int(counts[1])

    def _written_hashes(self, statements: list[Any]) -> tuple[int, int]:
        """Run replay statements that return (hash, inserted) per written row; remember the hashes."""
        for statement in statements:
            self.cur.execute(statement, self.params)
        rows = self.cur.fetchall()
        self.written = {r[0] for r in rows}
        inserted = sum(1 for r in rows if r[1])
        return inserted, len(rows) - inserted

    # --- RawOps -----------------------------------------------------------------------

    def insert_new(self, *, shadow: bool = False) -> tuple[int, int]:
        batch = self.batch
        assert batch is not None
        if not shadow and self.writer._likely_new(self.target, batch, by_key=False) and self._copy_direct():
            return self._noted(len(batch.rows), 0)
        self._stage()
        restore = not shadow and self.writer._has_deleted.get((self.target.pipeline, self.target.stream), False)
        return self._noted(*self._counts(self.table.insert_sql(shadow=shadow, restore_deleted=restore)))

    def merge_by_key(self, *, shadow: bool = False) -> tuple[int, int]:
        batch = self.batch
        assert batch is not None
        if not self.table.keys:
            return self.insert_new(shadow=shadow)
        # Keys never stored can skip the stage: the unique key index turns away the COPY at the
        # first stored key (or a key twice in the batch), and the staged merge then does it all.
        if (not shadow and batch.unique_keys and self.writer._likely_new(self.target, batch, by_key=True)
                and self._copy_direct()):
            return self._noted(len(batch.rows), 0)
        self._stage()
        return self._noted(*self._counts(self.table.merge_sql(shadow=shadow, unique_keys=batch.unique_keys)))

    def _noted(self, inserted: int, updated: int) -> tuple[int, int]:
        """The batch's counts, remembered: a batch that was all new suggests the next one is too."""
        assert self.batch is not None
        self.writer._last_all_new[(self.target.pipeline, self.target.stream)] = (
            updated == 0 and inserted == len(self.batch.rows))
        return inserted, updated

    def merge_newer(self) -> tuple[int, int]:
        self._stage()
        return self._written_hashes(self.table.merge_sql(newer_than_arrival=True))

    def insert_newest(self) -> tuple[int, int]:
        if not self.table.keys:
            return self.insert_new()
        self._stage()
        return self._written_hashes(self.table.insert_newest_sql())

    def create_shadow(self) -> None:
        for statement in self.table.create_shadow_sql():
            self.cur.execute(statement)

    def drop_shadow(self) -> None:
        self.cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self.table.shadow))

    def swap_shadow(self) -> None:
        # The swap table models use too: a rename (readers wait for catalog work only, not for a
        # table-sized copy), carrying over what users added to the raw table (grants, RLS and its
        # policies, their own indexes, views reading it), or refusing, naming what it cannot carry.
        from elt.loaders.postgres.swap import swap

        table = self.table
        swap(self.cur, table.schema, table.name, table.shadow_name, where=f"stream {self.target.stream!r} (replace)",
             own_indexes=set(table.index_names()))
        # elt's own indexes keep the live table's names, so the next run finds them.
        for live, shadow in zip(table.index_names(), table.index_names(table.shadow_name), strict=True):
            self.cur.execute(sql.SQL("ALTER INDEX IF EXISTS {} RENAME TO {}").format(
                sql.Identifier(table.schema, shadow), sql.Identifier(live)))

    def replace_partitions(self) -> None:
        for statement in self.table.replace_partitions_sql():
            self.cur.execute(statement)

    def _copy_direct(self) -> bool:
        """COPY straight into the raw table; False (and nothing written) if a record was already there."""
        assert self.batch is not None
        statement, picks = self.table.direct_copy()
        tail = (self.params["batch_id"], self.params["run_id"])
        pick = operator.itemgetter(*picks)  # C speed: this runs once per row of every append
        cur = self.cur
        cur.execute("SAVEPOINT elt_direct")
        try:
            with cur.copy(statement) as copy:
                write = copy.write_row
                for row in self.batch.rows:
                    write(pick(row) + tail)
        except psycopg.errors.UniqueViolation:
            # Part of the batch is stored already (an overlap re-read, a re-run):
            # the staged path skips exactly those records.
            cur.execute("ROLLBACK TO SAVEPOINT elt_direct")
            return False
        cur.execute("RELEASE SAVEPOINT elt_direct")
        return True


class Jsonb(JsonLimits):
    """PostgreSQL's jsonb: any number digit for digit (numeric), but no U+0000 in a string."""

    name = "PostgreSQL jsonb"
    holds_nul = False


class PostgresWriter(RawWriter):
    """Writes streams into ``raw.*`` of a PostgreSQL database.

    A connection lost while a batch-atomic stream loads (the server restarted)
    is opened again with backoff for ``reconnect_seconds`` and the batch is
    loaded again: the server rolled it back, or, lost during its COMMIT, it
    committed, and loading it again writes nothing twice (every strategy skips
    what is stored). A stream-atomic read (replace, delete_reload) fails
    instead, its shadow never swapped in; the next run reads it again.
    """

    #: How long a connection lost during a load is tried again before the stream fails (seconds).
    reconnect_seconds: ClassVar[float] = 60.0
    json_limits: ClassVar[JsonLimits] = Jsonb()
    # A btree entry holds at most about 2,700 bytes (a third of an 8 kB page, less overhead); past it
    # the INSERT fails and with it the whole batch, every run. Long values are compressed in the index
    # first, so some longer keys fit, but whether one does depends on its content: 2,000 bytes before
    # compression always fits, with room for the key index's _row_seq, and no sane identifier is longer.
    max_key_bytes: ClassVar[int] = 2000
    max_key_bytes_why = "PostgreSQL's btree index on the key holds about 2,700 bytes per entry"

    def __init__(self, url: str) -> None:
        self.url = url
        self._data: psycopg.Connection[Any] | None = None
        self._tables: dict[tuple[str, str], RawTable] = {}
        self._empty_at_start: dict[tuple[str, str], bool] = {}
        #: Streams whose table holds rows marked deleted (a re-sent record must clear the mark).
        self._has_deleted: dict[tuple[str, str], bool] = {}
        #: Streams whose previous batch was all new records (see _likely_new).
        self._last_all_new: dict[tuple[str, str], bool] = {}
        self.log = get_logger()

    @property
    def data(self) -> psycopg.Connection[Any]:
        if self._data is None or lost(self._data):
            self._data = connect(self.url, autocommit=False)
            widen_send_buffer(self._data)
        return self._data

    def _connection_lost(self, target: StreamTarget, exc: Exception, what: str) -> LoadError:
        first = secrets.redact(str(exc)).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        after = ("Nothing of this read was applied (the table is as it was); once the server is back, the next run"
                 " reads it again" if target.extractor.strategy.unit == "stream" else
                 "Batches committed before stay loaded; once the server is back, the next run continues from there")
        return LoadError(
            f"stream {target.stream!r}: lost the connection to the database {secrets.redact(self.url)} ({first});"
            f" {what}. {after}")

    def _read(self, query: sql.Composable | str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of a read-only query, in its own short transaction on the data connection.

        These reads open a stream, so a connection the server ended since the
        last stream (it restarted between two scheduled runs) is opened again
        here, with backoff, rather than failing the stream: nothing was written.
        """
        for attempt in (1, 2):
            conn = self.data
            try:
                rows = conn.execute(query, params).fetchall()  # type: ignore[arg-type]
                conn.commit()
                return rows
            except psycopg.OperationalError as exc:
                if attempt == 2 or not lost(conn, exc):
                    if not lost(conn):
                        conn.rollback()
                    raise
                self._data = reconnect(self.url, autocommit=False, within=self.reconnect_seconds,
                                       what="the start of a stream (reading raw.* tables)")
                widen_send_buffer(self._data)
            except BaseException:
                if not lost(conn):
                    conn.rollback()
                raise
        raise AssertionError("unreachable: the second attempt returns or raises")

    def _scalar(self, query: sql.Composable | str, params: Sequence[Any] = ()) -> Any:
        rows = self._read(query, params)
        return rows[0][0] if rows else None

    # --- raw tables -----------------------------------------------------------------------

    def _existing_columns(self, table: str) -> dict[str, str]:
        return dict(self._read(  # type: ignore[arg-type]
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = 'raw' AND table_name = %s",
            (table,),
        ))

    def table_cursor_kind(self, table: str, cursor: str | None) -> str | None:
        """The cursor kind implied by an existing raw table's column type."""
        if cursor is None:
            return None
        data_type = self._existing_columns(table).get(cursor)
        return KIND_OF_TYPE.get(data_type) if data_type else None

    def begin_stream(self, target: StreamTarget, run_id: int) -> None:
        try:
            self._begin_stream(target, run_id)
        except psycopg.OperationalError as exc:
            if not lost(self._data, exc):
                raise
            raise self._connection_lost(target, exc, "nothing of this stream was read yet") from None

    def _begin_stream(self, target: StreamTarget, run_id: int) -> None:
        key = (target.pipeline, target.stream)
        self._tables.pop(key, None)
        self._last_all_new.pop(key, None)
        strategy = target.extractor.strategy
        exists = bool(self._existing_columns(target.table))
        ident = sql.Identifier("raw", target.table)
        # A new batch may go straight into an empty table (the direct COPY); only insert_new uses it.
        self._empty_at_start[key] = not exists or bool(
            self._scalar(sql.SQL("SELECT NOT EXISTS (SELECT 1 FROM {})").format(ident)))
        self._has_deleted[key] = exists and bool(target.extractor.key_fields) and bool(self._scalar(
            sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE _deleted_at IS NOT NULL)").format(ident)))
        if strategy.unit == "stream":
            # A stream-atomic read needs its table and a fresh shadow before the first batch
            # (a shadow left by a killed run holds an unknown part of the source).
            table = self._raw_table(target)
            self._in_transaction(target, lambda cur: strategy.begin(_Ops(self, cur, table, target, None, {})))

    def _in_transaction(self, target: StreamTarget, work: Any, *, repeatable: bool = False) -> Any:
        """Run ``work`` in one transaction. ``repeatable`` work is run again on a new connection if this one is lost."""
        conn = self.data
        try:
            with conn.cursor() as cur:
                result = work(cur)
            conn.commit()
        except psycopg.Error as exc:
            if lost(conn, exc):
                if not repeatable:
                    raise self._connection_lost(target, exc, "the read in flight was not applied") from None
                self.log.warning("lost the connection to the database; loading the batch again once it is back",
                                 stream=target.stream, database=secrets.redact(self.url),
                                 error=secrets.redact(str(exc)).strip().splitlines()[0] if str(exc).strip() else "")
                try:
                    self._data = reconnect(self.url, autocommit=False, within=self.reconnect_seconds,
                                           what=f"the load of stream {target.stream!r}")
                except LoadError:
                    raise self._connection_lost(
                        target, exc, f"no new connection within {self.reconnect_seconds:g} s, so the batch in flight"
                        " was not written (or, lost during its COMMIT, it was: loading it again writes nothing twice)"
                    ) from None
                widen_send_buffer(self._data)
                return self._in_transaction(target, work)
            conn.rollback()
            raise LoadError(f"stream {target.stream!r}: raw.{target.table}: {secrets.redact(str(exc)).strip()};"
                            f" rolled back, nothing of it was written.{privilege_hint(exc)}") from exc
        except BaseException:
            if not lost(conn):
                conn.rollback()
            raise
        return result

    def _likely_new(self, target: StreamTarget, batch: PreparedBatch, *, by_key: bool) -> bool:
        """Whether a batch is probably absent from the table, so the direct COPY is worth trying.

        A wrong guess costs only the COPY up to the first stored record (rolled
        back to a savepoint). The table empty when the stream began, or the
        stream's previous batch all new (a source that lists new records after
        old ones, as a full read of a growing table does), make a good guess.
        Cursors above the watermark prove the records new, not their keys:
        ``by_key`` (an upsert) does not count on them.
        """
        stream = (target.pipeline, target.stream)
        if self._empty_at_start.get(stream) or self._last_all_new.get(stream):
            return True
        if by_key:
            return False
        mark = target.watermark
        return mark is not None and batch.low_water is not None and batch.low_water > mark.value

    def _raw_table(self, target: StreamTarget) -> RawTable:
        """Create (or check and extend) the raw table before its first rows."""
        key = (target.pipeline, target.stream)
        table = self._tables.get(key)
        if table is not None:
            return table
        table = RawTable.for_stream(target.table, target.extractor, target.cursor_kind)
        existing = self._existing_columns(target.table)
        with self.data.cursor() as cur:
            if existing:
                missing_keys = [k for k in table.keys if k not in existing]
                if missing_keys:
                    self.data.rollback()
                    raise ConfigError(
                        f"stream {target.stream!r}: raw.{target.table} exists without key column(s) {missing_keys};"
                        " the primary_key changed since it was created. Load into a new stream name, or rename the"
                        " old table (ALTER TABLE ... RENAME) so elt creates a new one."
                    )
                if existing.get("_record_hash") == "text":
                    table.hash_type = KEY_TEXT  # a table from before the uuid hash: keep comparing as text
                if "_deleted_at" not in existing:  # tables created before elt had reconciliation
                    cur.execute(sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS _deleted_at timestamptz").format(table.ident))
                for column, col_type, _ in table.data_columns():
                    if column not in existing:
                        cur.execute(sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
                            table.ident, sql.Identifier(column), sql.SQL(col_type)))
                    elif column == table.cursor and existing[column] in KIND_OF_TYPE:
                        # The table decides: keep comparing cursors the way it stores them.
                        table.cursor_type = "timestamptz" if existing[column].startswith("timestamp") else existing[column]
                # A unique index another strategy left (upsert's key index under append_dedup, say) would
                # refuse the second version of a key with a bare constraint error: say what to do instead.
                own = set(table.index_names())
                left = [r[0] for r in cur.execute(
                    "SELECT indexname FROM pg_indexes WHERE schemaname = 'raw' AND tablename = %s AND indexname = ANY(%s)",
                    (target.table, [short_identifier(target.table, s) for s in ("uq_key", "uq_hash")])).fetchall()
                    if r[0] not in own]
                if left:
                    self.data.rollback()
                    raise ConfigError(
                        f"stream {target.stream!r}: raw.{target.table} was loaded with another write strategy and keeps"
                        f" its unique index {left[0]}, which {table.strategy.name} cannot load under. Drop it"
                        f" (DROP INDEX raw.{left[0]}) to keep every version from now on, or load into a new stream name")
            else:
                cur.execute(table.create_sql())
            try:
                for statement in table.index_sql():
                    cur.execute(statement)
            except psycopg.errors.UniqueViolation:
                self.data.rollback()
                raise ConfigError(
                    f"stream {target.stream!r}: raw.{target.table} holds several rows per "
                    f"{', '.join(table.conflict_columns)}, so write_strategy {table.strategy.name} cannot apply to it"
                    " (it was loaded with another strategy). Load into a new stream name, or deduplicate the table first."
                ) from None
            if table.keys and table.strategy.latest_view:
                self._ensure_dedup_view(cur, table)
        self.data.commit()
        self._tables[key] = table
        return table

    def _ensure_dedup_view(self, cur: psycopg.Cursor[Any], table: RawTable) -> None:
        row = cur.execute(
            "SELECT c.relkind, obj_description(c.oid, 'pg_class') FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'stg' AND c.relname = %s",
            (table.name,),
        ).fetchone()
        if row is not None and not (row[0] == "v" and (row[1] or "").startswith(GENERATED_VIEW_MARK)):
            # The user's own stg model has taken this name: it wins.
            return
        ensure_schema(cur, "stg")
        cur.execute("SAVEPOINT dedup_view")
        try:
            for statement in table.dedup_view_sql():
                cur.execute(statement)
        except psycopg.Error as exc:
            cur.execute("ROLLBACK TO SAVEPOINT dedup_view")
            self.log.warning("could not refresh the generated stg view; raw data is unaffected",
                             table=table.name, error=str(exc).strip())
        cur.execute("RELEASE SAVEPOINT dedup_view")

    # --- batches ---------------------------------------------------------------------------

    def _bookkeeping(self, cur: psycopg.Cursor[Any], target: StreamTarget, run_id: int, batch_id: str,
                     batch: PreparedBatch, schema_changes: Sequence[SchemaChange], known_fields: dict[str, Any]) -> None:
        """Dead letters and schema trail of a batch, in its transaction."""
        if batch.rejected:
            self._insert_dead_letters(cur, target, run_id, batch_id, batch)
        if schema_changes:
            write_schema_changes(cur, target.pipeline, target.stream, target.table, run_id, schema_changes, known_fields)

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
        strategy = target.extractor.strategy
        # Until the cursor's kind is known (declared, stored or from an accepted value), the table
        # waits for the first accepted rows: a batch of rejects alone must not fix its cursor as text.
        kind_known = not target.extractor.cursor_field or target.cursor_kind is not None
        table = self._raw_table(target) if batch.rows or kind_known or strategy.unit == "stream" else None
        batch_id = uuid.uuid4().hex
        params = {"batch_id": batch_id, "run_id": run_id}
        result = LoadResult(rejected=len(batch.rejected), collapsed=batch.collapsed)

        def work(cur: psycopg.Cursor[Any]) -> None:
            if batch.rows and table is not None:
                result.inserted, result.updated = strategy.write(_Ops(self, cur, table, target, batch, params))
                result.unchanged = len(batch.rows) - batch.collapsed - result.inserted - result.updated
            if supersedes and table is not None:
                self._supersede(cur, target, table, supersedes, run_id)
            self._bookkeeping(cur, target, run_id, batch_id, batch, schema_changes, known_fields)
            if watermark is not None:
                write_state(cur, target.pipeline, target.stream, "watermark", watermark.to_json(), run_id)
            for key, value in (state or {}).items():
                write_state(cur, target.pipeline, target.stream, key, value, run_id)

        # A batch of a batch-atomic strategy can be loaded again whole: its records, bookkeeping and
        # watermark commit together, and what is stored already is skipped.
        self._in_transaction(target, work, repeatable=strategy.unit == "batch")
        return result

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
        strategy = target.extractor.strategy
        table = self._raw_table(target) if batch.rows else None
        batch_id = uuid.uuid4().hex
        params: dict[str, Any] = {"batch_id": batch_id, "run_id": run_id}
        result = LoadResult(collapsed=batch.collapsed)

        def work(cur: psycopg.Cursor[Any]) -> None:
            if batch.rows and table is not None:
                ops = _Ops(self, cur, table, target, batch, params)
                result.inserted, result.updated = strategy.replay(ops)
                # Primitives that report which records they wrote; the plain insert writes every new one.
                written = getattr(ops, "written", None)
                result.written_hashes = written if written is not None else {str(row[-1]) for row in batch.rows}
            self._bookkeeping(cur, target, run_id, batch_id, batch, schema_changes, known_fields)
            replayed = [i for i, h in resolved.items() if h in result.written_hashes]
            superseded = [i for i in resolved if i not in set(replayed)]
            for ids, resolution in ((replayed, "replayed"), (superseded, "superseded: a newer or identical version"
                                                                          " of this record is already stored")):
                if ids:
                    cur.execute(
                        "UPDATE pipeline.dead_letter SET resolved_at = now(), resolved_by = %s, resolution = %s"
                        " WHERE id = ANY(%s) AND resolved_at IS NULL", (resolved_by, resolution, ids))

        self._in_transaction(target, work)
        return result

    def _supersede(self, cur: psycopg.Cursor[Any], target: StreamTarget, table: RawTable,
                   supersedes: dict[str, tuple[str, int]], run_id: int) -> None:
        """Sources complete at a new version: older versions' rows marked deleted, settled dead letters resolved."""
        id_column, version_column = (sql.Identifier(c) for c in table.sources[:2])
        for source, (version, read_from) in supersedes.items():
            prefix = f"{source}:"
            # Rows the new version of the file no longer has: marked, not removed (raw keeps what arrived).
            cur.execute(sql.SQL(
                "UPDATE {t} SET _deleted_at = now() WHERE _deleted_at IS NULL"
                " AND left({i}, length(%(p)s)) = %(p)s AND {v} IS DISTINCT FROM %(v)s").format(
                    t=table.ident, i=id_column, v=version_column), {"p": prefix, "v": version})
            # Dead letters of earlier runs about the whole file, or about lines this read went through
            # (those still bad were rejected again by this run, as open letters of their own).
            cur.execute(
                "UPDATE pipeline.dead_letter SET resolved_at = now(), resolved_by = 'elt',"
                " resolution = 'the source loaded again' WHERE pipeline_name = %(pl)s AND stream_name = %(st)s"
                " AND resolved_at IS NULL AND run_id IS DISTINCT FROM %(run)s AND CASE"
                # CASE: the casts only run on letters of this file, whose lines are numbers.
                "   WHEN source_record ->> 'file' = %(s)s THEN NOT source_record ? 'row'"
                "     OR (jsonb_typeof(source_record -> 'line') = 'number' AND (source_record ->> 'line')::bigint > %(from)s)"
                "   WHEN left(source_record ->> '_source_id', length(%(p)s)) = %(p)s"
                "     AND substr(source_record ->> '_source_id', length(%(p)s) + 1) ~ '^[0-9]+$'"
                "     THEN substr(source_record ->> '_source_id', length(%(p)s) + 1)::bigint > %(from)s"
                "   ELSE false END",
                {"pl": target.pipeline, "st": target.stream, "s": source, "p": prefix, "run": run_id,
                 "from": read_from})

    def _insert_dead_letters(
        self, cur: psycopg.Cursor[Any], target: StreamTarget, run_id: int, batch_id: str, batch: PreparedBatch
    ) -> None:
        rows = []
        for rejected in batch.rejected:
            payload, kind = dead_letter_copy(rejected, self.json_limits)
            rows.append((
                target.pipeline, target.stream, run_id, batch_id, payload.decode(),
                secrets.redact(rejected.reason),
                orjson.dumps(secrets.redact_value(rejected.detail)).decode() if rejected.detail else None,
                record_hash(payload),
                kind,
            ))
        cur.executemany(
            "INSERT INTO pipeline.dead_letter (pipeline_name, stream_name, run_id, batch_id, source_record,"
            " error_message, error_detail, record_hash, kind) VALUES (%s, %s, %s, %s, %s::jsonb, %s, %s::jsonb, %s, %s)"
            " ON CONFLICT (pipeline_name, stream_name, record_hash) WHERE resolved_at IS NULL DO NOTHING",
            rows,
        )

    def finish_stream(self, target: StreamTarget, run_id: int, watermark: Watermark | None, complete: bool,
                      state: dict[str, Any] | None = None) -> None:
        strategy = target.extractor.strategy

        def work(cur: psycopg.Cursor[Any]) -> None:
            if strategy.unit == "stream":
                strategy.finish(_Ops(self, cur, self._raw_table(target), target, None, {}), complete)
            if complete:
                if watermark is not None:
                    write_state(cur, target.pipeline, target.stream, "watermark", watermark.to_json(), run_id)
                for key, value in (state or {}).items():
                    write_state(cur, target.pipeline, target.stream, key, value, run_id)

        self._in_transaction(target, work)

    # --- deletes ---------------------------------------------------------------------------

    def mark_deleted(self, target: StreamTarget, source_keys: Iterable[list[tuple[Any, ...]]]) -> tuple[int, int]:
        if not self._existing_columns(target.table):
            raise ConfigError(f"stream {target.stream!r}: raw.{target.table} does not exist yet; run the stream first")
        table = self._raw_table(target)  # checks the table and adds _deleted_at to an older one
        keys = [sql.Identifier(k) for k in table.keys]
        staged = [sql.Identifier(f"_k{i}") for i in range(len(table.keys))]
        match = sql.SQL(" AND ").join(sql.SQL("s.{} = t.{}").format(s, k) for s, k in zip(staged, keys, strict=True))

        def work(cur: psycopg.Cursor[Any]) -> tuple[int, int]:
            cur.execute(sql.SQL("CREATE TEMP TABLE elt_source_keys ({}) ON COMMIT DROP").format(
                sql.SQL(", ").join(sql.SQL("{} text").format(s) for s in staged)))
            seen = 0
            fits_an_index = True
            with cur.copy(sql.SQL("COPY elt_source_keys FROM STDIN")) as copy:
                for page in source_keys:
                    for key in page:
                        texts = [key_text(v) for v in key]
                        if fits_an_index and key_bytes_over(texts, self.max_key_bytes) is not None:
                            fits_an_index = False
                        copy.write_row(texts)
                    seen += len(page)
            stored = cur.execute(sql.SQL("SELECT count(*) FROM {}").format(table.ident)).fetchone()
            if seen == 0 and stored and stored[0]:
                # An empty answer is far likelier a wrong query or missing grant than a source emptied.
                raise ConfigError(
                    f"stream {target.stream!r}: the source returned no keys at all; not marking all {stored[0]}"
                    f" rows of raw.{target.table} deleted. Check the stream's table/query and the source's grants"
                )
            if fits_an_index:
                # A key past a btree entry's limit would fail the index, and the reconcile with it, every
                # time (an append stream stores such keys): without the index the anti-joins are hashed.
                cur.execute(sql.SQL("CREATE INDEX ON elt_source_keys ({})").format(sql.SQL(", ").join(staged)))
            cur.execute("ANALYZE elt_source_keys")
            # Every stored version of a vanished key is marked, so the current-state view shows it too.
            deleted = cur.execute(sql.SQL(
                "UPDATE {t} AS t SET _deleted_at = now() WHERE t._deleted_at IS NULL"
                " AND NOT EXISTS (SELECT 1 FROM elt_source_keys AS s WHERE {m})").format(t=table.ident, m=match)).rowcount
            restored = cur.execute(sql.SQL(
                "UPDATE {t} AS t SET _deleted_at = NULL WHERE t._deleted_at IS NOT NULL"
                " AND EXISTS (SELECT 1 FROM elt_source_keys AS s WHERE {m})").format(t=table.ident, m=match)).rowcount
            return deleted, restored

        result: tuple[int, int] = self._in_transaction(target, work)
        return result

    def close(self) -> None:
        if self._data is not None and not self._data.closed:
            self._data.close()
        self._data = None
