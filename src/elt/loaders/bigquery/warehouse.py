"""Models built in BigQuery: the project's ``sql/`` models, transpiled, in the layer datasets.

Each model's SQL (PostgreSQL's dialect) is translated by
:func:`elt.transforms.dialects.transpile` and its ``raw.``, ``stg.``, ``mart.``
and ``rpt.`` references are pointed at the destination's datasets
(``<prefix>raw`` ...). Then, by materialisation:

- ``view``: kept when unchanged (its description carries the model's
  fingerprint); else created as ``<name>__elt_new``, tested, and the live view
  replaced with ``CREATE OR REPLACE VIEW``;
- ``table`` (and ``materialized_view``: BigQuery's materialised views accept a
  narrow subset of SQL and refresh on their own schedule, so elt builds a
  table): ``CREATE OR REPLACE TABLE <name>__elt_new AS ...``, tested, then
  copied over the live table by a copy job (``WRITE_TRUNCATE``: the table is
  replaced in one step or not at all, and copy jobs are not billed);
- ``incremental``: the window's rows (``watermark >=`` the table's newest
  minus ``lookback``) are computed once into ``<name>__elt_window``, the live
  table is copied to ``<name>__elt_new`` (free), a ``MERGE`` updates changed
  rows, inserts new ones and deletes rows of the window the model no longer
  yields, the result is tested and copied over the live table.

No build holds a transaction across its data tests: atomicity comes from the
copy job, so a failed statement or a failing test leaves the last good version
live, as on PostgreSQL. Every query goes through ``BigQueryConnection.query``
(the ``maximum_bytes_billed`` guard, bytes summed for the run's log row);
metadata (listing tables, descriptions, copies) uses the client's free API calls.

What differs from PostgreSQL: nothing a user added to a table survives its
rebuild other than what the copy keeps (no grants or policies are carried over:
grant on the dataset); ``unique_key`` is checked by a query (BigQuery enforces
no unique constraint); two builds of one model at the same time are not
serialised (the run lock of the pipeline keeps its own runs apart); the
incremental horizon is the previous run's start minus
:attr:`BigQueryWarehouse.late_commit_margin` (BigQuery has no view of running
transactions).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import threading
from collections.abc import Collection, Iterator
from typing import Any, ClassVar

import sqlglot
from sqlglot import exp

from elt.loaders.bigquery.connection import BigQueryConnection
from elt.transforms import incremental
from elt.transforms.datatests import DataTestResult, unreadable_column
from elt.transforms.dialects import transpile
from elt.transforms.models import DataTest, Model, parse_duration
from elt.transforms.warehouse import Built, Judge, ModelError, Warehouse, model_comment

#: The layers a model's SQL may name; each becomes ``<prefix><layer>``.
_LAYERS = ("raw", "stg", "mart", "rpt", "pipeline")
#: The datasets whose relations the builder needs to know about (sources and models).
_LISTED = ("raw", "stg", "mart", "rpt")


def _google_errors() -> tuple[type[BaseException], ...]:
    try:
        from google.api_core.exceptions import GoogleAPIError
    except ImportError:  # the bigquery extra is not installed: nothing of it can be raised either
        return ()
    return (GoogleAPIError,)


def quote(name: str) -> str:
    """A BigQuery identifier in backticks."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def string(text: str) -> str:
    """A BigQuery string literal."""
    return exp.Literal.string(text).sql(dialect="bigquery")


def literal(value: Any) -> str:
    """A watermark value as a BigQuery literal of its own type (DDL takes no query parameters)."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            return f"DATETIME {string(value.isoformat(sep=' '))}"
        return f"TIMESTAMP {string(value.astimezone(dt.UTC).isoformat(sep=' '))}"
    if isinstance(value, dt.date):
        return f"DATE {string(value.isoformat())}"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, decimal.Decimal):
        return f"NUMERIC {string(str(value))}"
    if isinstance(value, float):
        return repr(value)
    return string(str(value))


def _first_error(exc: BaseException) -> dict[str, Any]:
    errors = getattr(exc, "errors", None) or []
    return errors[0] if errors and isinstance(errors[0], dict) else {}


def _message(exc: BaseException) -> str:
    """BigQuery's own words for a failed query (without the status code, job id and location)."""
    return str(_first_error(exc).get("message") or getattr(exc, "message", None) or exc)


