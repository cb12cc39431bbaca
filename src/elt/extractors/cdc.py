"""Change data capture for PostgreSQL sources: a trigger-fed change table, read below the snapshot horizon.

``elt cdc install SOURCE_URL schema.table`` prints (``--apply`` checks the
privileges it needs, then runs) the DDL below: a change table
``elt_cdc.changes`` with one row per insert, update or delete (before and
after images as JSON, a sequence id, the transaction id), a trigger function,
and a trigger on the table. :class:`CdcExtractor` then reads the changes
incrementally, so deletes and every intermediate version are captured, not
just the latest state.

No change is skipped: a read takes the oldest transaction still running on
the source (``pg_snapshot_xmin(pg_current_snapshot())``) as its horizon and
reads only changes of transactions below it, ordered by ``(txid, seq)``.
Those transactions have all ended, so nothing can later commit below the
horizon, and the watermark (a transaction id) never passes a change that is
not yet visible. A transaction held open for an hour holds newer changes back
for that hour (``elt cdc status`` shows it); it never loses them.

The trigger function is ``SECURITY DEFINER`` (owned by the installing role)
with a pinned ``search_path``: roles that write the captured table need no
rights on ``elt_cdc``, and cannot redirect the insert to a table of their own.

Changes that are in the destination and older than the stream's
``retention`` are deleted from the change table after each batch commits;
``elt_cdc.readers`` records how far each table has been loaded, so
``elt cdc status`` shows the backlog and the lag.

``elt cdc remove SOURCE_URL schema.table`` prints (``--apply`` runs) the DDL
that removes the trigger; the change table and function stay until the last
table is removed (the printed SQL says how to drop them).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Iterator
from typing import Any, ClassVar

import sqlalchemy as sa

from elt.errors import ConfigError
from elt.extractors.base import Batch, Cursor
from elt.extractors.sql import SqlExtractor
from elt.logs import get_logger
from elt.state import StreamState

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")

PRIVILEGES = """\
-- Privileges: the role that runs this needs CREATE on the database (or to own an
-- existing schema elt_cdc) and to own the captured table (CREATE/DROP TRIGGER).
-- It owns the trigger function, which runs with its rights (SECURITY DEFINER):
-- roles that write the table need nothing on elt_cdc.
-- The role elt reads with needs:
--   GRANT USAGE ON SCHEMA elt_cdc TO reader;
--   GRANT SELECT, DELETE ON elt_cdc.changes TO reader;            -- DELETE: pruning
--   GRANT SELECT, INSERT, UPDATE ON elt_cdc.readers TO reader;    -- progress for `elt cdc status`
"""

SETUP = PRIVILEGES + """\
-- elt change capture: one row per change of every captured table.
CREATE SCHEMA IF NOT EXISTS elt_cdc;

CREATE TABLE IF NOT EXISTS elt_cdc.changes (
    seq         bigserial   PRIMARY KEY,     -- read order; elt's cursor
    table_name  text        NOT NULL,        -- schema.table
    op          text        NOT NULL CHECK (op IN ('insert', 'update', 'delete')),
    before      jsonb,                       -- the row before an update or delete
    after       jsonb,                       -- the row after an insert or update
    changed_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    txid        bigint      NOT NULL DEFAULT txid_current()
);
CREATE INDEX IF NOT EXISTS changes_table_seq ON elt_cdc.changes (table_name, seq);
-- The read order: one index range per page, below the horizon.
CREATE INDEX IF NOT EXISTS changes_table_txid_seq ON elt_cdc.changes (table_name, txid, seq);

-- How far each captured table has been loaded (written by the reader after each commit).
CREATE TABLE IF NOT EXISTS elt_cdc.readers (
    table_name  text        PRIMARY KEY,     -- schema.table
    loaded_txid bigint      NOT NULL,        -- every change below this transaction id is in the destination
    loaded_at   timestamptz NOT NULL DEFAULT now()
);

-- AFTER ... FOR EACH ROW: sees the final row, and a rolled-back transaction leaves no change behind.
-- SECURITY DEFINER with a pinned search_path: the writer of the table needs no rights on elt_cdc,
-- and no object of the writer's can stand in for one the function uses.
CREATE OR REPLACE FUNCTION elt_cdc.capture() RETURNS trigger LANGUAGE plpgsql
    SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO elt_cdc.changes (table_name, op, before, after)
    VALUES (TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, lower(TG_OP),
            CASE WHEN TG_OP IN ('UPDATE', 'DELETE') THEN to_jsonb(OLD) END,
            CASE WHEN TG_OP IN ('INSERT', 'UPDATE') THEN to_jsonb(NEW) END);
    RETURN NULL;
