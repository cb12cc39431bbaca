"""The PostgreSQL (and Supabase) loader: COPY into a stage, set-based SQL, one transaction per batch.

Two connections: one in autocommit for the run log and the pipeline's
advisory lock (so the log survives any failed batch, and the lock dies with
the process), and one for data, where each batch's rows, dead letters,
schema trail and watermark commit together.
"""

from __future__ import annotations

import operator
import os
import socket
import uuid
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from elt import secrets
from elt.errors import ConfigError, LoadError
from elt.extractors.base import WriteStrategy
from elt.loaders.base import Loader, LoadResult, RunSummary, SchemaChange, StreamTarget
from elt.loaders.pg_raw import GENERATED_VIEW_MARK, KIND_OF_TYPE, RawTable
from elt.logs import get_logger
from elt.records import key_text, record_hash, to_json
from elt.state import Watermark
from elt.validation import PreparedBatch

# First key of every advisory lock elt takes ("elt" in ASCII), so they do not
# collide with an application's own advisory locks.
_LOCK_SPACE = 0x656C74
_MIGRATION_LOCK = 0
_SEND_BUFFER = 4 * 1024 * 1024


def migrations_dir() -> Path:
    """The shipped DDL: ``elt/sql`` in an installed wheel, ``sql/`` in a source checkout."""
    packaged = resources.files("elt") / "sql" / "postgres" / "migrations"
    if packaged.is_dir():
        return Path(str(packaged))
    source = Path(__file__).resolve().parents[3] / "sql" / "postgres" / "migrations"
    if source.is_dir():
        return source
    raise ConfigError("elt's SQL files are missing from this installation; reinstall elt")


def connect(url: str, *, autocommit: bool) -> psycopg.Connection[Any]:
    """Open a connection with elt's session settings, or fail with a message that names the fix."""
    try:
        conn = psycopg.connect(url, autocommit=autocommit, application_name="elt", connect_timeout=15)
    except psycopg.OperationalError as exc:
        raise LoadError(
            f"cannot connect to the database {secrets.redact(url)}: {secrets.redact(str(exc)).strip()}\n"
            "Check that the server is running and that ELT_DATABASE_URL (environment or .env) is right."
        ) from None
    # UTC everywhere: timestamps without zone in records mean UTC (see records.parse_timestamp).
    conn.execute("SET TIME ZONE 'UTC'")
    if not autocommit:
        conn.commit()
    return conn


def _widen_send_buffer(conn: psycopg.Connection[Any]) -> None:
    """Ask the OS for a 4 MB send buffer on the data connection (best effort; capped by net.core.wmem_max).

    During a COPY the server drains the socket while this process prepares the
    next rows in another thread; the default buffer (about 200 kB) holds only a
    millisecond or two of the server's work, so each time this process is slow
    to refill it the server sits idle. A larger buffer keeps it busy.
    """
    try:
        with socket.socket(fileno=os.dup(conn.fileno())) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SEND_BUFFER)
    except OSError:
        pass  # a socket type or platform that refuses: the default buffer still works


