"""The PostgreSQL bookkeeping store: ``pipeline.*`` (run log, lock, state, dead letters, alerts, schema trail).

One connection in autocommit: the run log survives any failed batch, and the
pipeline's advisory lock dies with the process. Every query elt runs on its
own bookkeeping is here, behind a typed method. A connection lost during a
run is opened again (with backoff, for ``reconnect_seconds``) and the
pipeline locks it held are taken again, so the run can still close its log row.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from collections.abc import Sequence
from typing import Any, ClassVar

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from elt import secrets
from elt.errors import LoadError
from elt.loaders.base import BookkeepingStore, DeadLetter, RunSummary, SchemaChange
from elt.loaders.postgres import monitoring
from elt.loaders.postgres.connection import LOCK_SPACE, MIGRATION_LOCK, connect, ensure_schema, lost, migrations_dir, reconnect
from elt.state import Watermark

#: State keys the framework itself keeps per stream; everything else is the extractor's (Batch.state).
_OWN_KEYS = ("watermark", "schema")


def write_state(cur: psycopg.Cursor[Any], pipeline: str, stream: str, key: str, value: Any, run_id: int) -> None:
    """Upsert one state value in the caller's transaction (the writer uses it inside a batch)."""
    cur.execute(
        "INSERT INTO pipeline.state (pipeline_name, stream_name, key, value, updated_by_run)"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (pipeline_name, stream_name, key)"
        " DO UPDATE SET value = EXCLUDED.value, updated_at = now(), updated_by_run = EXCLUDED.updated_by_run",
        (pipeline, stream, key, Jsonb(value), run_id),
    )


def write_schema_changes(cur: psycopg.Cursor[Any], pipeline: str, stream: str, table: str, run_id: int,
                         changes: Sequence[SchemaChange], known_fields: dict[str, Any]) -> None:
    """Record schema changes and the stream's new field types in the caller's transaction."""
    cur.executemany(
        "INSERT INTO pipeline.schema_changes (pipeline_name, stream_name, table_name, field_name,"
        " change, old_type, new_type, run_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
        [(pipeline, stream, f"raw.{table}", c.field, c.change, c.old_type, c.new_type, run_id) for c in changes],
    )
    write_state(cur, pipeline, stream, "schema", known_fields, run_id)