END
$$;
REVOKE ALL ON FUNCTION elt_cdc.capture() FROM PUBLIC;
"""

#: What ``install`` needs, checked before anything changes: (what, the check, the fix).
_INSTALL_CHECKS = """
SELECT
    coalesce(has_database_privilege(current_database(), 'CREATE')
             OR (SELECT pg_has_role(nspowner, 'USAGE') FROM pg_namespace WHERE nspname = 'elt_cdc'), false)
        AS schema_ok,
    coalesce((SELECT pg_has_role(relowner, 'USAGE') FROM pg_class WHERE oid = to_regclass(%(table)s)), false)
        AS table_ok,
    to_regclass(%(table)s) IS NOT NULL AS table_exists,
    current_user AS role
"""


def missing_install_privileges(conn: Any, table: str) -> list[str]:
    """What the connected role lacks to run :func:`install_sql` (empty: it may), each with its fix."""
    schema, name = _qualified(table)
    quoted = f'"{schema}"."{name}"'
    row = conn.execute(_INSTALL_CHECKS, {"table": quoted}).fetchone()
    schema_ok, table_ok, exists, role = row
    missing = []
    if not exists:
        missing.append(f"table {schema}.{name} does not exist (or {role} cannot see it)")
    elif not table_ok:
        missing.append(f"{role} does not own {schema}.{name}: run install as its owner (triggers need ownership)")
    if not schema_ok:
        missing.append(f"{role} cannot create schema elt_cdc: GRANT CREATE ON DATABASE ... TO {role}, or run as its owner")
    return missing


def _qualified(table: str) -> tuple[str, str]:
    schema, _, name = table.rpartition(".")
    schema = schema or "public"
    if not (_NAME.match(schema) and _NAME.match(name)):
        raise ConfigError(f"table {table!r} must be schema.table with plain names (letters, digits, _)")
    return schema, name


def install_sql(table: str) -> str:
    """The DDL that starts capturing ``table``'s changes (idempotent)."""
    schema, name = _qualified(table)
    return SETUP + f"""
-- Capture {schema}.{name}.
DROP TRIGGER IF EXISTS elt_cdc_capture ON "{schema}"."{name}";
CREATE TRIGGER elt_cdc_capture AFTER INSERT OR UPDATE OR DELETE ON "{schema}"."{name}"
    FOR EACH ROW EXECUTE FUNCTION elt_cdc.capture();
"""


def remove_sql(table: str) -> str:
    """The DDL that stops capturing ``table`` (the captured changes stay)."""
    schema, name = _qualified(table)
    return f"""\
-- Stop capturing {schema}.{name}; its rows in elt_cdc.changes stay until you delete them:
--   DELETE FROM elt_cdc.changes WHERE table_name = '{schema}.{name}';
-- When no table is captured any more, remove everything with:
--   DROP SCHEMA elt_cdc CASCADE;
DROP TRIGGER IF EXISTS elt_cdc_capture ON "{schema}"."{name}";
"""


