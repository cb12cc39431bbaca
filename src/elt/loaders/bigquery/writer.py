"""The BigQuery raw writer: a load job into a stage table, then one multi-statement transaction per batch.

Each batch is written as newline-delimited JSON into ``<prefix>raw._elt_stage__<table>``
by a load job (no streaming inserts). One script then applies it: the stream's
write strategy (``elt.strategies``, through :class:`_Ops`), the batch's dead
letters, schema trail and the stream's watermark and state, between
``BEGIN TRANSACTION`` and ``COMMIT TRANSACTION``. So the watermark and the
batch commit together, as on PostgreSQL: a crash before the commit leaves
neither, a crash after it both. (The writes are idempotent as well: a
re-applied batch inserts no record whose ``_record_hash`` is stored and
rewrites no unchanged key.)

BigQuery allows DML but not DDL in such a transaction, so what needs DDL runs
around it: a shadow table is created before the first batch, dropped after the
commit that applied it. Upsert is written as an UPDATE and an INSERT in the
transaction rather than one MERGE: the result is the same, and the local
emulator the tests use cannot run a MERGE inside a transaction.
"""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

import orjson

from elt import secrets
from elt.errors import ConfigError, LoadError
from elt.limits import JsonLimits
from elt.loaders.base import LoadResult, RawWriter, SchemaChange, StreamTarget, dead_letter_copy
from elt.loaders.bigquery.connection import BigQueryConnection
from elt.loaders.bigquery.raw import GENERATED_VIEW_MARK, KIND_OF_TYPE, WORK_PREFIX, RawTable, quote
from elt.loaders.bigquery.store import Bookkeeping, transaction
from elt.logs import get_logger
from elt.records import key_text, record_hash
from elt.state import Watermark
from elt.validation import PreparedBatch


class _Ops:
    """The strategy primitives (``elt.strategies.RawOps``) on one batch: each adds statements to its script.

    Nothing runs until the writer runs the script, so the counts a primitive
    returns are placeholders; the script's last SELECT gives the real ones.
    """

    def __init__(self, table: RawTable, restore_deleted: bool = False) -> None:
        self.table = table
        self.restore_deleted = restore_deleted
        #: Before the transaction (temporary tables); in it (statement, counter); after its commit (DDL).
        self.before: list[str] = []
        self.statements: list[tuple[str, str | None]] = []
        self.after: list[str] = []
        self.staged = False
        self.replay = False

    def insert_new(self, *, shadow: bool = False) -> tuple[int, int]:
        self.staged = True
        self.statements += self.table.insert_new_sql(shadow=shadow, restore_deleted=self.restore_deleted and not shadow)
        return 0, 0

    def merge_by_key(self, *, shadow: bool = False) -> tuple[int, int]:
        if not self.table.keys:
            return self.insert_new(shadow=shadow)
        self.staged = True
        self.statements += self.table.merge_sql(shadow=shadow)
        return 0, 0

    def _replay(self, history: bool) -> tuple[int, int]:
        self.staged = self.replay = True
        self.before.append(self.table.replay_candidates_sql(history))
        self.statements += self.table.replay_write_sql(history)
        return 0, 0

    def merge_newer(self) -> tuple[int, int]:
        return self._replay(history=False)

    def insert_newest(self) -> tuple[int, int]:
        if not self.table.keys:
            return self.insert_new()
        return self._replay(history=True)

    def create_shadow(self) -> None:
        self.before += self.table.create_shadow_sql()

    def drop_shadow(self) -> None:
        self.after.append(self.table.drop_sql(self.table.shadow_name))

    def swap_shadow(self) -> None:
        self.statements += [(s, None) for s in self.table.swap_sql()]
        self.drop_shadow()

    def replace_partitions(self) -> None:
        self.statements += [(s, None) for s in self.table.replace_partitions_sql()]
        self.drop_shadow()


class BigQueryJson(JsonLimits):
    """BigQuery's JSON type: numbers are stored as INT64, UINT64 or FLOAT64.

    PARSE_JSON refuses a wider integer ("cannot be stored without loss of
    precision") and a decimal with more digits than a double holds is rounded
    (the emulator does; BigQuery refuses it), so neither may reach it. U+0000
    is an ordinary character in its strings.
    """

    name = "BigQuery's JSON type"
    integers = (-(2**63), 2**64 - 1)
    exact_decimals = False


