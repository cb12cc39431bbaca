"""``SqlExtractor``: a table or query of any database SQLAlchemy reaches, read in keyset pages.

::

    class Orders(SqlExtractor):
        name = "orders"
        url = from_env("SHOP_DATABASE_URL")          # postgresql://, mysql+pymysql://, sqlite:///...
        table = "public.orders"                      # or query = "SELECT ... FROM ... JOIN ..."
        primary_key = "id"
        cursor = Cursor("updated_at", lookback=timedelta(minutes=15))
        detect_deletes = True

Incremental reads page through ``ORDER BY cursor, key`` with a row-value
keyset predicate ``(cursor, key) > (last cursor, last key)``, so thousands of
rows sharing one timestamp never straddle a page boundary wrongly, and every
page is a short query that the planner answers from an index on
``(cursor, key)`` as a range (no rescan of the rows before it; no transaction
held open on the source for the whole sync). Each page streams through a
server-side cursor: memory stays flat. The ``lookback`` re-reads rows whose
transaction committed after later timestamps were read; the write strategy
makes the overlap harmless.

Rows whose cursor is NULL cannot be placed by a watermark: they are read in a
pass of their own after the cursor pages, on every run (keyset-paged by the
key), and never move the watermark. The write strategy stores an unchanged
row once.

The source session runs in UTC (PostgreSQL, MySQL), so a ``timestamp
without time zone`` cursor compares with the watermark exactly whatever the
server's ``TimeZone`` is, and timestamptz keys read the same text every time.

Values keep their types into ``_raw_payload``: timestamps with their zone
(ISO 8601, UTC), numerics exact (as strings), JSON as JSON, bytes as base64 (a
note is logged once per column). Values JSON cannot hold keep PostgreSQL's
own spelling as strings: float ``"NaN"``, ``"Infinity"``, ``"-Infinity"``;
timestamp and date ``"infinity"``, ``"-infinity"``.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import sqlalchemy as sa

from elt.errors import ConfigError
from elt.extractors.base import Extractor
from elt.logs import get_logger
from elt.secrets import Secret, redact, register_connection
from elt.state import StreamState


def engine_url(url: str) -> str:
    """PostgreSQL URLs without a driver use psycopg 3 (the one elt installs), not psycopg2.

    A libpq keyword string (``host=db user=app password=... dbname=shop``), which
    PostgreSQL's tools and ``ELT_DATABASE_URL`` accept, is turned into the URL
    SQLAlchemy needs (every keyword passed on to psycopg as it was).
    """
    if "://" not in url and "=" in url:
        from urllib.parse import urlencode

        from psycopg.conninfo import conninfo_to_dict

        return "postgresql+psycopg:///?" + urlencode({k: str(v) for k, v in conninfo_to_dict(url).items()})
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url[len(scheme):]
    return url


#: Statements that pin a new source session to UTC, per SQLAlchemy dialect name.
SESSION_UTC: dict[str, str] = {
    "postgresql": "SET TIME ZONE 'UTC'",
    "mysql": "SET time_zone = '+00:00'",
    "mariadb": "SET time_zone = '+00:00'",
}

#: Dialects that compare row values, ``(a, b) > (x, y)``, and plan them as an index range
#: (SQLite from 3.15). Others get the spelled-out ``a > x OR (a = x AND b > y)``.
ROW_VALUE_DIALECTS = frozenset({"postgresql", "sqlite", "mysql", "mariadb", "duckdb"})


def _non_finite(value: float) -> str:
    """PostgreSQL's own spelling of a float JSON cannot hold (orjson would store ``null``)."""
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def _infinity_loaders(conn: Any) -> None:
    """Read PostgreSQL's ``infinity``/``-infinity`` timestamps and dates as those strings.

    psycopg cannot make a Python ``datetime`` of them and fails the whole
    read; as text they stay data (a cursor of that value is then rejected to
    dead letters with its reason, not lost).
    """
    for name, loader in _infinity_loader_classes().items():
        conn.adapters.register_loader(name, loader)


@functools.cache
def _infinity_loader_classes() -> dict[str, type]:
    from psycopg.types.datetime import DateLoader, TimestampLoader, TimestamptzLoader

    def subclass(base: Any) -> type:
        def load(self: Any, data: Any) -> Any:
            text = bytes(data)
            if text in (b"infinity", b"-infinity"):
                return text.decode()
            return base.load(self, data)
        return type(f"Infinity{base.__name__}", (base,), {"load": load})

    return {"timestamp": subclass(TimestampLoader), "timestamptz": subclass(TimestamptzLoader),
            "date": subclass(DateLoader)}


