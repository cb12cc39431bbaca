"""The BigQuery bookkeeping store: the ``<prefix>pipeline`` dataset (run log, lock, state, dead letters, alerts, schema trail).

The tables have the columns of the PostgreSQL migrations
(``sql/postgres/migrations``) in BigQuery types. BigQuery has no sequences, so
ids are made here from the clock: a run's id is the microsecond it started
(``UNIX_MICROS``-like, ordered by time, unique in practice); rows written in
bulk (dead letters, schema changes) get ``microseconds * 1000 + position``.

The per-pipeline lock is a row of ``pipeline.locks`` taken with a conditional
UPDATE (compare-and-set on its holder): BigQuery serialises DML on one table,
so of two runs updating the row at once exactly one changes it (the emulator
refuses the second with a conflict, which counts as "not taken"). A holder
that stopped is detected like PostgreSQL's session lock dying: its process is
gone (same host) or its heartbeat, renewed every minute by a thread while the
lock is held, is older than :attr:`BigQueryStore.lease`.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

import orjson

from elt import secrets
from elt.loaders.base import BookkeepingStore, DeadLetter, RunSummary, SchemaChange
from elt.loaders.bigquery.connection import BigQueryConnection
from elt.loaders.bigquery.raw import WORK_PREFIX, quote
from elt.records import exact_float
from elt.state import Watermark

#: State keys the framework itself keeps per stream; everything else is the extractor's (Batch.state).
_OWN_KEYS = ("watermark", "schema")

#: The bookkeeping tables, created by :meth:`BigQueryStore.migrate` (columns as on PostgreSQL).
MIGRATIONS: list[tuple[str, list[str]]] = [
    ("bq0001_pipeline_schema", [
        """CREATE TABLE IF NOT EXISTS {ds}.execution_log (
            id INT64 NOT NULL, pipeline_name STRING NOT NULL, started_at TIMESTAMP NOT NULL,
            completed_at TIMESTAMP, status STRING NOT NULL,
            rows_extracted INT64 NOT NULL, rows_loaded INT64 NOT NULL, rows_transformed INT64 NOT NULL,
            rows_rejected INT64 NOT NULL, rows_unchanged INT64 NOT NULL, rows_collapsed INT64 NOT NULL,
            error_message STRING, error_detail JSON, `trigger` STRING NOT NULL, streams JSON,
            hostname STRING, pid INT64, models JSON,
            -- bytes the run's queries processed (what on-demand pricing bills)
            bytes_processed INT64
        ) CLUSTER BY pipeline_name""",
        """CREATE TABLE IF NOT EXISTS {ds}.dead_letter (
            id INT64 NOT NULL, pipeline_name STRING NOT NULL, stream_name STRING, run_id INT64, batch_id STRING,
            source_record JSON, error_message STRING NOT NULL, error_detail JSON, record_hash STRING,
            created_at TIMESTAMP NOT NULL, resolved_at TIMESTAMP, resolved_by STRING, resolution STRING,
            kind STRING NOT NULL
        ) CLUSTER BY pipeline_name, stream_name""",
        """CREATE TABLE IF NOT EXISTS {ds}.state (
            pipeline_name STRING NOT NULL, stream_name STRING NOT NULL, key STRING NOT NULL, value JSON NOT NULL,
            updated_at TIMESTAMP NOT NULL, updated_by_run INT64
        ) CLUSTER BY pipeline_name, stream_name""",
        """CREATE TABLE IF NOT EXISTS {ds}.schema_changes (
            id INT64 NOT NULL, pipeline_name STRING NOT NULL, stream_name STRING NOT NULL, table_name STRING NOT NULL,
            field_name STRING NOT NULL, change STRING NOT NULL, old_type STRING, new_type STRING, run_id INT64,
            detected_at TIMESTAMP NOT NULL
        )""",
        """CREATE TABLE IF NOT EXISTS {ds}.alerts (
            id INT64 NOT NULL, key STRING NOT NULL, check_name STRING NOT NULL, subject STRING NOT NULL,
            detail STRING NOT NULL, first_seen TIMESTAMP NOT NULL, last_sent TIMESTAMP, sent_count INT64 NOT NULL,
            resolved_at TIMESTAMP
        )""",
        # One row per pipeline that ever ran: holder NULL when free.
        """CREATE TABLE IF NOT EXISTS {ds}.locks (
            pipeline_name STRING NOT NULL, holder STRING, hostname STRING, pid INT64,
            acquired_at TIMESTAMP, heartbeat_at TIMESTAMP
        )""",
    ]),
    # A record BigQuery's JSON cannot hold exactly (an integer beyond 64 bits, a decimal with more
    # digits than a double) is kept as its JSON text; source_record is then NULL.
    ("bq0002_dead_letter_source_text", [
        "ALTER TABLE {ds}.dead_letter ADD COLUMN IF NOT EXISTS source_text STRING",
    ]),
]


def new_id() -> int:
    """An id without a sequence: the current microsecond since the epoch (ordered by time)."""
    return time.time_ns() // 1000


def _json(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()


def _record(row: dict[str, Any]) -> Any:
    """A dead letter's record: its JSON, or, when JSON could not hold it, its text read digit for digit."""
    text = row.pop("source_text", None)
    if text is None:
        return row["source_record"]
    return json.loads(text, parse_float=exact_float)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Bookkeeping:
    """The SQL of the batch transaction's bookkeeping (dead letters, schema trail, state), shared by writer and store.

    Each method returns statements for a script and fills ``params``; nothing runs here.
    """

    def __init__(self, dataset: str) -> None:
        self.ds = dataset

    def state(self, params: dict[str, Any], pipeline: str, stream: str, values: dict[str, Any], run_id: int) -> list[str]:
        """Upsert state values (DELETE + INSERT: the transaction makes it one change)."""
        if not values:
            return []
        # Parameters are shared by the whole script, and one batch writes state more than once (the
        # schema's known fields, then the watermark): each call names its own, or the last one wins twice.
        n = sum(1 for name in params if name.startswith("st") and name.endswith("_keys"))
        p = f"st{n}"
        params.update({f"{p}_pl": pipeline, f"{p}_st": stream, f"{p}_keys": list(values),
                       f"{p}_values": [_json(v) for v in values.values()], f"{p}_run": run_id})
        return [
            f"DELETE FROM {self.ds}.state WHERE pipeline_name = @{p}_pl AND stream_name = @{p}_st"
            f" AND key IN UNNEST(@{p}_keys)",
            f"INSERT INTO {self.ds}.state (pipeline_name, stream_name, key, value, updated_at, updated_by_run)"
            f" SELECT @{p}_pl, @{p}_st, k, PARSE_JSON(@{p}_values[OFFSET(i)]), CURRENT_TIMESTAMP(), @{p}_run"
            f" FROM UNNEST(@{p}_keys) AS k WITH OFFSET i",
        ]

    def schema_changes(self, params: dict[str, Any], pipeline: str, stream: str, table: str, run_id: int,
                       changes: Sequence[SchemaChange], known_fields: dict[str, Any]) -> list[str]:
        if not changes:
            return []
        params.update(sc_id=new_id() * 1000, sc_pl=pipeline, sc_st=stream, sc_table=f"raw.{table}", sc_run=run_id,
                      sc_field=[c.field for c in changes], sc_change=[c.change for c in changes],
                      # Arrays cannot hold NULL: '' stands for "none" and is turned back.
                      sc_old=[c.old_type or "" for c in changes], sc_new=[c.new_type or "" for c in changes])
        return [
            f"INSERT INTO {self.ds}.schema_changes (id, pipeline_name, stream_name, table_name, field_name, change,"
            f" old_type, new_type, run_id, detected_at) SELECT @sc_id + i, @sc_pl, @sc_st, @sc_table, f,"
            f" @sc_change[OFFSET(i)], NULLIF(@sc_old[OFFSET(i)], ''), NULLIF(@sc_new[OFFSET(i)], ''), @sc_run,"
            f" CURRENT_TIMESTAMP() FROM UNNEST(@sc_field) AS f WITH OFFSET i",
        ] + self.state(params, pipeline, stream, {"schema": known_fields}, run_id)

    def dead_letters(self, params: dict[str, Any], pipeline: str, stream: str, run_id: int, batch_id: str,
                     letters: list[tuple[str, str, str, str, str, str]]) -> list[str]:
        """Insert (record JSON or '', record text or '', error, detail JSON or '', hash, kind) letters; one open
        letter per record hash. The text is set instead of the JSON when the JSON type cannot hold the record."""
        if not letters:
            return []
        records, texts, errors, details, hashes, kinds = (list(column) for column in zip(*letters, strict=True))
        params.update(dl_id=new_id() * 1000, dl_pl=pipeline, dl_st=stream, dl_run=run_id, dl_batch=batch_id,
                      dl_record=records, dl_text=texts, dl_error=errors, dl_detail=details, dl_hash=hashes,
                      dl_kind=kinds)
        return [
            f"INSERT INTO {self.ds}.dead_letter (id, pipeline_name, stream_name, run_id, batch_id, source_record,"
            f" source_text, error_message, error_detail, record_hash, created_at, kind)"
            # Arrays cannot hold NULL: '' stands for "none".
            f" SELECT @dl_id + i, @dl_pl, @dl_st, @dl_run, @dl_batch, PARSE_JSON(NULLIF(@dl_record[OFFSET(i)], '')),"
            f" NULLIF(@dl_text[OFFSET(i)], ''),"
            f" @dl_error[OFFSET(i)], PARSE_JSON(NULLIF(@dl_detail[OFFSET(i)], '')), h, CURRENT_TIMESTAMP(),"
            f" @dl_kind[OFFSET(i)] FROM UNNEST(@dl_hash) AS h WITH OFFSET i"
            # The same bad record re-read (a lookback overlap) is recorded once while unresolved.
            f" WHERE NOT EXISTS (SELECT 1 FROM {self.ds}.dead_letter d WHERE d.pipeline_name = @dl_pl"
            f" AND d.stream_name = @dl_st AND d.record_hash = h AND d.resolved_at IS NULL)"
            f" QUALIFY ROW_NUMBER() OVER (PARTITION BY h ORDER BY i) = 1",
        ]

    def resolve(self, params: dict[str, Any], name: str, ids: Sequence[int], by: str, resolution: str) -> list[str]:
        if not ids:
            return []
        params.update({f"{name}_ids": list(ids), f"{name}_by": by, f"{name}_res": resolution})
        return [f"UPDATE {self.ds}.dead_letter SET resolved_at = CURRENT_TIMESTAMP(), resolved_by = @{name}_by,"
                f" resolution = @{name}_res WHERE id IN UNNEST(@{name}_ids) AND resolved_at IS NULL"]