class BigQueryWriter(RawWriter):
    """Writes streams into ``<prefix>raw`` of a BigQuery project."""

    json_limits: ClassVar[JsonLimits] = BigQueryJson()

    def __init__(self, conn: BigQueryConnection) -> None:
        self.conn = conn
        settings = conn.settings
        self.project = settings.project
        self.raw = settings.dataset("raw")
        self.bookkeeping = Bookkeeping(quote(f"{settings.project}.{settings.dataset('pipeline')}"))
        self._tables: dict[tuple[str, str], RawTable] = {}
        self._has_deleted: dict[tuple[str, str], bool] = {}
        self._seq = 0
        self._columns: dict[str, dict[str, str]] = {}
        self.log = get_logger()

    # --- running scripts ----------------------------------------------------------------

    def _run(self, target: StreamTarget, script: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        try:
            rows, _ = self.conn.run(script, params)
        except Exception as exc:
            if type(exc).__module__.startswith(("google.", "requests", "urllib3")):
                raise LoadError(f"stream {target.stream!r}: {self.raw}.{target.table}: {secrets.redact(str(exc)).strip()};"
                                " rolled back, nothing of it was written") from exc
            raise
        return rows

    def _apply(self, target: StreamTarget, ops: _Ops, bookkeeping: list[str], params: dict[str, Any]) -> list[dict[str, Any]]:
        """One script: ``ops.before``, then the strategy's statements and the bookkeeping in one transaction.

        Returns ``ins`` and ``upd`` (rows the strategy inserted and updated), or for replay one row per
        written record (``_hash``, ``_inserted``). What must follow the commit (dropping a shadow) runs after.
        """
        body: list[str] = []
        for statement, counter in ops.statements:
            body.append(statement)
            if counter:
                body.append(f"SET {counter} = {counter} + @@row_count")
        body += bookkeeping
        if not (body or ops.before):
            # Nothing to commit: only what follows a commit (dropping the stage).
            return self._run(target, "".join(f"{s};\n" for s in ops.after), {}) if ops.after else []
        tail = "SELECT _hash, _inserted FROM _elt_replay" if ops.replay else "SELECT ins, upd"
        head = "DECLARE ins INT64 DEFAULT 0;\nDECLARE upd INT64 DEFAULT 0;\n" + "".join(f"{s};\n" for s in ops.before)
        # DDL (dropping a shadow or stage) only after the commit: BigQuery refuses it inside a transaction.
        after = "".join(f"{s};\n" for s in ops.after)
        return self._run(target, head + transaction(body, after + tail), params)

    def _stage(self, table: RawTable, batch: PreparedBatch) -> None:
        """Load the batch into the stream's stage table (replacing the last batch's rows) with a load job."""
        names = [name for name, _ in table.stage_schema()][:-1]
        dumps = orjson.dumps
        # Written line by line into one buffer: the batch's JSON is held once, not once per line and once joined.
        buffer = io.BytesIO()
        write = buffer.write
        for i, row in enumerate(batch.rows):
            write(dumps({**dict(zip(names, row, strict=True)), "_ord": i}))
            write(b"\n")
        self.conn.load_ndjson(table.table_id(table.stage_name), table.stage_schema(), buffer)

    def _params(self, run_id: int, batch: PreparedBatch | None) -> dict[str, Any]:
        import datetime as dt

        # _row_seq: arrival order without an identity column (a base per batch, growing, plus the row's place).
        size = len(batch.rows) if batch is not None else 0
        self._seq = max(time.time_ns() // 1000 * 1000, self._seq + size + 1)
        return {"batch_id": uuid.uuid4().hex, "run_id": run_id, "loaded_at": dt.datetime.now(dt.UTC), "seq": self._seq}

    # --- raw tables -----------------------------------------------------------------------

    def _existing_columns(self, table: str) -> dict[str, str]:
        """The raw table's columns (read once per stream read; empty when it does not exist)."""
        if table not in self._columns:
            self.conn.ensure_dataset("raw")
            rows = self.conn.query(
                f"SELECT column_name, data_type FROM {quote(f'{self.project}.{self.raw}')}.INFORMATION_SCHEMA.COLUMNS"
                " WHERE table_name = @t", {"t": table})
            self._columns[table] = {r["column_name"]: r["data_type"] for r in rows}
        return self._columns[table]

    def table_cursor_kind(self, table: str, cursor: str | None) -> str | None:
        if cursor is None:
            return None
        data_type = self._existing_columns(table).get(cursor)
        return KIND_OF_TYPE.get(data_type) if data_type else None

    def _raw_table(self, target: StreamTarget) -> RawTable:
        """Create (or check and extend) the raw table before its first rows."""
        key = (target.pipeline, target.stream)
        table = self._tables.get(key)
        if table is not None:
            return table
        table = RawTable.for_stream(self.project, self.raw, target.table, target.extractor, target.cursor_kind)
        existing = self._existing_columns(target.table)
        if existing:
            missing_keys = [k for k in table.keys if k not in existing]
            if missing_keys:
                raise ConfigError(
                    f"stream {target.stream!r}: {self.raw}.{target.table} exists without key column(s) {missing_keys};"
                    " the primary_key changed since it was created. Load into a new stream name, or rename the old"
                    " table so elt creates a new one.")
            for column, col_type, _ in table.data_columns():
                if column not in existing:
                    self._columns.pop(target.table, None)
                    self.conn.query(f"ALTER TABLE {table.ref()} ADD COLUMN IF NOT EXISTS {quote(column)} {col_type}")
                elif column == table.cursor and existing[column] in KIND_OF_TYPE:
                    table.cursor_type = existing[column]  # the table decides how cursors compare
        else:
            self._columns.pop(target.table, None)
            self.conn.query(table.create_sql())
        if table.keys and table.strategy.latest_view:
            self._ensure_dedup_view(table)
        self._tables[key] = table
        return table

    def _ensure_dedup_view(self, table: RawTable) -> None:
        from google.api_core.exceptions import NotFound

        client = self.conn.client
        stg = self.conn.ensure_dataset("stg")
        view_id = f"{self.project}.{stg}.{table.name}"
        try:
            current = client.get_table(view_id)
        except NotFound:
            current = None
        if current is not None:
            # Ours already (a BigQuery view reads SELECT * when queried, so new columns need no refresh),
            # or the user's own stg model has taken the name: it wins.
            return
        try:
            self.conn.query(table.dedup_view_sql(quote(view_id)))
            view = client.get_table(view_id)
            view.description = (f"{GENERATED_VIEW_MARK}: latest version per key of {self.raw}.{table.name};"
                                " a model in sql/stg/ replaces it")
            client.update_table(view, ["description"])
        except Exception as exc:  # noqa: BLE001 - the view is a convenience; raw data is unaffected
            self.log.warning("could not refresh the generated stg view; raw data is unaffected",
                             table=table.name, error=secrets.redact(str(exc)).strip()[:300])

    def begin_stream(self, target: StreamTarget, run_id: int) -> None:
        key = (target.pipeline, target.stream)
        self._tables.pop(key, None)
        strategy = target.extractor.strategy
        existing = self._existing_columns(target.table)
        # Only inserting strategies need it (an upsert's update clears the mark itself).
        inserting = bool(existing) and bool(target.extractor.key_fields) and not strategy.keyed
        self._has_deleted[key] = inserting and bool(self.conn.query(
            f"SELECT 1 AS x FROM {quote(f'{self.project}.{self.raw}.{target.table}')} WHERE _deleted_at IS NOT NULL LIMIT 1"))
        if strategy.unit == "stream":
            # A fresh shadow before the first batch (one a killed run left holds an unknown part of the source).
            ops = _Ops(self._raw_table(target))
            strategy.begin(ops)
            for statement in ops.before:
                self._run(target, statement, {})

    # --- batches ---------------------------------------------------------------------------

    def _letters(self, batch: PreparedBatch) -> list[tuple[str, str, str, str, str, str]]:
        letters = []
        for rejected in batch.rejected:
            payload, kind = dead_letter_copy(rejected, self.json_limits)
            # A record the JSON column would round or refuse is kept as its exact text instead.
            exact = self.json_limits.fits(payload)
            letters.append((
                payload.decode() if exact else "", "" if exact else payload.decode(), secrets.redact(rejected.reason),
                orjson.dumps(secrets.redact_value(rejected.detail)).decode() if rejected.detail else "",
                record_hash(payload), kind,
            ))
        return letters

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
        kind_known = not target.extractor.cursor_field or target.cursor_kind is not None
        table = self._raw_table(target) if batch.rows or kind_known or strategy.unit == "stream" else None
        params = self._params(run_id, batch)
        result = LoadResult(rejected=len(batch.rejected), collapsed=batch.collapsed)
        ops = _Ops(table, self._has_deleted.get((target.pipeline, target.stream), False)) if table is not None else None
        if ops is not None and batch.rows:
            strategy.write(ops)
            self._stage(ops.table, batch)
            params["prune"] = ops.table.prune_values(batch.rows)
        book = self._book(params, target, run_id, batch, schema_changes, known_fields)
        if supersedes and table is not None:
            book += self._supersede(params, target, table, supersedes, run_id)
        values = dict(state or {})
        if watermark is not None:
            values["watermark"] = watermark.to_json()
        book += self.bookkeeping.state(params, target.pipeline, target.stream, values, run_id)
        rows = self._apply(target, ops or _Ops(_no_table(target)), book, params)
        if ops is not None and batch.rows and rows:
            result.inserted, result.updated = int(rows[0]["ins"]), int(rows[0]["upd"])
            result.unchanged = len(batch.rows) - batch.collapsed - result.inserted - result.updated
        return result

    def _book(self, params: dict[str, Any], target: StreamTarget, run_id: int, batch: PreparedBatch,
              schema_changes: Sequence[SchemaChange], known_fields: dict[str, Any]) -> list[str]:
        """Dead letters and schema trail of a batch, for its transaction."""
        book = self.bookkeeping.dead_letters(params, target.pipeline, target.stream, run_id, params["batch_id"],
                                             self._letters(batch))
        return book + self.bookkeeping.schema_changes(params, target.pipeline, target.stream, target.table, run_id,
                                                      schema_changes, known_fields)

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
        params = self._params(run_id, batch)
        result = LoadResult(collapsed=batch.collapsed)
        ops = _Ops(table) if table is not None else _Ops(_no_table(target))
        if table is not None:
            strategy.replay(ops)
            self._stage(table, batch)
            params["prune"] = table.prune_values(batch.rows)
        book = self._book(params, target, run_id, batch, schema_changes, known_fields)
        if not ops.replay:
            # The plain insert writes every new record (and a stored one is there already): all count as written.
            result.written_hashes = {str(row[-1]) for row in batch.rows}
            replayed = [i for i, h in resolved.items() if h in result.written_hashes]
            book += self._resolutions(params, resolved, replayed, resolved_by)
            rows = self._apply(target, ops, book, params)
            if rows:
                result.inserted, result.updated = int(rows[0]["ins"]), int(rows[0]["upd"])
            return result
        # The records to write are known only inside the script (the _elt_replay temporary table):
        # the letters are resolved in the same transaction by hash.
        params.update(rp_ids=[int(i) for i in resolved], rp_hashes=[resolved[i] for i in resolved], rp_by=resolved_by)
        pipeline_ds = self.bookkeeping.ds
        book += [
            f"UPDATE {pipeline_ds}.dead_letter SET resolved_at = CURRENT_TIMESTAMP(), resolved_by = @rp_by,"
            " resolution = IF(@rp_hashes[OFFSET(i)] IN (SELECT _hash FROM _elt_replay), 'replayed',"
            " 'superseded: a newer or identical version of this record is already stored')"
            f" FROM UNNEST(@rp_ids) AS rid WITH OFFSET i WHERE id = rid AND resolved_at IS NULL"
        ] if resolved else []
        rows = self._apply(target, ops, book, params)
        result.written_hashes = {r["_hash"] for r in rows}
        result.inserted = sum(1 for r in rows if r["_inserted"])
        result.updated = len(rows) - result.inserted
        return result

    def _resolutions(self, params: dict[str, Any], resolved: dict[int, str], replayed: list[int], by: str) -> list[str]:
        superseded = [i for i in resolved if i not in set(replayed)]
        return (self.bookkeeping.resolve(params, "rr", replayed, by, "replayed")
                + self.bookkeeping.resolve(params, "rs", superseded, by,
                                           "superseded: a newer or identical version of this record is already stored"))

    def _supersede(self, params: dict[str, Any], target: StreamTarget, table: RawTable,
                   supersedes: dict[str, tuple[str, int]], run_id: int) -> list[str]:
        """Sources complete at a new version: older versions' rows marked deleted, settled dead letters resolved."""
        id_column, version_column = (quote(c) for c in table.sources[:2])
        statements = []
        params.update(su_pl=target.pipeline, su_st=target.stream, su_run=run_id)
        for n, (source, (version, read_from)) in enumerate(supersedes.items()):
            params.update({f"su_s{n}": source, f"su_p{n}": f"{source}:", f"su_v{n}": version, f"su_f{n}": read_from})
            statements.append(
                f"UPDATE {table.ref()} SET _deleted_at = CURRENT_TIMESTAMP() WHERE _deleted_at IS NULL"
                f" AND STARTS_WITH({id_column}, @su_p{n}) AND ({version_column} IS NULL OR {version_column} != @su_v{n})")
            record = "source_record"
            source_id = f"JSON_VALUE({record}, '$._source_id')"
            tail = f"SUBSTR({source_id}, LENGTH(@su_p{n}) + 1)"
            statements.append(
                f"UPDATE {self.bookkeeping.ds}.dead_letter SET resolved_at = CURRENT_TIMESTAMP(), resolved_by = 'elt',"
                " resolution = 'the source loaded again' WHERE pipeline_name = @su_pl AND stream_name = @su_st"
                " AND resolved_at IS NULL AND (run_id IS NULL OR run_id != @su_run) AND CASE"
                f" WHEN JSON_VALUE({record}, '$.file') = @su_s{n} THEN JSON_QUERY({record}, '$.row') IS NULL"
                f"   OR (JSON_TYPE(JSON_QUERY({record}, '$.line')) = 'number'"
                f"       AND CAST(JSON_VALUE({record}, '$.line') AS INT64) > @su_f{n})"
                f" WHEN STARTS_WITH({source_id}, @su_p{n}) AND REGEXP_CONTAINS({tail}, r'^[0-9]+$')"
                f"   THEN CAST({tail} AS INT64) > @su_f{n}"
                " ELSE FALSE END")
        return statements

    def finish_stream(self, target: StreamTarget, run_id: int, watermark: Watermark | None, complete: bool,
                      state: dict[str, Any] | None = None) -> None:
        strategy = target.extractor.strategy
        table = self._tables.get((target.pipeline, target.stream))
        ops = _Ops(table or self._raw_table(target)) if strategy.unit == "stream" else _Ops(_no_table(target))
        params: dict[str, Any] = {}
        if strategy.unit == "stream":
            strategy.finish(ops, complete)
            if complete and ops.table.partition:
                rows = self.conn.query(ops.table.shadow_partitions_sql())
                params["partitions"] = [str(r["p"]) for r in rows]  # an empty list is typed STRING, as the column
        book: list[str] = []
        if complete:
            values = dict(state or {})
            if watermark is not None:
                values["watermark"] = watermark.to_json()
            book = self.bookkeeping.state(params, target.pipeline, target.stream, values, run_id)
        if table is not None:
            ops.after.append(table.drop_sql(table.stage_name))
        self._apply(target, ops, book, params)
        self._columns.pop(target.table, None)  # the next read looks again (another process may change it)

    # --- deletes ---------------------------------------------------------------------------

    def mark_deleted(self, target: StreamTarget, source_keys: Iterable[list[tuple[Any, ...]]]) -> tuple[int, int]:
        if not self._existing_columns(target.table):
            raise ConfigError(f"stream {target.stream!r}: {self.raw}.{target.table} does not exist yet; run the stream first")
        table = self._raw_table(target)
        names = [f"_k{i}" for i in range(len(table.keys))]
        lines = [orjson.dumps(dict(zip(names, (key_text(v) for v in key), strict=True)))
                 for page in source_keys for key in page]
        stored = self.conn.query(f"SELECT COUNT(*) AS n FROM {table.ref()}")[0]["n"]
        if not lines and stored:
            raise ConfigError(
                f"stream {target.stream!r}: the source returned no keys at all; not marking all {stored}"
                f" rows of {self.raw}.{target.table} deleted. Check the stream's table/query and the source's grants")
        keys_table = f"{WORK_PREFIX}keys__{table.name}"
        self.conn.load_ndjson(table.table_id(keys_table), [(n, "STRING") for n in names], b"\n".join(lines) + b"\n")
        match = " AND ".join(f"s.{n} = t.{quote(k)}" for n, k in zip(names, table.keys, strict=True))
        source = table.ref(keys_table)
        script = (
            "DECLARE ins INT64 DEFAULT 0;\nDECLARE upd INT64 DEFAULT 0;\n"
            + transaction([
                # Every stored version of a vanished key is marked, so the current-state view shows it too.
                f"UPDATE {table.ref()} t SET _deleted_at = CURRENT_TIMESTAMP() WHERE t._deleted_at IS NULL"
                f" AND NOT EXISTS (SELECT 1 FROM {source} s WHERE {match})",
                "SET ins = @@row_count",
                f"UPDATE {table.ref()} t SET _deleted_at = NULL WHERE t._deleted_at IS NOT NULL"
                f" AND EXISTS (SELECT 1 FROM {source} s WHERE {match})",
                "SET upd = @@row_count",
            ], "SELECT ins, upd"))
        try:
            rows = self._run(target, script, {})
        finally:
            self._run(target, table.drop_sql(keys_table), {})
        return int(rows[0]["ins"]), int(rows[0]["upd"])

    def close(self) -> None:
        """The connection is the loader's; it closes it."""


def _no_table(target: StreamTarget) -> RawTable:
    """A stand-in for batches that write no rows (only dead letters, state): its statements are never made."""
    return RawTable("", "", target.table, (), None, "STRING", None, target.extractor.strategy)
