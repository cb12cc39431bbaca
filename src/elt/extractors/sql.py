"""``SqlExtractor``: a table or query of any database SQLAlchemy reaches, read in keyset pages.

::

    class Orders(SqlExtractor):
        name = "orders"
        url = from_env("SHOP_DATABASE_URL")          # postgresql://, mysql+pymysql://, sqlite:///...
        table = "public.orders"                      # or query = "SELECT ... FROM ... JOIN ..."
        primary_key = "id"
        cursor = Cursor("updated_at", lookback=timedelta(minutes=15))
        detect_deletes = True

Incremental reads page through ``ORDER BY cursor, key`` with a keyset
predicate ``(cursor, key) > (last cursor, last key)``, so thousands of rows
sharing one timestamp never straddle a page boundary wrongly, and every page
is a short query (no transaction held open on the source for the whole
sync). Each page streams through a server-side cursor: memory stays flat.
The ``lookback`` re-reads rows whose transaction committed after later
timestamps were read; the write strategy makes the overlap harmless.

Values keep their types into ``_raw_payload``: timestamps with their zone
(ISO 8601), numerics exact (as strings), JSON as JSON, bytes as base64 (a note
is logged once per column).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import sqlalchemy as sa

from elt.errors import ConfigError
from elt.extractors.base import Extractor
from elt.logs import get_logger
from elt.secrets import Secret, redact, register_connection
from elt.state import StreamState


def engine_url(url: str) -> str:
    """PostgreSQL URLs without a driver use psycopg 3 (the one elt installs), not psycopg2."""
    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url[len(scheme):]
    return url


class SqlExtractor(Extractor):
    """Rows of ``table`` (or ``query``) in ``url``'s database."""

    #: SQLAlchemy URL of the source (a ``from_env(...)`` secret, usually).
    url: ClassVar[str | Secret | None] = None
    #: ``schema.table`` or ``table``; or set ``query`` instead.
    table: ClassVar[str | None] = None
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
        return sa.create_engine(engine_url(raw), pool_pre_ping=True)

    def relation(self) -> sa.FromClause:
        if self.query:
            return sa.text(self.query.strip().rstrip(";")).columns().subquery("src")
        schema, _, name = str(self.table).rpartition(".")
        return sa.table(name, schema=schema or None)

    # --- reading ---------------------------------------------------------------------------

    def order_columns(self) -> list[str]:
        """What pages are ordered (and keyed) by: the cursor, then the primary key."""
        columns = [self.cursor_field] if self.cursor_field else []
        return columns + [k for k in self.key_fields if k not in columns]

    def records(self, state: StreamState) -> Iterator[list[dict[str, Any]]]:
        engine = self.engine()
        log = get_logger(stream=self.name)
        noted: set[str] = set()
        order = self.order_columns()
        since = state.since if self.cursor_field else None
        last: tuple[Any, ...] | None = None
        try:
            with engine.connect() as conn:
                while True:
                    statement = self._page(order, since, last)
                    result = conn.execution_options(stream_results=True, yield_per=min(self.page_size, 10_000)).execute(
                        statement)
                    rows = 0
                    for partition in result.partitions():
                        page = [self._record(row._mapping, noted, log) for row in partition]
                        rows += len(page)
                        last = tuple(page[-1][c] for c in order) if order else None
                        yield page
                    # A short page (or no order at all: one streamed query) is the last one.
                    if not order or rows < self.page_size:
                        return
        except sa.exc.SQLAlchemyError as exc:
            raise ConfigError(redact(
                f"stream {self.name!r}: reading {self.table or 'the query'} failed: {str(exc).splitlines()[0]}"
            )) from None
        finally:
            engine.dispose()

    def _page(self, order: list[str], since: Any, last: tuple[Any, ...] | None) -> sa.Select[Any]:
        src = self.relation()
        statement: sa.Select[Any] = sa.select(sa.text("*")).select_from(src)
        if last is not None:
            statement = statement.where(_after([sa.column(c) for c in order], last))
        elif since is not None:
            statement = statement.where(sa.column(str(self.cursor_field)) >= sa.bindparam("since", since))
        if order:
            statement = statement.order_by(*(sa.column(c) for c in order)).limit(self.page_size)
        return statement

    def _record(self, row: Any, noted: set[str], log: Any) -> dict[str, Any]:
        record = dict(row)
        for column, value in record.items():
            if isinstance(value, (bytes, bytearray, memoryview)) and column not in noted:
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


def _after(columns: Sequence[sa.ColumnClause[Any]], values: tuple[Any, ...]) -> sa.ColumnElement[bool]:
    """``(a, b, c) > (x, y, z)`` spelled out, since not every database compares row values."""
    first, value = columns[0], values[0]
    if len(columns) == 1:
        return first > value
    return sa.or_(first > value, sa.and_(first == value, _after(columns[1:], values[1:])))
