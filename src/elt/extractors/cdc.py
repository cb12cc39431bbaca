"""Change data capture for PostgreSQL sources: a trigger-fed change table, read by sequence id.

``elt cdc install SOURCE_URL schema.table`` prints (``--apply`` runs) the DDL
below: a change table ``elt_cdc.changes`` with one row per insert, update or
delete (before and after images as JSON, a sequence id, the transaction id),
a trigger function, and a trigger on the table. :class:`CdcExtractor` then
reads the changes incrementally by sequence id, so deletes and every
intermediate version are captured, not just the latest state.

``elt cdc remove SOURCE_URL schema.table`` prints (``--apply`` runs) the DDL
that removes the trigger; the change table and function stay until the last
table is removed (the printed SQL says how to drop them).
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from elt.errors import ConfigError
from elt.extractors.base import Cursor
from elt.extractors.sql import SqlExtractor

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")

SETUP = """\
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

-- AFTER ... FOR EACH ROW: sees the final row, and a rolled-back transaction leaves no change behind.
CREATE OR REPLACE FUNCTION elt_cdc.capture() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO elt_cdc.changes (table_name, op, before, after)
    VALUES (TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME, lower(TG_OP),
            CASE WHEN TG_OP IN ('UPDATE', 'DELETE') THEN to_jsonb(OLD) END,
            CASE WHEN TG_OP IN ('INSERT', 'UPDATE') THEN to_jsonb(NEW) END);
    RETURN NULL;
END
$$;
"""


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
    """Every change of ``source_table`` captured by ``elt cdc install``, in order::

        class OrderChanges(CdcExtractor):
            name = "order_changes"
            url = from_env("SHOP_DATABASE_URL")
            source_table = "public.orders"

    Records are ``{seq, op, table_name, before, after, changed_at, txid}``;
    the current state of a row is its latest ``after`` (``before`` for a delete).
    The lookback re-reads the last ``lookback`` sequence ids on every run:
    a transaction that took a sequence id but committed after a later one
    is still read. Re-read changes are identical records, stored once.
    """

    source_table: ClassVar[str] = ""
    primary_key: ClassVar[Any] = "seq"
    cursor: ClassVar[Any] = Cursor("seq", lookback=1000)
    write_strategy: ClassVar[Any] = "append"
    def __init__(self, **settings: Any) -> None:
        source_table = settings.get("source_table") or self.source_table
        if not source_table:
            raise ConfigError(f"{type(self).__name__}: set source_table (the schema.table captured with `elt cdc install`)")
        schema, name = _qualified(source_table)
        query = ("SELECT seq, op, table_name, before, after, changed_at, txid FROM elt_cdc.changes"
                 f" WHERE table_name = '{schema}.{name}'")
        super().__init__(**{"query": query, **settings})