class SqlExtractor(Extractor):
    """Rows of ``table`` (or ``query``) in ``url``'s database."""

    #: SQLAlchemy URL of the source (a ``from_env(...)`` secret, usually).
    url: ClassVar[str | Secret | None] = None
    #: ``schema.table`` or ``table``, or ``("schema", "name")`` for names with dots or quotes;
    #: or set ``query`` instead.
    table: ClassVar[str | tuple[str, str] | None] = None
    #: A SELECT whose rows are the stream (used as a subquery, so it can join and filter).
    query: ClassVar[str | None] = None
    #: Rows per keyset page: each page is one short query on the source.
    page_size: ClassVar[int] = 50_000
    #: Offer key reconciliation (`elt reconcile`): keys gone from the source get ``_deleted_at``.
    detect_deletes: ClassVar[bool] = False

    def _check(self) -> None:
        super()._check()
        label = f"stream {self.name!r}"
        if not self.url:
            raise ConfigError(f"{label}: set url (the source database, e.g. url = from_env('SOURCE_DATABASE_URL'))")
        if bool(self.table) == bool(self.query):
            raise ConfigError(f"{label}: set exactly one of table or query")

    # --- connection -------------------------------------------------------------------

    def engine(self) -> sa.Engine:
        raw = self.url.value if isinstance(self.url, Secret) else str(self.url)
        register_connection(raw)  # whatever the URL's form, its password never reaches a message
        engine = sa.create_engine(engine_url(raw), pool_pre_ping=True)
        sa.event.listen(engine, "connect", self.on_connect)
        return engine

    def on_connect(self, dbapi_conn: Any, _record: Any) -> None:
        """Set up each new source session: UTC, and PostgreSQL's infinite timestamps as text."""
        dialect = self._dialect
        statement = SESSION_UTC.get(dialect)
        if statement:
            cursor = dbapi_conn.cursor()
            cursor.execute(statement)
            cursor.close()
            # Committed, so the pool's rollback on check-in cannot undo it.
            dbapi_conn.commit()
        if dialect == "postgresql" and hasattr(dbapi_conn, "adapters"):
            _infinity_loaders(dbapi_conn)

    def _since_param(self, since: Any) -> sa.BindParameter[Any]:
        if isinstance(since, dt.datetime) and self._dialect == "sqlite":
            return sa.literal(_sqlite_since(since), type_=sa.types.NullType())
        return sa.bindparam("since", since)

    @property
    def _dialect(self) -> str:
        raw = self.url.value if isinstance(self.url, Secret) else str(self.url)
        return sa.engine.make_url(engine_url(raw)).get_backend_name()
    def relation(self) -> sa.FromClause:
        if self.query:
            return sa.text(self.query.strip().rstrip(";")).columns().subquery("src")
        if isinstance(self.table, (tuple, list)):
            schema, name = self.table
        else:
            schema, _, name = str(self.table).rpartition(".")
        return sa.table(name, schema=schema or None)

    @property
    def table_label(self) -> str:
        if isinstance(self.table, (tuple, list)):
            return ".".join(self.table)
        return str(self.table or "the query")

    # --- reading ---------------------------------------------------------------------------

    def order_columns(self) -> list[str]:
        """What pages are ordered (and keyed) by: the cursor, then the primary key."""
        columns = [self.cursor_field] if self.cursor_field else []
        return columns + [k for k in self.key_fields if k not in columns]

    def records(self, state: StreamState) -> Iterator[list[dict[str, Any]]]:
        engine = self.engine()
        log = get_logger(stream=self.name)
        noted: set[str] = set()
        try:
            with engine.connect() as conn:
                row_values = conn.dialect.name in ROW_VALUE_DIALECTS
                since = state.since if self.cursor_field else None
                yield from self._pages(conn, self.order_columns(), since, row_values, noted, log)
                if self.cursor_field:
                    # NULL cursors sort apart (first or last, by dialect) and fail every
                    # comparison: they get a pass of their own, keyed by the primary key.
                    nulls = 0
                    for page in self._pages(conn, list(self.key_fields), None, row_values, noted, log, null_cursor=True):
                        nulls += len(page)
                        yield page
                    if nulls:
                        log.info("rows with a NULL cursor read in their own pass (every run; they do not move the"
                                 " watermark)", cursor=self.cursor_field, rows=nulls)
        except sa.exc.SQLAlchemyError as exc:
            raise ConfigError(redact(
                f"stream {self.name!r}: reading {self.table_label} failed: {str(exc).splitlines()[0]}"
            )) from None
        finally:
            engine.dispose()

    def _pages(self, conn: sa.Connection, order: list[str], since: Any, row_values: bool, noted: set[str], log: Any,
               null_cursor: bool = False) -> Iterator[list[dict[str, Any]]]:
        """Keyset pages ordered by ``order`` (one streamed query when there is no order)."""
        last: tuple[Any, ...] | None = None
        while True:
            statement = self._page(order, since, last, row_values, null_cursor)
            result = conn.execution_options(stream_results=True, yield_per=min(self.page_size, 10_000)).execute(
                statement)
            rows = 0
            for partition in result.partitions():
                page = [self._record(row._mapping, noted, log) for row in partition]
                rows += len(page)
                last = tuple(partition[-1]._mapping[c] for c in order) if order else None
                yield page
            # A short page (or no order at all: one streamed query) is the last one.
            if not order or rows < self.page_size:
                return

    def _page(self, order: list[str], since: Any, last: tuple[Any, ...] | None, row_values: bool = True,
              null_cursor: bool = False) -> sa.Select[Any]:
        src = self.relation()
        statement: sa.Select[Any] = sa.select(sa.text("*")).select_from(src)
        if self.cursor_field:
            cursor: sa.ColumnClause[Any] = sa.column(self.cursor_field)
            statement = statement.where(cursor.is_(None) if null_cursor else cursor.is_not(None))
        if last is not None:
            columns: list[sa.ColumnClause[Any]] = [sa.column(c) for c in order]
            # Row values are what the planner turns into one index range; the OR form
            # is not an index condition, so every page would rescan the rows before it.
            values = [_bind(v) for v in last]
            after = (sa.tuple_(*columns) > sa.tuple_(*values) if row_values and len(order) > 1
                     else _after(columns, values))
            statement = statement.where(after)
        elif since is not None:
            statement = statement.where(sa.column(str(self.cursor_field)) >= self._since_param(since))
        if order:
            statement = statement.order_by(*(sa.column(c) for c in order)).limit(self.page_size)
        return statement

    def _record(self, row: Any, noted: set[str], log: Any) -> dict[str, Any]:
        record = dict(row)
        for column, value in record.items():
            if isinstance(value, float) and not math.isfinite(value):
                record[column] = _non_finite(value)
            elif isinstance(value, (bytes, bytearray, memoryview)) and column not in noted:
                noted.add(column)
                log.info("binary column stored base64-encoded in _raw_payload; decode() it in the stg model",
                         column=column)
        return record

    def source_keys(self) -> Iterator[list[tuple[Any, ...]]]:
        """Every primary key in the source, in pages (for `elt reconcile`)."""
        keys = list(self.key_fields)
        engine = self.engine()
        try:
            with engine.connect() as conn:
                statement = sa.select(*(sa.column(k) for k in keys)).select_from(self.relation())  # type: ignore[var-annotated]
                result = conn.execution_options(stream_results=True, yield_per=50_000).execute(statement)
                for partition in result.partitions():
                    yield [tuple(row) for row in partition]
        finally:
            engine.dispose()


def _sqlite_since(since: dt.datetime) -> str:
    """A timestamp as the text SQLite compares: the UTC second, space-separated, without fraction or zone.

    SQLite stores timestamps as text and compares them as text, so the bound value
    must sort at or before every way the same instant can be written there
    ('2026-03-01 10:31:00', '...T10:31:00Z', '...10:31:00.250', '...+00:00'); a
    value with a zone or a fraction would sort after the plain form and skip the
    rows at exactly the watermark. Dropping the fraction re-reads a little more,
    which the write strategy makes harmless.
    """
    return since.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _bind(value: Any) -> sa.BindParameter[Any]:
    """A page boundary value as a parameter; text goes untyped, so ``'infinity'`` compares as a timestamp."""
    return sa.literal(value, type_=sa.types.NullType()) if isinstance(value, str) else sa.literal(value)


def _after(columns: Sequence[sa.ColumnClause[Any]], values: Sequence[Any]) -> sa.ColumnElement[bool]:
    """``(a, b, c) > (x, y, z)`` spelled out, since not every database compares row values."""
    first, value = columns[0], values[0]
    if len(columns) == 1:
        return first > value
    return sa.or_(first > value, sa.and_(first == value, _after(columns[1:], values[1:])))