class PostgresStore(BookkeepingStore):
    """``pipeline.*`` in a PostgreSQL database."""

    #: How long a connection lost during a run is tried again before the store gives up (seconds).
    reconnect_seconds: ClassVar[float] = 60.0

    def __init__(self, url: str, description: str) -> None:
        self.url = url
        self.description = description
        self._conn = connect(url, autocommit=True)
        #: The pipeline locks this session holds: a new session must take them again.
        self._locks: set[str] = set()

    def _execute(self, query: Any, params: Sequence[Any] | dict[str, Any] = (), *,
                 rows: bool = False) -> psycopg.Cursor[Any]:
        """Run one autocommit statement; if the connection was lost, connect again and run it once more.

        Every statement here is safe to repeat: updates of the log row set the
        same values, the lock is taken again by name. (A ``start_run`` whose
        answer was lost may leave one extra log row; the next run closes it
        as abandoned.)
        """
        try:
            return self._conn.cursor(row_factory=dict_row if rows else None).execute(query, params)  # type: ignore[arg-type]
        except psycopg.OperationalError as exc:
            if not lost(self._conn, exc):
                raise
        self._reconnect()
        return self._conn.cursor(row_factory=dict_row if rows else None).execute(query, params)  # type: ignore[arg-type]

    def _reconnect(self) -> None:
        self._conn = reconnect(self.url, autocommit=True, within=self.reconnect_seconds,
                               what="a run (pipeline.* bookkeeping)")
        for name in sorted(self._locks):
            row = self._execute("SELECT pg_try_advisory_lock(%s, hashtext(%s))", (LOCK_SPACE, name)).fetchone()
            if not (row and row[0]):
                self._locks.discard(name)
                raise LoadError(
                    f"the lock of {name.removeprefix('pipeline:')} went with the lost connection to the database"
                    f" {self.description}, and another run holds it now; this run stops here (batches committed"
                    " before stay loaded)")

    def _rows(self, query: str | sql.Composable, params: Sequence[Any] | dict[str, Any] = ()) -> list[dict[str, Any]]:
        return self._execute(query, params, rows=True).fetchall()

    # --- migrations -------------------------------------------------------------

    def migrate(self) -> list[str]:
        applied: list[str] = []
        files = sorted(migrations_dir().glob("*.sql"))
        with psycopg.connect(self.url, autocommit=False, application_name="elt-migrate") as conn:
            # Serialise concurrent first runs: only one applies each migration.
            conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_SPACE, MIGRATION_LOCK))
            ensure_schema(conn, "pipeline")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS pipeline.schema_migrations ("
                " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {row[0] for row in conn.execute("SELECT version FROM pipeline.schema_migrations")}
            for path in files:
                version = path.stem
                if version in done:
                    continue
                conn.execute(path.read_text(encoding="utf-8"))  # type: ignore[call-overload]
                conn.execute("INSERT INTO pipeline.schema_migrations (version) VALUES (%s)", (version,))
                applied.append(version)
            conn.commit()
        return applied

    # --- run log ------------------------------------------------------------------

    def start_run(self, pipeline: str, trigger: str) -> int:
        row = self._execute(
            "INSERT INTO pipeline.execution_log (pipeline_name, trigger, hostname, pid)"
            " VALUES (%s, %s, %s, %s) RETURNING id",
            (pipeline, trigger, socket.gethostname(), os.getpid()),
        ).fetchone()
        assert row is not None
        return int(row[0])

    def update_run(self, run_id: int, summary: RunSummary) -> None:
        self._execute(
            "UPDATE pipeline.execution_log SET rows_extracted = %s, rows_loaded = %s, rows_rejected = %s,"
            " rows_unchanged = %s, rows_collapsed = %s, streams = %s WHERE id = %s AND status = 'running'",
            (summary.rows_extracted, summary.rows_loaded, summary.rows_rejected, summary.rows_unchanged,
             summary.rows_collapsed, Jsonb(secrets.redact_value(summary.streams)), run_id),
        )

    def finish_run(self, run_id: int, summary: RunSummary) -> None:
        self._execute(
            "UPDATE pipeline.execution_log SET completed_at = clock_timestamp(), status = %s,"
            " rows_extracted = %s, rows_loaded = %s, rows_rejected = %s, rows_transformed = %s,"
            " rows_unchanged = %s, rows_collapsed = %s,"
            " error_message = %s, error_detail = %s, streams = %s, models = %s WHERE id = %s",
            (
                summary.status, summary.rows_extracted, summary.rows_loaded, summary.rows_rejected,
                summary.rows_transformed, summary.rows_unchanged, summary.rows_collapsed,
                secrets.redact(summary.error_message) if summary.error_message else None,
                Jsonb(secrets.redact_value(summary.error_detail)) if summary.error_detail else None,
                Jsonb(secrets.redact_value(summary.streams)),
                Jsonb(secrets.redact_value(summary.models)) if summary.models is not None else None,
                run_id,
            ),
        )

    def running_elsewhere(self, pipeline: str, run_id: int) -> dict[str, Any] | None:
        rows = self._rows(
            "SELECT id AS run_id, started_at, hostname, pid FROM pipeline.execution_log"
            " WHERE pipeline_name = %s AND status = 'running' AND id <> %s ORDER BY id DESC LIMIT 1",
            (pipeline, run_id),
        )
        return rows[0] if rows else None

    def mark_abandoned(self, pipeline: str, run_id: int) -> int:
        cur = self._execute(
            "UPDATE pipeline.execution_log SET status = 'failed', completed_at = clock_timestamp(),"
            " error_message = 'abandoned: the process running it stopped without closing its log row"
            " (killed, crashed or lost its connection); rows it committed stay loaded'"
            " WHERE pipeline_name = %s AND status = 'running' AND id <> %s",
            (pipeline, run_id),
        )
        return cur.rowcount

    def close_runs_of(self, pid: int, hostname: str, since: dt.datetime, message: str) -> int:
        # A child that closed its own row as 'interrupted' gets the scheduler's reason in front.
        cur = self._execute(
            "UPDATE pipeline.execution_log SET status = 'failed', completed_at = coalesce(completed_at, clock_timestamp()),"
            " error_message = %s || coalesce('; ' || nullif(error_message, 'interrupted'), '')"
            " WHERE pid = %s AND hostname = %s AND started_at >= %s AND status IN ('running', 'failed')",
            (message, pid, hostname, since))
        return cur.rowcount

    def last_runs(self, pipeline: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        return self._rows(
            "SELECT id, pipeline_name, status, trigger, started_at, completed_at, execution_duration_seconds,"
            " rows_extracted, rows_loaded, rows_unchanged, rows_collapsed, rows_rejected, rows_transformed,"
            " error_message, streams, bytes_processed FROM pipeline.execution_log"
            " WHERE (%(p)s::text IS NULL OR pipeline_name = %(p)s)"
            " ORDER BY id DESC LIMIT %(n)s",
            {"p": pipeline, "n": limit},
        )

    def recent_failures(self) -> list[dict[str, Any]]:
        return self._rows(monitoring.FAILED_RUNS)

    def stream_freshness(self) -> dict[tuple[str, str], dt.datetime]:
        return {(r["pipeline_name"], r["stream_name"]): r["last_read"] for r in self._rows(monitoring.STREAM_FRESHNESS)}

    def run_history(self) -> dict[str, dict[str, Any]]:
        return {r["pipeline_name"]: r for r in self._rows(monitoring.LAST_RUNS)}

    def open_runs(self) -> list[dict[str, Any]]:
        return self._rows(monitoring.RUNNING)

    # --- lock -------------------------------------------------------------------------

    def try_lock(self, pipeline: str) -> bool:
        name = f"pipeline:{pipeline}"
        row = self._execute("SELECT pg_try_advisory_lock(%s, hashtext(%s))", (LOCK_SPACE, name)).fetchone()
        if row and row[0]:
            self._locks.add(name)
        return bool(row and row[0])

    def unlock(self, pipeline: str) -> None:
        name = f"pipeline:{pipeline}"
        self._locks.discard(name)
        try:
            self._conn.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (LOCK_SPACE, name))
        except psycopg.OperationalError as exc:
            if not lost(self._conn, exc):
                raise
            # A lost session's locks went with it: there is nothing left to release.

    # --- state ------------------------------------------------------------------------

    def read_state(self, pipeline: str, stream: str) -> tuple[Watermark | None, dict[str, Any]]:
        rows = self._execute(
            "SELECT key, value FROM pipeline.state WHERE pipeline_name = %s AND stream_name = %s AND key = ANY(%s)",
            (pipeline, stream, list(_OWN_KEYS)),
        ).fetchall()
        values = dict(rows)
        return Watermark.from_json(values.get("watermark")), dict(values.get("schema") or {})

    def read_values(self, pipeline: str, stream: str) -> dict[str, Any]:
        rows = self._execute(
            "SELECT key, value FROM pipeline.state WHERE pipeline_name = %s AND stream_name = %s AND NOT key = ANY(%s)",
            (pipeline, stream, list(_OWN_KEYS)),
        ).fetchall()
        return dict(rows)

    def watermarks(self, pipeline: str | None = None) -> list[dict[str, Any]]:
        return self._rows(
            "SELECT pipeline_name, stream_name, value, updated_at, updated_by_run FROM pipeline.state"
            " WHERE (%(p)s::text IS NULL OR pipeline_name = %(p)s) AND key = 'watermark'"
            " ORDER BY pipeline_name, stream_name",
            {"p": pipeline},
        )

    def reset_watermarks(self, pipeline: str, streams: Sequence[str] = ()) -> int:
        return self._execute(
            "DELETE FROM pipeline.state WHERE pipeline_name = %s AND key = 'watermark'"
            " AND (%s::text[] IS NULL OR stream_name = ANY(%s::text[]))",
            (pipeline, list(streams) or None, list(streams) or None),
        ).rowcount

    def record_schema_changes(self, pipeline: str, stream: str, table: str, run_id: int,
                              changes: Sequence[SchemaChange], known_fields: dict[str, Any]) -> None:
        if lost(self._conn):
            self._reconnect()
        with self._conn.transaction(), self._conn.cursor() as cur:
            write_schema_changes(cur, pipeline, stream, table, run_id, changes, known_fields)

    # --- dead letters ---------------------------------------------------------------------

    def dead_letters(self, pipeline: str | None = None, stream: str | None = None, *, include_resolved: bool = False,
                     limit: int = 50) -> list[dict[str, Any]]:
        return self._rows(
            "SELECT id, pipeline_name, stream_name, run_id, kind, created_at, error_message, resolved_at, resolved_by,"
            " resolution FROM pipeline.dead_letter WHERE (%(p)s::text IS NULL OR pipeline_name = %(p)s)"
            " AND (%(s)s::text IS NULL OR stream_name = %(s)s) AND (%(all)s OR resolved_at IS NULL)"
            " ORDER BY id DESC LIMIT %(n)s",
            {"p": pipeline, "s": stream, "all": include_resolved, "n": limit},
        )

    def dead_letter(self, id: int) -> dict[str, Any] | None:
        rows = self._rows("SELECT * FROM pipeline.dead_letter WHERE id = %s", (id,))
        return rows[0] if rows else None

    def unresolved_dead_letters(self, pipeline: str, streams: Sequence[str] = (), ids: Sequence[int] = ()) -> list[DeadLetter]:
        rows = self._rows(
            "SELECT id, stream_name, source_record, kind, created_at, error_message FROM pipeline.dead_letter"
            " WHERE pipeline_name = %(p)s AND resolved_at IS NULL"
            " AND (%(ids)s::bigint[] IS NULL OR id = ANY(%(ids)s::bigint[]))"
            " AND (%(s)s::text[] IS NULL OR stream_name = ANY(%(s)s::text[])) ORDER BY id",
            {"p": pipeline, "ids": list(ids) or None, "s": list(streams) or None},
        )
        return [DeadLetter(r["id"], r["stream_name"], r["source_record"], r["kind"], r["created_at"], r["error_message"])
                for r in rows]

    def old_dead_letters(self, older_than: dt.timedelta) -> list[dict[str, Any]]:
        return self._rows(monitoring.OLD_DEAD_LETTERS, {"older_than": older_than})

    def resolve_dead_letters(self, ids: Sequence[int], by: str, resolution: str) -> int:
        return self._execute(
            "UPDATE pipeline.dead_letter SET resolved_at = now(), resolved_by = %s, resolution = %s"
            " WHERE id = ANY(%s) AND resolved_at IS NULL",
            (by, resolution, list(ids)),
        ).rowcount

    # --- alerts -----------------------------------------------------------------------------

    def open_alerts(self) -> dict[str, dict[str, Any]]:
        rows = self._rows("SELECT id, key, detail, first_seen, last_sent FROM pipeline.alerts WHERE resolved_at IS NULL")
        return {r["key"]: r for r in rows}

    def open_alert(self, key: str, check: str, subject: str, detail: str) -> dict[str, Any]:
        return self._rows(
            "INSERT INTO pipeline.alerts (key, check_name, subject, detail) VALUES (%s, %s, %s, %s)"
            " RETURNING id, key, detail, first_seen, last_sent",
            (key, check, subject, detail))[0]

    def alert_sent(self, alert_id: int, detail: str) -> None:
        self._execute("UPDATE pipeline.alerts SET last_sent = now(), sent_count = sent_count + 1, detail = %s"
                           " WHERE id = %s", (detail, alert_id))

    def resolve_alert(self, alert_id: int) -> None:
        self._execute("UPDATE pipeline.alerts SET resolved_at = now() WHERE id = %s", (alert_id,))

    def model_refreshes(self, relations: Sequence[str]) -> dict[str, dt.datetime | None]:
        # model_state is made by the first incremental model's build: before that, nothing was refreshed.
        if not self._execute("SELECT to_regclass('pipeline.model_state') IS NOT NULL").fetchone()[0]:  # type: ignore[index]
            return {}
        rows = self._rows("SELECT relation, full_refresh_at FROM pipeline.model_state WHERE relation = ANY(%s)",
                          [list(relations)])
        return {r["relation"]: r["full_refresh_at"] for r in rows}

    # --- raw tables, as read by checks, `elt stage` and `elt docs` ----------------------------

    def raw_tables(self) -> set[str]:
        return {r["table_name"] for r in self._rows(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'raw'")}

    def newest_load(self, table: str) -> dt.datetime | None:
        return self._rows(sql.SQL(monitoring.STALE_TABLE_TEMPLATE).format(sql.Identifier("raw", table)))[0]["newest"]

    def sample_payloads(self, table: str, limit: int = 200) -> list[dict[str, Any]]:
        rows = self._rows(sql.SQL("SELECT _raw_payload FROM {} ORDER BY _row_seq DESC LIMIT %s").format(
            sql.Identifier("raw", table)), (limit,))
        return [r["_raw_payload"] for r in rows]

    def raw_columns(self, table: str) -> list[tuple[str, str]]:
        rows = self._rows("SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = 'raw'"
                          " AND table_name = %s ORDER BY ordinal_position", (table,))
        return [(r["column_name"], r["data_type"]) for r in rows]

    def close(self) -> None:
        if not self._conn.closed:
            self._conn.close()