def _reason(exc: BaseException) -> str:
    """BigQuery's reason code of a failed query: ``invalidQuery`` for bad SQL or a value it cannot compute."""
    return str(_first_error(exc).get("reason") or "")


def bigquery_warehouse(connection: BigQueryConnection) -> BigQueryWarehouse:
    """The warehouse of a BigQuery destination (what ``BigQueryLoader.warehouse()`` returns)."""
    return BigQueryWarehouse(connection)


class BigQueryWarehouse(Warehouse):
    """Builds models in the datasets of ``connection``'s settings."""

    name = "bigquery"
    errors: ClassVar[tuple[type[BaseException], ...]] = _google_errors()
    #: How long a load may take between stamping ``_loaded_at`` and committing: an incremental run re-reads
    #: this far behind the previous run's start, so a load that committed late is merged, not skipped.
    late_commit_margin: ClassVar[dt.timedelta] = dt.timedelta(minutes=15)
    #: Suffixes of the work tables a build leaves nowhere (dropped in ``finally``).
    NEW, WINDOW, CHECK = "__elt_new", "__elt_window", "__elt_check"

    def __init__(self, connection: BigQueryConnection) -> None:
        self.connection = connection
        self.settings = connection.settings
        # model_state is one small table: its writes from parallel builds take turns.
        self._state_lock = threading.Lock()
        self._state_ready = False

    # --- names and SQL -----------------------------------------------------------------

    def table_id(self, relation: str) -> str:
        """``schema.name`` (logical) -> `` `project.<prefix>schema.name` ``."""
        schema, _, name = relation.partition(".")
        return quote(self.settings.table_id(schema, name))

    def translate(self, model: Model) -> str:
        """The model's SELECT in BigQuery SQL, reading the destination's datasets."""
        tree = sqlglot.parse_one(transpile(model.sql, "bigquery", where=model.path), read="bigquery")
        for table in tree.find_all(exp.Table):
            if table.args.get("catalog") is None and table.db in _LAYERS:
                table.set("db", exp.to_identifier(self.settings.dataset(table.db)))
                table.set("catalog", exp.to_identifier(self.settings.project))
        return tree.sql(dialect="bigquery")

    def statement(self, model: Model) -> str:
        kind = model.config.materialized
        # A materialized view is built as a table here (see the module's docstring); an incremental
        # model is created so once, then each run MERGEs its window into it by unique_key.
        note = {"materialized_view": "-- built as a table on BigQuery\n",
                "incremental": "-- the first build (and --full-refresh); later runs MERGE the window by unique_key\n",
                }.get(kind, "")
        return (f"{note}CREATE OR REPLACE {'VIEW' if kind == 'view' else 'TABLE'} {self.table_id(model.relation)}"
                f" AS\n{self.translate(model)}")

    def check_sql(self, test: DataTest, relation: str, number: int = 0) -> tuple[str, dict[str, Any]]:
        """The query counting what breaks ``test`` in ``relation`` (the same rules as
        :func:`elt.transforms.datatests.check_sql`, in BigQuery SQL), and its parameters (``number``
        keeps their names apart when several tests run as one query)."""
        table = self.table_id(relation)
        cols = [quote(c) for c in test.columns]
        if test.kind == "unique":
            return (f"SELECT COUNT(*) AS n FROM (SELECT 1 FROM {table} WHERE {' AND '.join(f'{c} IS NOT NULL' for c in cols)}"
                    f" GROUP BY {', '.join(cols)} HAVING COUNT(*) > 1)"), {}
        if test.kind == "not_null":
            return f"SELECT COUNT(*) AS n FROM {table} WHERE {' OR '.join(f'{c} IS NULL' for c in cols)}", {}
        if test.kind == "accepted_values":
            return (f"SELECT COUNT(*) AS n FROM {table} WHERE {cols[0]} IS NOT NULL"
                    f" AND CAST({cols[0]} AS STRING) NOT IN UNNEST(@accepted_{number})"), {f"accepted_{number}": list(test.args)}
        if test.kind == "relationships":
            schema, other, column = test.args[0].split(".")
            return (f"SELECT COUNT(*) AS n FROM {table} AS child WHERE child.{cols[0]} IS NOT NULL AND NOT EXISTS"
                    f" (SELECT 1 FROM {self.table_id(f'{schema}.{other}')} AS parent"
                    f" WHERE parent.{quote(column)} = child.{cols[0]})"), {}
        if test.kind == "row_count":
            return f"SELECT IF(COUNT(*) <= {int(test.args[0])}, 1, 0) AS n FROM {table}", {}
        if test.kind == "freshness":
            # No rows at all is as stale as old rows: both mean the data stopped arriving.
            return (f"SELECT IF(COALESCE(MAX(CAST({cols[0]} AS TIMESTAMP)) < TIMESTAMP_SUB(CURRENT_TIMESTAMP(),"
                    f" INTERVAL {parse_duration(test.args[0])} SECOND), TRUE), 1, 0) AS n FROM {table}"), {}
        if test.kind == "readable":
            # Every column of every row computed (BigQuery prunes unread columns, so SELECT * would not).
            return f"SELECT COUNTIF(TO_JSON_STRING(r) IS NULL) AS n FROM {table} AS r", {}
        raise ValueError(f"unknown test kind {test.kind!r}")

    def run_checks(self, tests: Collection[DataTest], relation: str) -> list[DataTestResult]:
        """Every test of a model in one query (one job to wait for, not one per test)."""
        tests = list(tests)
        if not tests:
            return []
        parts, params = [], {}
        for number, test in enumerate(tests):
            sql, values = self.check_sql(test, relation, number)
            parts.append(f"({sql}) AS t{number}")
            params.update(values)
        counts = self.connection.query("SELECT " + ",\n       ".join(parts), params)[0]
        return [DataTestResult(test, int(counts[f"t{number}"])) for number, test in enumerate(tests)]

    # --- the seam ------------------------------------------------------------------------

    def prepare(self, schemas: Collection[str]) -> set[str]:
        from google.api_core.exceptions import NotFound

        for schema in sorted(schemas):
            self.connection.ensure_dataset(schema)
        existing = set()
        for layer in _LISTED:
            try:
                tables = self.connection.client.list_tables(f"{self.settings.project}.{self.settings.dataset(layer)}")
                existing |= {f"{layer}.{t.table_id}" for t in tables}
            except NotFound:  # nothing loaded (or built) there yet
                continue
        return existing

    def build(self, model: Model, *, full_refresh: bool, judge: Judge, recomputed: Collection[str] = ()) -> Built:
        sql = self.translate(model)
        try:
            return self._build(model, sql, full_refresh, judge)
        except self.errors as exc:
            readable = next((t for t in model.config.tests if t.kind == "readable"), None)
            if readable is not None and _reason(exc) == "invalidQuery":
                # A cast failing on some row fails the CREATE (or the whole-row test) with BigQuery's bare
                # "Could not convert ...": compute each column on its own to say which one it is.
                self._name_unreadable(model, sql, readable)
            raise

    def _name_unreadable(self, model: Model, sql: str, test: DataTest) -> None:
        """Raise the ``readable`` test's error naming the first column some row cannot be computed for, if one is."""
        check = model.relation + self.CHECK
        with self._work("VIEW", check):
            try:
                # A view computes nothing when created: its columns are known without reading a row.
                self.connection.query(f"CREATE OR REPLACE VIEW {self.table_id(check)} AS\n{sql}")
                columns = [f.name for f in self._get(check).schema]
            except self.errors:
                return  # not a row's value but the SQL itself: BigQuery's error says it best
            failing: list[tuple[str, str]] = []
            for column in columns:
                try:
                    # Only this column is computed (BigQuery reads the columns a query names).
                    self.connection.query(f"SELECT COUNTIF(TO_JSON_STRING({quote(column)}) IS NULL) AS n"
                                          f" FROM {self.table_id(check)}")
                except self.errors as exc:
                    if _reason(exc) == "invalidQuery":  # not a quota or the byte guard: a value
                        failing.append((column, _message(exc)))
        if failing and (len(failing) < len(columns) or len(columns) == 1):
            column, error = failing[0]
            raise unreadable_column(test, model.relation, column, error, "JSON") from None

    def _build(self, model: Model, sql: str, full_refresh: bool, judge: Judge) -> Built:
        existing = self._existing(model.relation)
        kind = model.config.materialized
        if not full_refresh and existing is not None:
            if kind == "incremental" and existing.table_type == "TABLE":
                return self._merge(model, sql, existing, judge)
            if kind == "view" and existing.table_type == "VIEW" and existing.description == model_comment(model):
                return Built(0, judge(self.run_checks(model.config.tests, model.relation)), "kept (unchanged)")
        if kind == "view":
            return self._view(model, sql, existing, judge)
        return self._table(model, sql, existing, judge)

    # --- materialisations ------------------------------------------------------------------

    def _view(self, model: Model, sql: str, existing: Any, judge: Judge) -> Built:
        live = (f"CREATE OR REPLACE VIEW {self.table_id(model.relation)}"
                f" OPTIONS (description = {string(model_comment(model))}) AS\n{sql}")
        replaces_a_view = existing is None or existing.table_type == "VIEW"
        if not model.config.tests and replaces_a_view:
            # Nothing to check first: BigQuery validates the SQL as it replaces the view, or keeps the old one.
            self.connection.query(live)
            return Built(0, [], "created" if existing is None else "replaced")
        new = model.relation + self.NEW
        with self._work("VIEW", new) as work:
            self.connection.query(f"CREATE OR REPLACE VIEW {self.table_id(new)} AS\n{sql}")
            # Tested before it replaces anything: a failing test keeps the last good version.
            tests = judge(self.run_checks(model.config.tests, new))
            if not replaces_a_view:
                self._drop(model.relation, existing.table_type)  # a table becoming a view, once the view works
            self._finish(work, live)
        return Built(0, tests, "created" if existing is None else "replaced")

    def _table(self, model: Model, sql: str, existing: Any, judge: Judge) -> Built:
        # Taken before the SELECT runs: see late_commit_margin.
        horizon = self._horizon() if model.config.materialized == "incremental" else None
        action = "created" if existing is None else "replaced"
        tests: list[DataTestResult] = []
        replaces_a_table = existing is None or existing.table_type == "TABLE"
        if not model.config.tests and not model.config.unique_key and replaces_a_table:
            # Nothing to check first: CREATE OR REPLACE replaces the table in one step, or fails and keeps it.
            self.connection.query(f"CREATE OR REPLACE TABLE {self.table_id(model.relation)}"
                                  f" OPTIONS (description = {string(model_comment(model))}) AS\n{sql}")
            rows = int(self._get(model.relation).num_rows or 0)
        else:
            new = model.relation + self.NEW
            with self._work("TABLE", new) as work:
                self.connection.query(f"CREATE OR REPLACE TABLE {self.table_id(new)} AS\n{sql}")
                rows = int(self._get(new).num_rows or 0)
                tests = self._check(model, new, judge)
                if not replaces_a_table:
                    self._drop(model.relation, existing.table_type)  # a view becoming a table, once the table passed
                self._replace(model, new, work)
        if horizon is not None:
            self._record(model, horizon, full_refresh=True)
        return Built(rows, tests, action)

    def _merge(self, model: Model, sql: str, existing: Any, judge: Judge) -> Built:
        stored = {f.name: f for f in existing.schema}
        mark = str(model.config.watermark)
        if mark not in stored:
            raise ModelError(f"{model.path}: watermark {mark} is not a column of {model.relation}; name one of"
                             f" {', '.join(stored)}, or rebuild it with"
                             f" `elt transform --full-refresh --select {model.relation}`")
        newest = self.connection.query(f"SELECT MAX({quote(mark)}) AS v FROM {self.table_id(model.relation)}")[0]["v"]
        try:
            since = incremental.window_start(model, newest, self._state(model.relation), stored[mark].field_type)
        except incremental.IncrementalError as exc:
            raise ModelError(str(exc)) from None
        horizon = self._horizon()  # before the window is read
        window, new = model.relation + self.WINDOW, model.relation + self.NEW
        where = "" if since is None else f" WHERE m.{quote(mark)} >= {literal(since)}"
        with self._work("TABLE", window, new) as work:
            # The window's rows, computed once: merged, and the set a row of the window must be in to stay.
            self.connection.query(f"CREATE OR REPLACE TABLE {self.table_id(window)} AS\nSELECT * FROM ({sql}) AS m{where}")
            columns = [f.name for f in self._get(window).schema]
            if columns != list(stored):
                raise ModelError(
                    f"{model.path}: the SELECT's columns ({', '.join(columns)}) differ from {model.relation}'s"
                    f" ({', '.join(stored)}); rebuild it with `elt transform --full-refresh --select {model.relation}`")
            self._copy(model.relation, new)
            result = self.connection.query(self._merge_sql(model, stored, new, window, since) + ";\nSELECT @@row_count AS n")
            merged = int(result[0]["n"] or 0) if result else 0
            tests = self._check(model, new, judge)
            if merged:  # nothing merged: the live table is already this version
                self._replace(model, new, work)
        self._record(model, horizon, full_refresh=False)
        return Built(merged, tests, "merged")

    def _merge_sql(self, model: Model, stored: dict[str, Any], target: str, window: str, since: Any) -> str:
        """The MERGE of the window into ``target``: changed rows updated, new ones inserted, gone ones deleted."""
        keys = list(model.config.unique_key)
        columns = list(stored)
        rest = [c for c in columns if c not in keys]

        def value(alias: str, column: str) -> str:
            field = stored[column]
            # JSON, arrays and structs have no equality in BigQuery: compare their JSON text.
            if field.field_type in ("JSON", "RECORD", "STRUCT") or field.mode == "REPEATED":
                return f"TO_JSON_STRING({alias}.{quote(column)})"
            return f"{alias}.{quote(column)}"

        lines = [f"MERGE {self.table_id(target)} AS t", f"USING {self.table_id(window)} AS w",
                 "ON " + " AND ".join(f"t.{quote(k)} = w.{quote(k)}" for k in keys)]
        if rest:
            # Rows that come back identical are not rewritten (and not counted).
            same = " AND ".join(f"{value('t', c)} IS NOT DISTINCT FROM {value('w', c)}" for c in rest)
            lines.append(f"WHEN MATCHED AND NOT ({same}) THEN UPDATE SET "
                         + ", ".join(f"{quote(c)} = w.{quote(c)}" for c in rest))
        lines.append(f"WHEN NOT MATCHED BY TARGET THEN INSERT ({', '.join(map(quote, columns))})"
                     f" VALUES ({', '.join(f'w.{quote(c)}' for c in columns)})")
        if since is not None:
            # Inside the window the model's output is complete: a row of the table it no longer yields is gone.
            lines.append(f"WHEN NOT MATCHED BY SOURCE AND t.{quote(str(model.config.watermark))} >= {literal(since)}"
                         " THEN DELETE")
        return "\n".join(lines)

    def _check(self, model: Model, relation: str, judge: Judge) -> list[DataTestResult]:
        """``unique_key`` (BigQuery enforces no unique constraint) and the model's tests, in one query."""
        key = [DataTest("unique", tuple(model.config.unique_key))] if model.config.unique_key else []
        results = self.run_checks([*key, *model.config.tests], relation)
        if key and results[0].failures:
            raise ModelError(
                f"{model.path}: unique_key ({', '.join(model.config.unique_key)}) is not unique in the new"
                f" {model.relation}: {results[0].failures} duplicate key groups. Deduplicate in the SELECT, or fix"
                " unique_key")
        return judge(results[len(key):])

    # --- metadata (API calls, not billed) ---------------------------------------------------

    def _get(self, relation: str) -> Any:
        schema, _, name = relation.partition(".")
        return self.connection.client.get_table(self.settings.table_id(schema, name))

    def _existing(self, relation: str) -> Any:
        from google.api_core.exceptions import NotFound

        try:
            return self._get(relation)
        except NotFound:
            return None

    def _copy(self, source: str, target: str) -> None:
        """Replace ``target`` with a copy of ``source`` in one step (copy jobs are not billed)."""
        from google.cloud import bigquery

        src_schema, _, src_name = source.partition(".")
        dst_schema, _, dst_name = target.partition(".")
        config = bigquery.CopyJobConfig(write_disposition="WRITE_TRUNCATE")
        self.connection.client.copy_table(self.settings.table_id(src_schema, src_name),
                                          self.settings.table_id(dst_schema, dst_name), job_config=config).result()

    def _replace(self, model: Model, new: str, work: list[str]) -> None:
        self._copy(new, model.relation)
        # The copy takes the new table's metadata: mark the live table as this model's build.
        self._finish(work, f"ALTER TABLE {self.table_id(model.relation)}"
                           f" SET OPTIONS (description = {string(model_comment(model))})")

    @contextlib.contextmanager
    def _work(self, kind: str, *relations: str) -> Iterator[list[str]]:
        """Work relations (``<name>__elt_new``, ...) of one build: dropped on the way out, whatever happens."""
        work = [f"DROP {kind} IF EXISTS {self.table_id(r)}" for r in relations]
        try:
            yield work
        finally:
            if work:
                self.connection.query(";\n".join(work))

    def _finish(self, work: list[str], statement: str) -> None:
        """Run a build's last statement and drop its work relations in the same script (one job, not several)."""
        self.connection.query(";\n".join([statement, *work]))
        work.clear()

    def _drop(self, relation: str, table_type: str) -> None:
        kind = "VIEW" if table_type == "VIEW" else "MATERIALIZED VIEW" if table_type == "MATERIALIZED_VIEW" else "TABLE"
        self.connection.query(f"DROP {kind} IF EXISTS {self.table_id(relation)}")

    # --- incremental state (pipeline.model_state, as on PostgreSQL) ----------------------------

    def _horizon(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) - self.late_commit_margin

    def _state_table(self) -> str:
        if not self._state_ready:
            self.connection.ensure_dataset("pipeline")
            self.connection.query(f"CREATE TABLE IF NOT EXISTS {self.table_id('pipeline.model_state')}"
                                  " (relation STRING NOT NULL, full_refresh_at TIMESTAMP, merged_at TIMESTAMP,"
                                  " horizon TIMESTAMP)")
            self._state_ready = True
        return self.table_id("pipeline.model_state")

    def _state(self, relation: str) -> dt.datetime | None:
        with self._state_lock:
            rows = self.connection.query(f"SELECT horizon FROM {self._state_table()} WHERE relation = @r",
                                         {"r": relation})
        return rows[0]["horizon"] if rows else None

    def _record(self, model: Model, horizon: dt.datetime, *, full_refresh: bool) -> None:
        """Remember this build: when it last fully refreshed or merged, and the horizon of its read."""
        when = "CURRENT_TIMESTAMP()"
        with self._state_lock:
            self.connection.query(
                f"MERGE {self._state_table()} AS s USING (SELECT @r AS relation, @h AS horizon) AS n"
                " ON s.relation = n.relation"
                " WHEN MATCHED THEN UPDATE SET horizon = n.horizon, "
                + (f"full_refresh_at = {when}" if full_refresh else f"merged_at = {when}")
                + " WHEN NOT MATCHED THEN INSERT (relation, full_refresh_at, merged_at, horizon) VALUES (n.relation, "
                + (f"{when}, NULL" if full_refresh else f"NULL, {when}") + ", n.horizon)",
                {"r": model.relation, "h": horizon})
