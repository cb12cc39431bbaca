"""Raw tables in PostgreSQL: their columns, and the set-based SQL of each write strategy.

Every batch arrives in a temporary stage table by COPY; one INSERT ... SELECT
then applies the write strategy. Every identifier that comes from a source
(stream and field names) goes through ``sql.Identifier``, never into the SQL
text, so a field called ``"; DROP TABLE x; --`` is just a column name.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from psycopg import sql

from elt.errors import ConfigError
from elt.extractors.base import Extractor, WriteStrategy

#: A statement psycopg can execute.
Statement = sql.SQL | sql.Composed

# PostgreSQL type of a cursor column for each cursor kind (see records.cursor_kind).
CURSOR_TYPES = {"integer": "bigint", "number": "numeric", "timestamp": "timestamptz", "date": "date", "text": "text"}
KIND_OF_TYPE = {
    "bigint": "integer", "integer": "integer", "numeric": "number",
    "timestamp with time zone": "timestamp", "date": "date", "text": "text",
}
META_COLUMNS = ("_raw_payload", "_loaded_at", "_batch_id", "_run_id", "_record_hash", "_row_seq")
GENERATED_VIEW_MARK = "elt:generated"
# Key columns and _record_hash compare byte for byte: the unique index on
# random md5 hashes is the costliest part of a load under a locale collation
# (strcoll per comparison), and a C-collated index cannot be corrupted by an
# OS upgrade that changes the locale's sort order. Equality is the same.
KEY_TEXT = 'text COLLATE "C"'
KEY_SUFFIX = sql.SQL(' COLLATE "C" NOT NULL')
MAX_IDENTIFIER = 63


def short_identifier(name: str, suffix: str) -> str:
    # Index names must stay within 63 bytes however long the table name is.
    return f"elt_{hashlib.md5(name.encode()).hexdigest()[:12]}_{suffix}"


@dataclass
class RawTable:
    """The raw table of one stream and how its batches are written."""

    name: str
    keys: tuple[str, ...]
    cursor: str | None
    cursor_type: str
    partition: str | None
    strategy: WriteStrategy
    schema: str = "raw"
    #: Where-it-came-from columns (``Extractor.source_fields``), text, after the partition.
    sources: tuple[str, ...] = ()

    @classmethod
    def for_stream(cls, table: str, extractor: Extractor, cursor_kind: str | None) -> RawTable:
        if len(table.encode()) > MAX_IDENTIFIER:
            raise ConfigError(
                f"stream {extractor.name!r}: table name {table!r} is longer than PostgreSQL's {MAX_IDENTIFIER} bytes;"
                " set a shorter source or name"
            )
        partition = extractor.partition_by if extractor.strategy is WriteStrategy.DELETE_RELOAD else None
        return cls(
            name=table,
            keys=extractor.key_fields,
            cursor=extractor.cursor_field,
            cursor_type=CURSOR_TYPES[cursor_kind or "text"],
            partition=partition,
            strategy=extractor.strategy,
            sources=tuple(extractor.source_fields),
        )

    # --- names ------------------------------------------------------------------

    @property
    def ident(self) -> sql.Composable:
        return sql.Identifier(self.schema, self.name)

    @property
    def shadow_name(self) -> str:
        return short_identifier(self.name, "shadow")

    @property
    def shadow(self) -> sql.Composable:
        return sql.Identifier(self.schema, self.shadow_name)

    def data_columns(self) -> list[tuple[str, str, str]]:
        """``(column, type, stage column)`` for the key, cursor, partition and source columns, without repeats."""
        columns: list[tuple[str, str, str]] = []
        seen: set[str] = set()
        for i, key in enumerate(self.keys):
            columns.append((key, "text", f"_k{i}"))
            seen.add(key)
        if self.cursor and self.cursor not in seen:
            columns.append((self.cursor, self.cursor_type, "_cursor"))
            seen.add(self.cursor)
        if self.partition and self.partition not in seen:
            columns.append((self.partition, "text", "_partition"))
        for i, name in enumerate(self.sources):
            columns.append((name, "text", f"_s{i}"))
        return columns

    @property
    def conflict_columns(self) -> tuple[str, ...]:
        """The unique columns a batch's INSERT resolves conflicts on."""
        if self.strategy in (WriteStrategy.UPSERT, WriteStrategy.REPLACE) and self.keys:
            return self.keys
        return ("_record_hash",)

    # --- DDL ----------------------------------------------------------------------

    def create_sql(self) -> Statement:
        columns: list[sql.Composable] = [
            sql.SQL("{} {}{}").format(sql.Identifier(c), sql.SQL(t), KEY_SUFFIX if c in self.keys else sql.SQL(""))
            for c, t, _ in self.data_columns()
        ]
        columns += [
            sql.SQL("_raw_payload jsonb NOT NULL"),
            sql.SQL("_loaded_at timestamptz NOT NULL DEFAULT now()"),
            sql.SQL("_batch_id text NOT NULL"),
            sql.SQL("_run_id bigint NOT NULL"),
            sql.SQL("_record_hash text") + KEY_SUFFIX,
            # Arrival order: breaks ties between versions of a key loaded in one batch.
            sql.SQL("_row_seq bigint GENERATED ALWAYS AS IDENTITY"),
            # Set by `elt reconcile` when the key is gone from the source (NULL otherwise).
            sql.SQL("_deleted_at timestamptz"),
        ]
        return sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(self.ident, sql.SQL(", ").join(columns))

    def index_sql(self, table: sql.Composable | None = None, table_name: str | None = None) -> list[Statement]:
        """The unique index the strategy's ON CONFLICT needs (plus a key index for dedup views)."""
        table = table or self.ident
        name = table_name or self.name
        unique = self.conflict_columns
        statements: list[Statement] = [
            sql.SQL("CREATE UNIQUE INDEX IF NOT EXISTS {} ON {} ({})").format(
                sql.Identifier(short_identifier(name, "uq_" + ("key" if unique == self.keys else "hash"))),
                table,
                sql.SQL(", ").join(map(sql.Identifier, unique)),
            )
        ]
        if self.strategy is WriteStrategy.APPEND_DEDUP:
            statements.append(
                sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({}, _row_seq)").format(
                    sql.Identifier(short_identifier(name, "key")), table, sql.SQL(", ").join(map(sql.Identifier, self.keys))
                )
            )
        return statements

    def stage_columns(self) -> list[tuple[str, str]]:
        """The stage's columns, in the order of a prepared row (see validation.PreparedBatch)."""
        return [(f"_k{i}", KEY_TEXT) for i in range(len(self.keys))] + [
            ("_cursor", self.cursor_type), ("_partition", "text"), *((f"_s{i}", "text") for i in range(len(self.sources))),
            ("_payload", "jsonb"), ("_hash", KEY_TEXT),
        ]

    def stage_sql(self) -> Statement:
        # One temporary table per batch transaction: the COPY target. _ord is
        # the arrival order within the batch (the last version of a key wins).
        columns: list[sql.Composable] = [
            sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(kind)) for name, kind in self.stage_columns()
        ]
        columns.append(sql.SQL("_ord bigint GENERATED ALWAYS AS IDENTITY"))
        return sql.SQL("CREATE TEMP TABLE _elt_stage ({}) ON COMMIT DROP").format(sql.SQL(", ").join(columns))

    def copy_sql(self) -> Statement:
        names = [name for name, _ in self.stage_columns()]
        return sql.SQL("COPY _elt_stage ({}) FROM STDIN").format(sql.SQL(", ").join(map(sql.Identifier, names)))

    # --- the write strategies -------------------------------------------------------

    def _target_columns(self) -> sql.Composable:
        names = [c for c, _, _ in self.data_columns()] + ["_raw_payload", "_loaded_at", "_batch_id", "_run_id", "_record_hash"]
        return sql.SQL(", ").join(map(sql.Identifier, names))

    def _select_list(self) -> sql.Composable:
        parts: list[sql.Composable] = [sql.SQL("s.{}").format(sql.Identifier(stage)) for _, _, stage in self.data_columns()]
        parts += [sql.SQL("s._payload, now(), %(batch_id)s, %(run_id)s, s._hash")]
        return sql.SQL(", ").join(parts)

    def direct_copy(self) -> tuple[Statement, list[int]]:
        """COPY straight into the raw table, and which fields of a prepared row it takes.

        The fast path for batches that are new to the table: one pass instead of
        stage + INSERT. The unique index still guards it; a conflict sends the
        batch down the stage path instead.
        """
        position = {name: i for i, (name, _) in enumerate(self.stage_columns())}
        picks = [position[stage] for _, _, stage in self.data_columns()] + [position["_payload"], position["_hash"]]
        names = [c for c, _, _ in self.data_columns()] + ["_raw_payload", "_record_hash", "_batch_id", "_run_id"]
        statement = sql.SQL("COPY {} ({}) FROM STDIN").format(self.ident, sql.SQL(", ").join(map(sql.Identifier, names)))
        return statement, picks

    def write_sql(self, into_shadow: bool = False, unique_keys: bool = False) -> list[Statement]:
        """The statements that move ``_elt_stage`` into the raw table (or the replace shadow).

        ``unique_keys`` says the batch holds each key once, so no DISTINCT ON
        (a sort of every row) is needed. The last statement returns one row:
        (inserted, updated).
        """
        target = self.shadow if into_shadow else self.ident
        conflict = self.conflict_columns
        columns = self._target_columns()
        select = self._select_list()
        statements: list[Statement] = []

        if self.strategy is WriteStrategy.DELETE_RELOAD and not into_shadow:
            # Partitions this run already wrote in an earlier batch stay: a
            # partition may span several batches of one run.
            statements.append(
                sql.SQL(
                    "DELETE FROM {t} r USING (SELECT DISTINCT _partition FROM _elt_stage) p"
                    " WHERE r.{part} = p._partition AND r._run_id <> %(run_id)s"
                ).format(t=target, part=sql.Identifier(self.partition or ""))
            )

        if conflict == ("_record_hash",):
            # A record already stored byte for byte is not stored again: re-reads
            # of a lookback overlap and re-runs leave the table as it was.
            statements.append(
                sql.SQL(
                    # A fresh temp table is read back in COPY order, so rows keep
                    # their arrival order in _row_seq without a sort.
                    "WITH ins AS (INSERT INTO {t} ({cols}) SELECT {sel} FROM _elt_stage s"
                    " ON CONFLICT (_record_hash) DO NOTHING RETURNING 1)"
                    " SELECT count(*), 0 FROM ins"
                ).format(t=target, cols=columns, sel=select)
            )
            return statements

        # Keyed upsert: the last version of each key in the batch wins, and a
        # row whose hash is unchanged is not rewritten (no dead tuple, no new
        # _loaded_at), so re-running an unchanged batch changes nothing.
        stage_keys = sql.SQL(", ").join(sql.SQL("s.{}").format(sql.Identifier(f"_k{i}")) for i in range(len(self.keys)))
        updates: list[sql.Composable] = [
            sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c))
            for c, _, _ in self.data_columns() if c not in self.keys
        ]
        updates += [
            sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c))
            for c in ("_raw_payload", "_loaded_at", "_batch_id", "_run_id", "_record_hash")
        ]
        source = (
            sql.SQL("_elt_stage s") if unique_keys else
            sql.SQL("(SELECT DISTINCT ON ({keys}) * FROM _elt_stage s ORDER BY {keys}, s._ord DESC) s").format(keys=stage_keys)
        )
        statements.append(
            sql.SQL(
                "WITH ins AS (INSERT INTO {t} AS r ({cols})"
                " SELECT {sel} FROM {source}"
                " ON CONFLICT ({conflict}) DO UPDATE SET {updates}"
                " WHERE r._record_hash IS DISTINCT FROM EXCLUDED._record_hash"
                " RETURNING (xmax = 0) AS inserted)"
                " SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM ins"
            ).format(
                t=target, cols=columns, sel=select, source=source,
                conflict=sql.SQL(", ").join(map(sql.Identifier, conflict)), updates=sql.SQL(", ").join(updates),
            )
        )
        return statements

    def swap_sql(self) -> list[Statement]:
        """Replace the raw table's contents with the shadow's, in the caller's transaction.

        TRUNCATE + INSERT rather than a rename, so views built on the raw
        table keep working; readers wait on the lock and then see the new
        contents whole, never half.
        """
        names = [c for c, _, _ in self.data_columns()] + ["_raw_payload", "_loaded_at", "_batch_id", "_run_id", "_record_hash"]
        cols = sql.SQL(", ").join(map(sql.Identifier, names))
        return [
            sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(self.ident),
            sql.SQL("TRUNCATE {}").format(self.ident),
            sql.SQL("INSERT INTO {t} ({c}) SELECT {c} FROM {s} ORDER BY _row_seq").format(t=self.ident, c=cols, s=self.shadow),
            sql.SQL("DROP TABLE {}").format(self.shadow),
        ]

    def dedup_view_sql(self) -> list[Statement]:
        """The generated ``stg`` view of an ``append_dedup`` stream: the latest version per key."""
        keys = sql.SQL(", ").join(map(sql.Identifier, self.keys))
        order: list[sql.Composable] = [keys]
        if self.cursor:
            order.append(sql.SQL("{} DESC NULLS LAST").format(sql.Identifier(self.cursor)))
        order.append(sql.SQL("_row_seq DESC"))
        view = sql.Identifier("stg", self.name)
        comment = f"{GENERATED_VIEW_MARK}: latest version per key of raw.{self.name}; a model in sql/stg/ replaces it"
        return [
            sql.SQL("CREATE OR REPLACE VIEW {v} AS SELECT DISTINCT ON ({keys}) * FROM {t} ORDER BY {order}").format(
                v=view, keys=keys, t=self.ident, order=sql.SQL(", ").join(order)
            ),
            sql.SQL("COMMENT ON VIEW {} IS {}").format(view, sql.Literal(comment)),
        ]