class CdcExtractor(SqlExtractor):
    """Every change of ``source_table`` captured by ``elt cdc install``, in commit-safe order::

        class OrderChanges(CdcExtractor):
            name = "order_changes"
            url = from_env("SHOP_DATABASE_URL")
            source_table = "public.orders"

    Records are ``{seq, op, table_name, before, after, changed_at, txid}``;
    the current state of a row is its latest ``after`` (``before`` for a delete).
    Only changes of transactions below the source's snapshot horizon are read
    (see the module docstring), so no lookback is needed; the changes of the
    last transaction read are read again (an inclusive bound) and stored once.
    """

    source_table: ClassVar[str] = ""
    primary_key: ClassVar[Any] = "seq"
    cursor: ClassVar[Any] = Cursor("txid", kind="integer")
    write_strategy: ClassVar[Any] = "append"
    #: Loaded changes older than this are deleted from ``elt_cdc.changes``; ``None`` keeps them all.
    retention: ClassVar[dt.timedelta | None] = dt.timedelta(days=1)

    #: The state key that says the watermark is a transaction id (older versions kept a sequence id).
    CURSOR_STATE: ClassVar[str] = "cdc_cursor"

    def __init__(self, **settings: Any) -> None:
        source_table = settings.get("source_table") or self.source_table
        if not source_table:
            raise ConfigError(f"{type(self).__name__}: set source_table (the schema.table captured with `elt cdc install`)")
        self._captured = ".".join(_qualified(source_table))
        self._horizon: int | None = None
        query = ("SELECT seq, op, table_name, before, after, changed_at, txid FROM elt_cdc.changes"
                 f" WHERE table_name = '{self._captured}'")
        super().__init__(**{"query": query, **settings})

    def relation(self) -> sa.FromClause:
        # Only transactions that have ended: nothing can commit below the horizon any more.
        query = f"{self.query} AND txid < {int(self._horizon or 0)}"
        return sa.text(query).columns().subquery("src")

    def horizon(self, conn: sa.Connection) -> int:
        """The oldest transaction id still running on the source (every change below it is final).

        A copy of the change table in another database (a sample file, an export) has no running
        transactions writing it: every change in it is final.
        """
        if conn.dialect.name != "postgresql":
            return int(conn.execute(sa.text(f"SELECT coalesce(max(txid), 0) + 1 FROM ({self.query}) c")).scalar_one())
        return int(conn.execute(sa.text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")).scalar_one())

    def records(self, state: StreamState) -> Iterator[list[dict[str, Any]]]:
        engine = self.engine()
        try:
            with engine.connect() as conn:
                self._horizon = self.horizon(conn)
        finally:
            engine.dispose()
        if state.since is not None and state.values.get(self.CURSOR_STATE) != "txid":
            # A watermark from before the horizon read counts sequence ids, not transactions:
            # read what the change table holds again (identical changes are stored once).
            state = dataclasses.replace(state, since=None)
        yield from super().records(state)

    def extract(self, state: StreamState) -> Iterator[Batch]:
        for batch in super().extract(state):
            batch.state[self.CURSOR_STATE] = "txid"
            txids = [r["txid"] for r in batch.records if isinstance(r, dict) and r.get("txid") is not None]
            if txids:
                # Transactions below the batch's last one are complete in this and earlier batches.
                batch.after_commit = _chain(batch.after_commit, lambda top=max(txids): self.loaded(top))
            yield batch

    def loaded(self, below_txid: int) -> None:
        """After a commit: record progress on the source and prune what retention allows.

        A failure here costs no data (the changes stay, and are read again as
        identical records), so it is a warning with the fix, not an error.
        """
        engine = self.engine()
        try:
            with engine.begin() as conn:
                conn.execute(sa.text(
                    "INSERT INTO elt_cdc.readers (table_name, loaded_txid) VALUES (:t, :x)"
                    " ON CONFLICT (table_name) DO UPDATE SET loaded_txid = greatest(elt_cdc.readers.loaded_txid,"
                    " excluded.loaded_txid), loaded_at = now()"), {"t": self._captured, "x": below_txid})
                if self.retention is not None:
                    conn.execute(sa.text(
                        "DELETE FROM elt_cdc.changes WHERE table_name = :t AND txid < :x"
                        " AND changed_at < now() - make_interval(secs => :keep)"),
                        {"t": self._captured, "x": below_txid, "keep": self.retention.total_seconds()})
        except sa.exc.SQLAlchemyError as exc:
            get_logger(stream=self.name).warning(
                "could not record CDC progress or prune elt_cdc.changes; grant the reader SELECT, INSERT, UPDATE"
                " on elt_cdc.readers and DELETE on elt_cdc.changes (see `elt cdc install`)",
                error=str(exc.orig if hasattr(exc, "orig") else exc).splitlines()[0])
        finally:
            engine.dispose()


def _chain(first: Any, second: Any) -> Any:
    if first is None:
        return second

    def both() -> None:
        first()
        second()
    return both


STATUS_SQL = """
-- Per captured table: changes not yet loaded (above the reader's progress), how old the
-- oldest is, and how many are committed but held back by a transaction still open.
SELECT c.table_name,
       count(*) FILTER (WHERE c.txid >= coalesce(r.loaded_txid, 0))                          AS backlog,
       now() - min(c.changed_at) FILTER (WHERE c.txid >= coalesce(r.loaded_txid, 0))         AS lag,
       count(*) FILTER (WHERE c.txid >= pg_snapshot_xmin(pg_current_snapshot())::text::bigint) AS held_back,
       count(*)                                                                              AS kept,
       max(r.loaded_at)                                                                      AS loaded_at
FROM elt_cdc.changes c
LEFT JOIN elt_cdc.readers r USING (table_name)
GROUP BY c.table_name
ORDER BY c.table_name
"""

OLDEST_TRANSACTION_SQL = """
-- The oldest transaction that holds an id: changes after it wait until it ends.
SELECT pid, usename, now() - xact_start AS age, state
FROM pg_stat_activity
WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()
ORDER BY xact_start
LIMIT 1
"""


def cdc_status(conn: Any) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Backlog and lag per captured table, and the oldest open transaction (``conn``: psycopg, dict rows)."""
    return conn.execute(STATUS_SQL).fetchall(), conn.execute(OLDEST_TRANSACTION_SQL).fetchone()