class PostgresLoader(Loader):
    """Writes streams into ``raw.*`` and keeps ``pipeline.*`` in the same database."""

    def __init__(self, url: str, description: str | None = None) -> None:
        self.url = url
        self.description = description or secrets.redact(url)
        self._meta = connect(url, autocommit=True)
        self._data: psycopg.Connection[Any] | None = None
        self._tables: dict[tuple[str, str], RawTable] = {}
        self._empty_at_start: dict[tuple[str, str], bool] = {}
        self.log = get_logger()

    @property
    def data(self) -> psycopg.Connection[Any]:
        if self._data is None:
            self._data = connect(self.url, autocommit=False)
            _widen_send_buffer(self._data)
        return self._data

    # --- migrations -------------------------------------------------------------

    def migrate(self) -> list[str]:
        applied: list[str] = []
        files = sorted(migrations_dir().glob("*.sql"))
        with psycopg.connect(self.url, autocommit=False, application_name="elt-migrate") as conn:
            # Serialise concurrent first runs: only one applies each migration.
            conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_LOCK_SPACE, _MIGRATION_LOCK))
            conn.execute("CREATE SCHEMA IF NOT EXISTS pipeline")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS pipeline.schema_migrations ("
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {row[0] for row in conn.execute("SELECT version FROM pipeline.schema_migrations")}
            for path in files:
                version = path.stem
                if version in done:
                    continue
                conn.execute(path.read_text(encoding="utf-8"))
                conn.execute("INSERT INTO pipeline.schema_migrations (version) VALUES (%s)", (version,))
                applied.append(version)
            conn.commit()
        return applied

    # --- run log and lock ---------------------------------------------------------

    def start_run(self, pipeline: str, trigger: str) -> int:
        row = self._meta.execute(
            "INSERT INTO pipeline.execution_log (pipeline_name, trigger, hostname, pid)"
            " VALUES (%s, %s, %s, %s) RETURNING id",
            (pipeline, trigger, socket.gethostname(), os.getpid()),
        ).fetchone()
        assert row is not None
        return int(row[0])

    def update_run(self, run_id: int, summary: RunSummary) -> None:
        """Write the running figures so `elt status` shows progress of a long run."""
        self._meta.execute(
            "UPDATE pipeline.execution_log SET rows_extracted = %s, rows_loaded = %s, rows_rejected = %s,"
            " streams = %s WHERE id = %s AND status = 'running'",
            (summary.rows_extracted, summary.rows_loaded, summary.rows_rejected, Jsonb(summary.streams), run_id),
        )

    def finish_run(self, run_id: int, summary: RunSummary) -> None:
        self._meta.execute(
            "UPDATE pipeline.execution_log SET completed_at = clock_timestamp(), status = %s,"
            " rows_extracted = %s, rows_loaded = %s, rows_rejected = %s, rows_transformed = %s,"
            " error_message = %s, error_detail = %s, streams = %s, models = %s WHERE id = %s",
            (
                summary.status, summary.rows_extracted, summary.rows_loaded, summary.rows_rejected,
                summary.rows_transformed,
                secrets.redact(summary.error_message) if summary.error_message else None,
                Jsonb(secrets.redact_value(summary.error_detail)) if summary.error_detail else None,
                Jsonb(summary.streams),
                Jsonb(secrets.redact_value(summary.models)) if summary.models is not None else None,
                run_id,
            ),
        )

    def try_lock(self, pipeline: str) -> bool:
        row = self._meta.execute(
            "SELECT pg_try_advisory_lock(%s, hashtext(%s))", (_LOCK_SPACE, f"pipeline:{pipeline}")
        ).fetchone()
        return bool(row and row[0])

    def unlock(self, pipeline: str) -> None:
        self._meta.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (_LOCK_SPACE, f"pipeline:{pipeline}"))

    def running_elsewhere(self, pipeline: str, run_id: int) -> dict[str, Any] | None:
        """The other ``running`` row of ``pipeline`` (for the skipped-run message)."""
        row = self._meta.execute(
            "SELECT id, started_at, hostname, pid FROM pipeline.execution_log"
            " WHERE pipeline_name = %s AND status = 'running' AND id <> %s ORDER BY id DESC LIMIT 1",
            (pipeline, run_id),
        ).fetchone()
        if row is None:
            return None
        return {"run_id": row[0], "started_at": row[1], "hostname": row[2], "pid": row[3]}

    def mark_abandoned(self, pipeline: str, run_id: int) -> int:
        """Close ``running`` rows of ``pipeline`` left by dead processes. Call holding the lock."""
        cur = self._meta.execute(
            "UPDATE pipeline.execution_log SET status = 'failed', completed_at = clock_timestamp(),"
            " error_message = 'abandoned: the process running it stopped without closing its log row"
            " (killed, crashed or lost its connection); rows it committed stay loaded'"
            " WHERE pipeline_name = %s AND status = 'running' AND id <> %s",
            (pipeline, run_id),
        )
        return cur.rowcount

    # --- state ------------------------------------------------------------------------

    def read_state(self, pipeline: str, stream: str) -> tuple[Watermark | None, dict[str, str]]:
        rows = self._meta.execute(
            "SELECT key, value FROM pipeline.state WHERE pipeline_name = %s AND stream_name = %s"
            " AND key IN ('watermark', 'schema')",
            (pipeline, stream),
        ).fetchall()
        values = dict(rows)
        return Watermark.from_json(values.get("watermark")), dict(values.get("schema") or {})

    def read_values(self, pipeline: str, stream: str) -> dict[str, Any]:
        rows = self._meta.execute(
            "SELECT key, value FROM pipeline.state WHERE pipeline_name = %s AND stream_name = %s"
            " AND key NOT IN ('watermark', 'schema')",
            (pipeline, stream),
        ).fetchall()
        return dict(rows)

    def _write_state(self, cur: psycopg.Cursor[Any], pipeline: str, stream: str, key: str, value: Any, run_id: int) -> None:
        cur.execute(
            "INSERT INTO pipeline.state (pipeline_name, stream_name, key, value, updated_by_run)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (pipeline_name, stream_name, key)"
            " DO UPDATE SET value = EXCLUDED.value, updated_at = now(), updated_by_run = EXCLUDED.updated_by_run",
            (pipeline, stream, key, Jsonb(value), run_id),
        )

    # --- raw tables -----------------------------------------------------------------------

    def _existing_columns(self, table: str) -> dict[str, str]:
        rows = self._meta.execute(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = 'raw' AND table_name = %s",
            (table,),
        ).fetchall()
        return dict(rows)

    def table_cursor_kind(self, table: str, cursor: str | None) -> str | None:
        """The cursor kind implied by an existing raw table's column type."""
        if cursor is None:
            return None
        data_type = self._existing_columns(table).get(cursor)
        return KIND_OF_TYPE.get(data_type) if data_type else None

    def begin_stream(self, target: StreamTarget, run_id: int) -> None:
        key = (target.pipeline, target.stream)
        self._tables.pop(key, None)
        empty = False
        # Only the append strategies use this (to try the direct COPY first).
        if target.extractor.strategy in (WriteStrategy.APPEND, WriteStrategy.APPEND_DEDUP):
            empty = True
            if self._existing_columns(target.table):
                row = self._meta.execute(sql.SQL("SELECT NOT EXISTS (SELECT 1 FROM {})").format(
                    sql.Identifier("raw", target.table))).fetchone()
                empty = bool(row and row[0])
        self._empty_at_start[key] = empty

    def _likely_new(self, target: StreamTarget, table: RawTable, batch: PreparedBatch) -> bool:
        """Whether a batch is probably absent from the table, so the direct COPY is worth trying."""
        if table.strategy not in (WriteStrategy.APPEND, WriteStrategy.APPEND_DEDUP):
            return False
        if self._empty_at_start.get((target.pipeline, target.stream)):
            return True
        mark = target.watermark
        return mark is not None and batch.low_water is not None and batch.low_water > mark.value

    def _raw_table(self, target: StreamTarget, run_id: int) -> RawTable:
        """Create (or check and extend) the raw table on the stream's first batch."""
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
                    raise ConfigError(
                        f"stream {target.stream!r}: raw.{target.table} exists without key column(s) {missing_keys};"
                        " the primary_key changed since it was created. Load into a new stream name, or rename the"
                        " old table (ALTER TABLE ... RENAME) so elt creates a new one."
                    )
                if "_deleted_at" not in existing:  # tables created before elt had reconciliation
                    cur.execute(sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS _deleted_at timestamptz").format(table.ident))
                for column, col_type, _ in table.data_columns():
                    if column not in existing:
                        cur.execute(sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
                            table.ident, sql.Identifier(column), sql.SQL(col_type)))
                    elif column == table.cursor and existing[column] in KIND_OF_TYPE:
                        # The table decides: keep comparing cursors the way it stores them.
                        table.cursor_type = "timestamptz" if existing[column].startswith("timestamp") else existing[column]
            else:
                cur.execute(table.create_sql())
            try:
                for statement in table.index_sql():
                    cur.execute(statement)
            except psycopg.errors.UniqueViolation:
                self.data.rollback()
                raise ConfigError(
                    f"stream {target.stream!r}: raw.{target.table} holds several rows per "
                    f"{', '.join(table.conflict_columns)}, so write_strategy {table.strategy.value} cannot apply to it"
                    " (it was loaded with another strategy). Load into a new stream name, or deduplicate the table first."
                ) from None
            if table.strategy is WriteStrategy.APPEND_DEDUP:
                self._ensure_dedup_view(cur, table)
            if table.strategy is WriteStrategy.REPLACE:
                # The shadow is rebuilt from nothing each run: a shadow left by a
                # killed run holds an unknown part of the source.
                cur.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(table.shadow))
                cur.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS INCLUDING IDENTITY)").format(
                    table.shadow, table.ident))
                for statement in table.index_sql(table.shadow, table.shadow_name):
                    cur.execute(statement)
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
        cur.execute("CREATE SCHEMA IF NOT EXISTS stg")
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
        table = self._raw_table(target, run_id)
        batch_id = uuid.uuid4().hex
        params = {"batch_id": batch_id, "run_id": run_id}
        result = LoadResult(rejected=len(batch.rejected))
        conn = self.data
        try:
            with conn.cursor() as cur:
                if batch.rows and self._likely_new(target, table, batch) and self._copy_direct(cur, table, batch, params):
                    result.inserted = len(batch.rows)
                elif batch.rows:
                    result.inserted, result.updated = self._copy_staged(cur, table, batch, params)
                    result.unchanged = len(batch.rows) - result.inserted - result.updated
                if supersedes:
                    self._supersede(cur, target, table, supersedes, run_id)
                if batch.rejected:
                    self._insert_dead_letters(cur, target, run_id, batch_id, batch)
                if schema_changes:
                    cur.executemany(
                        "INSERT INTO pipeline.schema_changes (pipeline_name, stream_name, table_name, field_name,"
                        " change, old_type, new_type, run_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                        [(target.pipeline, target.stream, f"raw.{table.name}", c.field, c.change, c.old_type,
                          c.new_type, run_id) for c in schema_changes],
                    )
                    self._write_state(cur, target.pipeline, target.stream, "schema", known_fields, run_id)
                if watermark is not None:
                    self._write_state(cur, target.pipeline, target.stream, "watermark", watermark.to_json(), run_id)
                for key, value in (state or {}).items():
                    self._write_state(cur, target.pipeline, target.stream, key, value, run_id)
                if resolves:
                    cur.execute(
                        "UPDATE pipeline.dead_letter SET resolved_at = now(), resolved_by = %s, resolution = 'replayed'"
                        " WHERE id = ANY(%s) AND resolved_at IS NULL",
                        (resolved_by, list(resolves)),
                    )
            conn.commit()
        except psycopg.Error as exc:
            conn.rollback()
            raise LoadError(
                f"stream {target.stream!r}: the batch into raw.{table.name} was rolled back, nothing of it was"
                f" written: {secrets.redact(str(exc)).strip()}"
            ) from exc
        return result

    def _copy_direct(self, cur: psycopg.Cursor[Any], table: RawTable, batch: PreparedBatch, params: dict[str, Any]) -> bool:
        """COPY straight into the raw table; False (and nothing written) if a record was already there."""
        statement, picks = table.direct_copy()
        tail = (params["batch_id"], params["run_id"])
        pick = operator.itemgetter(*picks)  # C speed: this runs once per row of every append
        cur.execute("SAVEPOINT elt_direct")
        try:
            with cur.copy(statement) as copy:
                write = copy.write_row
                for row in batch.rows:
                    write(pick(row) + tail)
        except psycopg.errors.UniqueViolation:
            # Part of the batch is stored already (an overlap re-read, a re-run):
            # the staged path skips exactly those records.
            cur.execute("ROLLBACK TO SAVEPOINT elt_direct")
            return False
        cur.execute("RELEASE SAVEPOINT elt_direct")
        return True

    def _copy_staged(
        self, cur: psycopg.Cursor[Any], table: RawTable, batch: PreparedBatch, params: dict[str, Any]
    ) -> tuple[int, int]:
        """COPY into a temporary stage, then one INSERT ... SELECT with the strategy's conflict rule."""
        cur.execute(table.stage_sql())
        with cur.copy(table.copy_sql()) as copy:
            for row in batch.rows:
                copy.write_row(row)
        # Only a keyed conflict rule cares whether a key repeats within the batch.
        unique_keys = table.conflict_columns == table.keys and batch.unique_keys
        into_shadow = table.strategy is WriteStrategy.REPLACE
        for statement in table.write_sql(into_shadow=into_shadow, unique_keys=unique_keys):
            cur.execute(statement, params)
        counts = cur.fetchone()
        assert counts is not None
        return int(counts[0]), int(counts[1])

    def _supersede(self, cur: psycopg.Cursor[Any], target: StreamTarget, table: RawTable,
                   supersedes: dict[str, tuple[str, int]], run_id: int) -> None:
        """Sources complete at a new version: older versions' rows deleted, settled dead letters resolved (issue 14)."""
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
            try:
                payload = to_json(rejected.record)
            except TypeError:
                payload = to_json(repr(rejected.record))
            rows.append((
                target.pipeline, target.stream, run_id, batch_id,
                # jsonb cannot hold \u0000; keep the rest of the record readable.
                payload.replace(b"\\u0000", b"\\ufffd").decode(),
                secrets.redact(rejected.reason),
                orjson.dumps(secrets.redact_value(rejected.detail)).decode() if rejected.detail else None,
                record_hash(payload),
            ))
        cur.executemany(
            "INSERT INTO pipeline.dead_letter (pipeline_name, stream_name, run_id, batch_id, source_record,"
            " error_message, error_detail, record_hash) VALUES (%s, %s, %s, %s, %s::jsonb, %s, %s::jsonb, %s)"
            " ON CONFLICT (pipeline_name, stream_name, record_hash) WHERE resolved_at IS NULL DO NOTHING",
            rows,
        )

    def mark_deleted(self, target: StreamTarget, source_keys: Iterable[list[tuple[Any, ...]]]) -> tuple[int, int]:
        if not self._existing_columns(target.table):
            raise ConfigError(f"stream {target.stream!r}: raw.{target.table} does not exist yet; run the stream first")
        table = self._raw_table(target, 0)  # checks the table and adds _deleted_at to an older one
        keys = [sql.Identifier(k) for k in table.keys]
        staged = [sql.Identifier(f"_k{i}") for i in range(len(table.keys))]
        match = sql.SQL(" AND ").join(sql.SQL("s.{} = t.{}").format(s, k) for s, k in zip(staged, keys, strict=True))
        conn = self.data
        try:
            with conn.cursor() as cur:
                cur.execute(sql.SQL("CREATE TEMP TABLE elt_source_keys ({}) ON COMMIT DROP").format(
                    sql.SQL(", ").join(sql.SQL("{} text").format(s) for s in staged)))
                seen = 0
                with cur.copy(sql.SQL("COPY elt_source_keys FROM STDIN")) as copy:
                    for page in source_keys:
                        for key in page:
                            copy.write_row([key_text(v) for v in key])
                        seen += len(page)
                stored = cur.execute(sql.SQL("SELECT count(*) FROM {}").format(table.ident)).fetchone()
                if seen == 0 and stored and stored[0]:
                    # An empty answer is far likelier a wrong query or missing grant than a source emptied.
                    raise ConfigError(
                        f"stream {target.stream!r}: the source returned no keys at all; not marking all {stored[0]}"
                        f" rows of raw.{target.table} deleted. Check the stream's table/query and the source's grants"
                    )
                cur.execute(sql.SQL("CREATE INDEX ON elt_source_keys ({})").format(sql.SQL(", ").join(staged)))
                cur.execute("ANALYZE elt_source_keys")
                # Every stored version of a vanished key is marked, so the current-state view shows it too.
                deleted = cur.execute(sql.SQL(
                    "UPDATE {t} AS t SET _deleted_at = now() WHERE t._deleted_at IS NULL"
                    " AND NOT EXISTS (SELECT 1 FROM elt_source_keys AS s WHERE {m})").format(t=table.ident, m=match)).rowcount
                restored = cur.execute(sql.SQL(
                    "UPDATE {t} AS t SET _deleted_at = NULL WHERE t._deleted_at IS NOT NULL"
                    " AND EXISTS (SELECT 1 FROM elt_source_keys AS s WHERE {m})").format(t=table.ident, m=match)).rowcount
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        return deleted, restored

    def finish_stream(self, target: StreamTarget, run_id: int, watermark: Watermark | None) -> None:
        conn = self.data
        try:
            with conn.cursor() as cur:
                if target.extractor.strategy is WriteStrategy.REPLACE:
                    # Also when the source returned nothing (no batch created the
                    # shadow yet): a full refresh of an empty source empties the table.
                    for statement in self._raw_table(target, run_id).swap_sql():
                        cur.execute(statement)
                if watermark is not None:
                    self._write_state(cur, target.pipeline, target.stream, "watermark", watermark.to_json(), run_id)
            conn.commit()
        except psycopg.Error as exc:
            conn.rollback()
            raise LoadError(f"stream {target.stream!r}: finishing raw.{target.table} failed and was rolled back:"
                            f" {secrets.redact(str(exc)).strip()}") from exc

    # --- reading the bookkeeping (status, dead letters, state) ----------------------

    def query(self, statement: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[dict[str, Any]]:
        cur = self._meta.cursor(row_factory=dict_row)
        return cur.execute(statement, params).fetchall()  # type: ignore[arg-type]

    def execute(self, statement: str, params: Sequence[Any] | dict[str, Any] = ()) -> int:
        return self._meta.execute(statement, params).rowcount  # type: ignore[arg-type]

    def close(self) -> None:
        for conn in (self._data, self._meta):
            if conn is not None and not conn.closed:
                conn.close()
        self._data = None