def transaction(statements: Sequence[str], tail: str = "") -> str:
    """A script running ``statements`` in one multi-statement transaction, then ``tail`` (a SELECT)."""
    body = "".join(f"{s};\n" for s in statements)
    return f"BEGIN TRANSACTION;\n{body}COMMIT TRANSACTION;\n{tail}"


class BigQueryStore(BookkeepingStore):
    """``<prefix>pipeline`` in BigQuery."""

    #: A lock whose heartbeat is older than this is stale (its holder stopped on another host).
    lease = dt.timedelta(minutes=5)
    heartbeat_seconds = 60.0

    def __init__(self, conn: BigQueryConnection, description: str) -> None:
        self.conn = conn
        self.description = description
        settings = conn.settings
        self.ds = quote(f"{settings.project}.{settings.dataset('pipeline')}")
        self.raw_ds = f"{settings.project}.{settings.dataset('raw')}"
        self.sql = Bookkeeping(self.ds)
        self._holder = uuid.uuid4().hex
        self._held: dict[str, threading.Event] = {}
        self._bytes_at_start: dict[int, int] = {}
        self._migrated = False
        #: The last stream whose state was read, with all its keys (read_state and read_values share one query).
        self._state_read: tuple[tuple[str, str], dict[str, Any]] | None = None

    def _rows(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return self.conn.query(sql.format(ds=self.ds), params)

    def _dml(self, sql: str, params: dict[str, Any] | None = None) -> int:
        return self.conn.run(sql.format(ds=self.ds), params)[1]

    # --- migrations -------------------------------------------------------------

    def migrate(self) -> list[str]:
        if self._migrated:
            return []
        from google.api_core.exceptions import NotFound

        self.conn.ensure_dataset("pipeline")
        self.conn.ensure_dataset("raw")
        try:
            done = {r["version"] for r in self._rows("SELECT version FROM {ds}.schema_migrations")}
        except NotFound:
            self._rows("CREATE TABLE IF NOT EXISTS {ds}.schema_migrations"
                       " (version STRING NOT NULL, applied_at TIMESTAMP NOT NULL)")
            done = set()
        applied = []
        for version, statements in MIGRATIONS:
            if version in done:
                continue
            # One script per version (DDL cannot be in a transaction; IF NOT EXISTS makes a re-run harmless).
            script = "".join(f"{statement.format(ds=self.ds)};\n" for statement in statements)
            self.conn.run(script + f"INSERT INTO {self.ds}.schema_migrations (version, applied_at)"
                          " SELECT @v, CURRENT_TIMESTAMP() FROM UNNEST([1])"
                          f" WHERE NOT EXISTS (SELECT 1 FROM {self.ds}.schema_migrations WHERE version = @v)", {"v": version})
            applied.append(version)
        self._migrated = True
        return applied

    # --- run log ------------------------------------------------------------------

    def start_run(self, pipeline: str, trigger: str) -> int:
        run_id = new_id()
        self._bytes_at_start[run_id] = self.conn.bytes_processed
        self._dml(
            "INSERT INTO {ds}.execution_log (id, pipeline_name, started_at, status, rows_extracted, rows_loaded,"
            " rows_transformed, rows_rejected, rows_unchanged, rows_collapsed, `trigger`, streams, hostname, pid)"
            " VALUES (@id, @p, CURRENT_TIMESTAMP(), 'running', 0, 0, 0, 0, 0, 0, @t, JSON '{{}}', @h, @pid)",
            {"id": run_id, "p": pipeline, "t": trigger, "h": socket.gethostname(), "pid": os.getpid()})
        return run_id

    def update_run(self, run_id: int, summary: RunSummary) -> None:
        self._dml(
            "UPDATE {ds}.execution_log SET rows_extracted = @e, rows_loaded = @l, rows_rejected = @r,"
            " rows_unchanged = @u, rows_collapsed = @c, streams = PARSE_JSON(@s) WHERE id = @id AND status = 'running'",
            {"e": summary.rows_extracted, "l": summary.rows_loaded, "r": summary.rows_rejected,
             "u": summary.rows_unchanged, "c": summary.rows_collapsed,
             "s": _json(secrets.redact_value(summary.streams)), "id": run_id})

    def finish_run(self, run_id: int, summary: RunSummary) -> None:
        # The bytes every query of this run processed so far (this one's own are not known before it runs).
        spent = self.conn.bytes_processed - self._bytes_at_start.pop(run_id, self.conn.bytes_processed)
        self._dml(
            "UPDATE {ds}.execution_log SET completed_at = CURRENT_TIMESTAMP(), status = @status,"
            " rows_extracted = @e, rows_loaded = @l, rows_rejected = @r, rows_transformed = @tr,"
            " rows_unchanged = @u, rows_collapsed = @c, error_message = NULLIF(@msg, ''),"
            " error_detail = PARSE_JSON(NULLIF(@detail, '')), streams = PARSE_JSON(@s),"
            " models = PARSE_JSON(NULLIF(@models, '')), bytes_processed = @bytes WHERE id = @id",
            {"status": summary.status, "e": summary.rows_extracted, "l": summary.rows_loaded,
             "r": summary.rows_rejected, "tr": summary.rows_transformed, "u": summary.rows_unchanged,
             "c": summary.rows_collapsed,
             "msg": secrets.redact(summary.error_message) if summary.error_message else "",
             "detail": _json(secrets.redact_value(summary.error_detail)) if summary.error_detail else "",
             "s": _json(secrets.redact_value(summary.streams)),
             "models": _json(secrets.redact_value(summary.models)) if summary.models is not None else "",
             "bytes": spent, "id": run_id})

    def running_elsewhere(self, pipeline: str, run_id: int) -> dict[str, Any] | None:
        rows = self._rows(
            "SELECT id AS run_id, started_at, hostname, pid FROM {ds}.execution_log"
            " WHERE pipeline_name = @p AND status = 'running' AND id != @id ORDER BY id DESC LIMIT 1",
            {"p": pipeline, "id": run_id})
        return rows[0] if rows else None

    def mark_abandoned(self, pipeline: str, run_id: int) -> int:
        return self._dml(
            "UPDATE {ds}.execution_log SET status = 'failed', completed_at = CURRENT_TIMESTAMP(),"
            " error_message = 'abandoned: the process running it stopped without closing its log row"
            " (killed, crashed or lost its connection); rows it committed stay loaded'"
            " WHERE pipeline_name = @p AND status = 'running' AND id != @id",
            {"p": pipeline, "id": run_id})

    def close_runs_of(self, pid: int, hostname: str, since: dt.datetime, message: str) -> int:
        return self._dml(
            "UPDATE {ds}.execution_log SET status = 'failed', completed_at = COALESCE(completed_at, CURRENT_TIMESTAMP()),"
            " error_message = CONCAT(@m, COALESCE(CONCAT('; ', NULLIF(error_message, 'interrupted')), ''))"
            " WHERE pid = @pid AND hostname = @h AND started_at >= @since AND status IN ('running', 'failed')",
            {"m": message, "pid": pid, "h": hostname, "since": since})

    _RUN_COLUMNS = (
        "id, pipeline_name, status, `trigger`, started_at, completed_at,"
        " TIMESTAMP_DIFF(completed_at, started_at, MICROSECOND) / 1e6 AS execution_duration_seconds,"
        " rows_extracted, rows_loaded, rows_unchanged, rows_collapsed, rows_rejected, rows_transformed,"
        " error_message, streams, bytes_processed")

    def last_runs(self, pipeline: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        return self._rows(
            f"SELECT {self._RUN_COLUMNS} FROM {{ds}}.execution_log WHERE (@p = '' OR pipeline_name = @p)"
            " ORDER BY id DESC LIMIT @n", {"p": pipeline or "", "n": limit})

    def recent_failures(self) -> list[dict[str, Any]]:
        # The latest failed or partial run per pipeline in 24 hours, unless a success came after it.
        return self._rows(
            "SELECT l.pipeline_name, l.id, l.status, l.started_at, l.error_message,"
            " COUNT(*) OVER (PARTITION BY l.pipeline_name, l.status) AS failures"
            " FROM {ds}.execution_log l WHERE l.status IN ('failed', 'partial')"
            " AND l.started_at > TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL 24 HOUR)"
            " AND NOT EXISTS (SELECT 1 FROM {ds}.execution_log s WHERE s.pipeline_name = l.pipeline_name"
            " AND s.status = 'success' AND s.started_at > l.started_at)"
            " QUALIFY ROW_NUMBER() OVER (PARTITION BY l.pipeline_name ORDER BY l.id DESC) = 1")

    def stream_freshness(self) -> dict[tuple[str, str], dt.datetime]:
        # Per stream, the newest run that read it without an error. The streams' figures are JSON
        # objects keyed by stream name; walked here rather than with JSON_KEYS (not everywhere yet).
        rows = self._rows(
            "SELECT pipeline_name, completed_at, streams FROM {ds}.execution_log"
            " WHERE status IN ('success', 'partial') AND completed_at IS NOT NULL ORDER BY completed_at")
        fresh: dict[tuple[str, str], dt.datetime] = {}
        for r in rows:
            for stream, figures in (r["streams"] or {}).items():
                if not (isinstance(figures, dict) and "error" in figures):
                    fresh[(r["pipeline_name"], stream)] = r["completed_at"]
        return fresh

    def run_history(self) -> dict[str, dict[str, Any]]:
        rows = self._rows(
            "SELECT pipeline_name, MAX(IF(status IN ('success', 'partial'), started_at, NULL)) AS last_success,"
            " MIN(started_at) AS first_run FROM {ds}.execution_log GROUP BY pipeline_name")
        return {r["pipeline_name"]: r for r in rows}

    def open_runs(self) -> list[dict[str, Any]]:
        return self._rows("SELECT id, pipeline_name, started_at, hostname, pid FROM {ds}.execution_log"
                          " WHERE status = 'running' ORDER BY id")

    # --- lock -------------------------------------------------------------------------

    def try_lock(self, pipeline: str) -> bool:
        params: dict[str, Any] = {"p": pipeline, "me": self._holder, "h": socket.gethostname(), "pid": os.getpid(),
                                  "lease": int(self.lease.total_seconds()), "stale": ""}
        taken = self._take(params)
        if not taken:
            rows = self._rows("SELECT holder, hostname, pid FROM {ds}.locks WHERE pipeline_name = @p", {"p": pipeline})
            if not rows:  # the pipeline's first run: its lock row, free
                self._dml("INSERT INTO {ds}.locks (pipeline_name) SELECT @p FROM UNNEST([1])"
                          " WHERE NOT EXISTS (SELECT 1 FROM {ds}.locks WHERE pipeline_name = @p)", {"p": pipeline})
            for row in rows:
                # A holder on this host whose process is gone (killed, crashed) left the lock: it may be taken.
                if row["holder"] and row["hostname"] == params["h"] and row["pid"] and not _pid_alive(int(row["pid"])):
                    params["stale"] = row["holder"]
            if not rows or params["stale"]:
                taken = self._take(params)
        if not taken:
            return False
        stop = threading.Event()
        self._held[pipeline] = stop
        threading.Thread(target=self._heartbeat, args=(pipeline, stop), name=f"elt-lock-{pipeline}", daemon=True).start()
        return True

    def _take(self, params: dict[str, Any]) -> bool:
        """Compare-and-set the lock row: BigQuery runs DML on one table one at a time, so only one run finds it free."""
        try:
            return bool(self._dml(
                "UPDATE {ds}.locks SET holder = @me, hostname = @h, pid = @pid, acquired_at = CURRENT_TIMESTAMP(),"
                " heartbeat_at = CURRENT_TIMESTAMP() WHERE pipeline_name = @p AND (holder IS NULL OR holder = @stale"
                " OR heartbeat_at < TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL @lease SECOND))", params))
        except Exception as exc:  # a concurrent update of the same row: the other run has it
            if "conflict" in str(exc).lower() or "concurrent" in str(exc).lower():
                return False
            raise

    def _heartbeat(self, pipeline: str, stop: threading.Event) -> None:
        while not stop.wait(self.heartbeat_seconds):
            try:
                self._dml("UPDATE {ds}.locks SET heartbeat_at = CURRENT_TIMESTAMP() WHERE pipeline_name = @p"
                          " AND holder = @me", {"p": pipeline, "me": self._holder})
            except Exception:  # noqa: BLE001 - a missed beat; the lease allows several
                continue

    def unlock(self, pipeline: str) -> None:
        stop = self._held.pop(pipeline, None)
        if stop is not None:
            stop.set()
        self._dml("UPDATE {ds}.locks SET holder = NULL, heartbeat_at = NULL WHERE pipeline_name = @p AND holder = @me",
                  {"p": pipeline, "me": self._holder})

    # --- state ------------------------------------------------------------------------

    def _state(self, pipeline: str, stream: str) -> dict[str, Any]:
        """Every state value of a stream; read once for read_state and the read_values that follows it."""
        if self._state_read is not None and self._state_read[0] == (pipeline, stream):
            return self._state_read[1]
        rows = self._rows("SELECT key, value FROM {ds}.state WHERE pipeline_name = @p AND stream_name = @s",
                          {"p": pipeline, "s": stream})
        values = {r["key"]: r["value"] for r in rows}
        self._state_read = ((pipeline, stream), values)
        return values

    def read_state(self, pipeline: str, stream: str) -> tuple[Watermark | None, dict[str, Any]]:
        self._state_read = None  # a new read of the stream: what a batch committed since counts
        values = self._state(pipeline, stream)
        return Watermark.from_json(values.get("watermark")), dict(values.get("schema") or {})

    def read_values(self, pipeline: str, stream: str) -> dict[str, Any]:
        values = self._state(pipeline, stream)
        self._state_read = None  # used once: later reads see what batches committed since
        return {k: v for k, v in values.items() if k not in _OWN_KEYS}

    def watermarks(self, pipeline: str | None = None) -> list[dict[str, Any]]:
        return self._rows(
            "SELECT pipeline_name, stream_name, value, updated_at, updated_by_run FROM {ds}.state"
            " WHERE (@p = '' OR pipeline_name = @p) AND key = 'watermark' ORDER BY pipeline_name, stream_name",
            {"p": pipeline or ""})

    def reset_watermarks(self, pipeline: str, streams: Sequence[str] = ()) -> int:
        return self._dml(
            "DELETE FROM {ds}.state WHERE pipeline_name = @p AND key = 'watermark'"
            " AND (ARRAY_LENGTH(@s) = 0 OR stream_name IN UNNEST(@s))", {"p": pipeline, "s": list(streams)})

    def record_schema_changes(self, pipeline: str, stream: str, table: str, run_id: int,
                              changes: Sequence[SchemaChange], known_fields: dict[str, Any]) -> None:
        params: dict[str, Any] = {}
        statements = self.sql.schema_changes(params, pipeline, stream, table, run_id, changes, known_fields)
        if statements:
            self.conn.run(transaction(statements), params)

    # --- dead letters ---------------------------------------------------------------------

    def dead_letters(self, pipeline: str | None = None, stream: str | None = None, *, include_resolved: bool = False,
                     limit: int = 50) -> list[dict[str, Any]]:
        return self._rows(
            "SELECT id, pipeline_name, stream_name, run_id, kind, created_at, error_message, resolved_at, resolved_by,"
            " resolution FROM {ds}.dead_letter WHERE (@p = '' OR pipeline_name = @p) AND (@s = '' OR stream_name = @s)"
            " AND (@all OR resolved_at IS NULL) ORDER BY id DESC LIMIT @n",
            {"p": pipeline or "", "s": stream or "", "all": include_resolved, "n": limit})

    def dead_letter(self, id: int) -> dict[str, Any] | None:
        rows = self._rows("SELECT * FROM {ds}.dead_letter WHERE id = @id", {"id": id})
        if not rows:
            return None
        row = rows[0]
        row["source_record"] = _record(row)
        return row

    def unresolved_dead_letters(self, pipeline: str, streams: Sequence[str] = (), ids: Sequence[int] = ()) -> list[DeadLetter]:
        rows = self._rows(
            "SELECT id, stream_name, source_record, source_text, kind, created_at, error_message FROM {ds}.dead_letter"
            " WHERE pipeline_name = @p AND resolved_at IS NULL AND (NOT @by_id OR id IN UNNEST(@ids))"
            " AND (ARRAY_LENGTH(@s) = 0 OR stream_name IN UNNEST(@s)) ORDER BY id",
            # An empty array parameter would be typed STRING: a placeholder id keeps it INT64.
            {"p": pipeline, "by_id": bool(ids), "ids": [int(i) for i in ids] or [0], "s": list(streams)})
        return [DeadLetter(r["id"], r["stream_name"], _record(r), r["kind"], r["created_at"], r["error_message"])
                for r in rows]

    def old_dead_letters(self, older_than: dt.timedelta) -> list[dict[str, Any]]:
        return self._rows(
            "SELECT pipeline_name, stream_name, COUNT(*) AS n, MIN(created_at) AS oldest FROM {ds}.dead_letter"
            " WHERE resolved_at IS NULL AND created_at < TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL @s SECOND)"
            " GROUP BY pipeline_name, stream_name ORDER BY 1, 2", {"s": int(older_than.total_seconds())})

    def resolve_dead_letters(self, ids: Sequence[int], by: str, resolution: str) -> int:
        params: dict[str, Any] = {}
        statements = self.sql.resolve(params, "r", [int(i) for i in ids], by, resolution)
        return self._dml(statements[0], params) if statements else 0

    # --- alerts -----------------------------------------------------------------------------

    def open_alerts(self) -> dict[str, dict[str, Any]]:
        rows = self._rows("SELECT id, key, detail, first_seen, last_sent FROM {ds}.alerts WHERE resolved_at IS NULL")
        return {r["key"]: r for r in rows}

    def open_alert(self, key: str, check: str, subject: str, detail: str) -> dict[str, Any]:
        alert_id = new_id()
        self._dml("INSERT INTO {ds}.alerts (id, key, check_name, subject, detail, first_seen, sent_count)"
                  " VALUES (@id, @k, @c, @s, @d, CURRENT_TIMESTAMP(), 0)",
                  {"id": alert_id, "k": key, "c": check, "s": subject, "d": detail})
        return self._rows("SELECT id, key, detail, first_seen, last_sent FROM {ds}.alerts WHERE id = @id", {"id": alert_id})[0]

    def alert_sent(self, alert_id: int, detail: str) -> None:
        self._dml("UPDATE {ds}.alerts SET last_sent = CURRENT_TIMESTAMP(), sent_count = sent_count + 1, detail = @d"
                  " WHERE id = @id", {"d": detail, "id": alert_id})

    def resolve_alert(self, alert_id: int) -> None:
        self._dml("UPDATE {ds}.alerts SET resolved_at = CURRENT_TIMESTAMP() WHERE id = @id", {"id": alert_id})

    def model_refreshes(self, relations: Sequence[str]) -> dict[str, dt.datetime | None]:
        from google.api_core.exceptions import NotFound

        try:  # model_state is made by the first incremental model's build (BigQueryWarehouse)
            rows = self._rows("SELECT relation, full_refresh_at FROM {ds}.model_state WHERE relation IN UNNEST(@r)",
                              {"r": list(relations)})
        except NotFound:
            return {}
        return {r["relation"]: r["full_refresh_at"] for r in rows}

    # --- raw tables, as read by checks, `elt stage` and `elt docs` ----------------------------

    def _raw(self, table: str) -> str:
        return quote(f"{self.raw_ds}.{table}")

    def raw_tables(self) -> set[str]:
        self.conn.ensure_dataset("raw")
        rows = self.conn.query(f"SELECT table_name FROM {quote(self.raw_ds)}.INFORMATION_SCHEMA.TABLES")
        return {r["table_name"] for r in rows if not r["table_name"].startswith(WORK_PREFIX)}

    def newest_load(self, table: str) -> dt.datetime | None:
        value: dt.datetime | None = self.conn.query(f"SELECT MAX(_loaded_at) AS newest FROM {self._raw(table)}")[0]["newest"]
        return value

    def sample_payloads(self, table: str, limit: int = 200) -> list[dict[str, Any]]:
        rows = self.conn.query(f"SELECT _raw_payload FROM {self._raw(table)} ORDER BY _row_seq DESC LIMIT @n", {"n": limit})
        return [r["_raw_payload"] for r in rows]

    def raw_columns(self, table: str) -> list[tuple[str, str]]:
        self.conn.ensure_dataset("raw")
        rows = self.conn.query(f"SELECT column_name, data_type FROM {quote(self.raw_ds)}.INFORMATION_SCHEMA.COLUMNS"
                               " WHERE table_name = @t ORDER BY ordinal_position", {"t": table})
        return [(r["column_name"], r["data_type"]) for r in rows]

    def close(self) -> None:
        for stop in self._held.values():
            stop.set()
        self._held.clear()
