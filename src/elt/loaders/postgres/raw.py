"""Raw tables in PostgreSQL: their columns, and the set-based SQL behind each strategy primitive.

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
from elt.extractors.base import Extractor
from elt.loaders.base import raw_data_columns
from elt.strategies import WriteStrategy

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
# _record_hash is an md5, which fits a uuid exactly: 16 bytes compared with memcmp, half
# the unique index of the 32-character text it replaced (the costliest index of an append),
# and the same 32-hex text in COPY, so nothing changes on the client. Tables created as
# text before keep their column (see RawTable.hash_type; README: "Raw tables from before").
HASH_TYPE = "uuid"
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
    #: Type of ``_record_hash``: ``uuid``, or C-collated text in tables created before.
    hash_type: str = HASH_TYPE

    @classmethod
    def for_stream(cls, table: str, extractor: Extractor, cursor_kind: str | None) -> RawTable:
        if len(table.encode()) > MAX_IDENTIFIER:
            raise ConfigError(
                f"stream {extractor.name!r}: table name {table!r} is longer than PostgreSQL's {MAX_IDENTIFIER} bytes;"
                " set a shorter source or name"
            )
        partition = extractor.partition_by if extractor.strategy.needs_partition else None
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
        return raw_data_columns(self.keys, self.cursor, self.cursor_type, self.partition, self.sources, text="text")

    @property
    def conflict_columns(self) -> tuple[str, ...]:
        """The unique columns a batch's INSERT resolves conflicts on."""
        if self.strategy.keyed and self.keys:
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
            sql.SQL("_record_hash {} NOT NULL").format(sql.SQL(self.hash_type)),
            # Arrival order: breaks ties between versions of a key loaded in one batch.
            sql.SQL("_row_seq bigint GENERATED ALWAYS AS IDENTITY"),
            # Set by `elt reconcile` when the key is gone from the source (NULL otherwise).
            sql.SQL("_deleted_at timestamptz"),
        ]
        return sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(self.ident, sql.SQL(", ").join(columns))

    def index_names(self, table_name: str | None = None) -> list[str]:
        """elt's own indexes on the table: the unique one ON CONFLICT needs, and a key index for dedup views."""
        name = table_name or self.name
        names = [short_identifier(name, "uq_" + ("key" if self.conflict_columns == self.keys else "hash"))]
        if self.strategy.latest_view:
            names.append(short_identifier(name, "key"))
        return names

    def index_sql(self, table: sql.Composable | None = None, table_name: str | None = None) -> list[Statement]:
        """The statements creating :meth:`index_names` (if missing)."""
        table = table or self.ident
        unique, *key = self.index_names(table_name)
        statements: list[Statement] = [
            sql.SQL("CREATE UNIQUE INDEX IF NOT EXISTS {} ON {} ({})").format(
                sql.Identifier(unique), table, sql.SQL(", ").join(map(sql.Identifier, self.conflict_columns)))
        ]
        statements += [
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({}, _row_seq)").format(
                sql.Identifier(name), table, sql.SQL(", ").join(map(sql.Identifier, self.keys)))
            for name in key
        ]
        return statements

    def stage_columns(self) -> list[tuple[str, str]]:
        """The stage's columns, in the order of a prepared row (see validation.PreparedBatch)."""
        return [(f"_k{i}", KEY_TEXT) for i in range(len(self.keys))] + [
            ("_cursor", self.cursor_type), ("_partition", "text"), *((f"_s{i}", "text") for i in range(len(self.sources))),
            ("_payload", "jsonb"), ("_hash", self.hash_type),
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

    def _returning_counts(self) -> sql.Composable:
        return sql.SQL(" SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted) FROM ins")

    def insert_sql(self, shadow: bool = False, restore_deleted: bool = False) -> list[Statement]:
        """Insert staged records not stored yet byte for byte; returns (inserted, restored).

        A record already stored is not stored again: re-reads of a lookback
        overlap and re-runs leave the table as it was. ``restore_deleted``
        clears ``_deleted_at`` of stored records sent again (their key is back).
        """
        target = self.shadow if shadow else self.ident
        statements: list[Statement] = []
        if restore_deleted:
            statements.append(sql.SQL(
                "UPDATE {t} AS r SET _deleted_at = NULL FROM _elt_stage s"
                " WHERE r._record_hash = s._hash AND r._deleted_at IS NOT NULL").format(t=target))
        statements.append(sql.SQL(
            # A fresh temp table is read back in COPY order, so rows keep
            # their arrival order in _row_seq without a sort.
            "WITH ins AS (INSERT INTO {t} ({cols}) SELECT {sel} FROM _elt_stage s"
            " ON CONFLICT (_record_hash) DO NOTHING RETURNING true AS inserted)"
        ).format(t=target, cols=self._target_columns(), sel=self._select_list()) + self._returning_counts())
        return statements

    def _stage_keys(self) -> sql.Composable:
        return sql.SQL(", ").join(sql.SQL("s.{}").format(sql.Identifier(f"_k{i}")) for i in range(len(self.keys)))

    def _replay_latest(self) -> sql.Composable:
        """Order of a key's replayed versions, the one to keep first (letters are staged newest first)."""
        return sql.SQL("s._cursor DESC NULLS LAST, s._ord ASC") if self.cursor else sql.SQL("s._ord ASC")

    def _newer_rule(self, stored: str, incoming: str) -> sql.Composable:
        """SQL true when a replayed ``incoming`` version may replace the ``stored`` one.

        Only a strictly greater cursor proves a replayed record newer. With equal or no
        cursors nothing does: ``_loaded_at`` moves only when a row changes, so a stored
        version the source re-sent unchanged after the dead letter was written looks as
        old as it first was. The stored version then wins (the letter is superseded).
        """
        if not self.cursor:
            return sql.SQL("false")
        c = sql.Identifier(self.cursor)
        return sql.SQL("(({i}.{c} > {s}.{c}) OR ({s}.{c} IS NULL AND {i}.{c} IS NOT NULL))").format(
            i=sql.SQL(incoming), s=sql.SQL(stored), c=c)

    def merge_sql(self, shadow: bool = False, unique_keys: bool = False, newer_than_arrival: bool = False) -> list[Statement]:
        """Insert or update staged records by key; returns (inserted, updated) or, for replay, (hash, inserted) rows.

        The last version of each key in the batch wins, and a row whose hash
        is unchanged is not rewritten (no dead tuple, no new _loaded_at), so
        re-running an unchanged batch changes nothing, unless the key was
        marked deleted: its coming back clears the mark.
        """
        target = self.shadow if shadow else self.ident
        conflict = self.keys
        updates: list[sql.Composable] = [
            sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c))
            for c, _, _ in self.data_columns() if c not in self.keys
        ]
        updates += [
            sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c))
            for c in ("_raw_payload", "_loaded_at", "_batch_id", "_run_id", "_record_hash")
        ]
        updates.append(sql.SQL("_deleted_at = NULL"))
        # With a cursor, the version with the greatest cursor is the current one: within a batch
        # (then the last to arrive among equals), and against what is stored: an older version
        # read later (a stale page, a source sorted newest first) never overwrites a newer one.
        latest = (self._replay_latest() if newer_than_arrival else
                  sql.SQL("s._cursor DESC NULLS LAST, s._ord DESC") if self.cursor else sql.SQL("s._ord DESC"))
        source = (
            sql.SQL("_elt_stage s") if unique_keys and not newer_than_arrival else
            sql.SQL("(SELECT DISTINCT ON ({keys}) * FROM _elt_stage s ORDER BY {keys}, {latest}) s").format(
                keys=self._stage_keys(), latest=latest)
        )
        condition: sql.Composable = sql.SQL(
            "(r._record_hash IS DISTINCT FROM EXCLUDED._record_hash OR r._deleted_at IS NOT NULL)")
        if newer_than_arrival:
            condition = sql.SQL("{} AND {}").format(condition, self._newer_rule("r", "EXCLUDED"))
        elif self.cursor:
            condition = sql.SQL("{} AND (r.{c} IS NULL OR EXCLUDED.{c} IS NULL OR EXCLUDED.{c} >= r.{c})").format(
                condition, c=sql.Identifier(self.cursor))
        statement = sql.SQL(
            "WITH ins AS (INSERT INTO {t} AS r ({cols}) SELECT {sel} FROM {source}"
            " ON CONFLICT ({conflict}) DO UPDATE SET {updates} WHERE {condition}"
            " RETURNING {returning})"
        ).format(
            returning=sql.SQL("replace(_record_hash::text, '-', '') AS _record_hash, (xmax = 0) AS inserted"
                              if newer_than_arrival else "(xmax = 0) AS inserted"),
            t=target, cols=self._target_columns(), sel=self._select_list(), source=source,
            conflict=sql.SQL(", ").join(map(sql.Identifier, conflict)), updates=sql.SQL(", ").join(updates),
            condition=condition,
        )
        if newer_than_arrival:
            return [statement + sql.SQL(" SELECT _record_hash, inserted FROM ins")]
        return [statement + self._returning_counts()]

    def insert_newest_sql(self) -> list[Statement]:
        """Replay into a history table: insert staged records unless a stored version of the key is newer.

        Returns (hash, inserted) per written row. An older version is never
        inserted, because the latest-per-key view would then show it.
        """
        match = sql.SQL(" AND ").join(
            sql.SQL("r.{k} = s.{sk}").format(k=sql.Identifier(k), sk=sql.Identifier(f"_k{i}"))
            for i, k in enumerate(self.keys))
        # One version per key from the replayed letters: the greatest cursor, else the newest letter
        # (replay stages letters newest first, so the lowest _ord).
        stage_view = sql.SQL(
            "(SELECT DISTINCT ON ({keys}) s.*, {cur} FROM _elt_stage s ORDER BY {keys}, {latest}) s").format(
            keys=self._stage_keys(), latest=self._replay_latest(),
            cur=sql.SQL("s._cursor AS {}").format(sql.Identifier(self.cursor)) if self.cursor else sql.SQL("NULL AS _none"))
        return [sql.SQL(
            "WITH ins AS (INSERT INTO {t} ({cols}) SELECT {sel} FROM {stage}"
            " WHERE NOT EXISTS (SELECT 1 FROM {t} r WHERE {match} AND NOT {newer})"
            " ON CONFLICT (_record_hash) DO NOTHING RETURNING replace(_record_hash::text, '-', '') AS _record_hash)"
            " SELECT _record_hash, true FROM ins"
        ).format(t=self.ident, cols=self._target_columns(), sel=self._select_list(), stage=stage_view, match=match,
                 newer=self._newer_rule("r", "s"))]

    def create_shadow_sql(self) -> list[Statement]:
        """An empty shadow like the raw table, with the same unique index."""
        return [
            sql.SQL("DROP TABLE IF EXISTS {}").format(self.shadow),
            sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS INCLUDING IDENTITY)").format(self.shadow, self.ident),
            *self.index_sql(self.shadow, self.shadow_name),
        ]

    def replace_partitions_sql(self) -> list[Statement]:
        """Replace every partition the shadow holds with the shadow's rows, in the caller's transaction.

        Readers see each partition old or new, never half: the delete and the
        insert commit together, after the whole read completed.
        """
        names = [c for c, _, _ in self.data_columns()] + ["_raw_payload", "_loaded_at", "_batch_id", "_run_id", "_record_hash"]
        cols = sql.SQL(", ").join(map(sql.Identifier, names))
        part = sql.Identifier(self.partition or "")
        return [
            sql.SQL("DELETE FROM {t} r USING (SELECT DISTINCT {p} FROM {s}) p WHERE r.{p} = p.{p}").format(
                t=self.ident, s=self.shadow, p=part),
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
            # Keys whose latest version `elt reconcile` marked deleted are left out (the raw rows stay).
            sql.SQL("CREATE OR REPLACE VIEW {v} AS SELECT * FROM (SELECT DISTINCT ON ({keys}) * FROM {t} ORDER BY {order}) v"
                    " WHERE v._deleted_at IS NULL").format(
                v=view, keys=keys, t=self.ident, order=sql.SQL(", ").join(order)
            ),
            sql.SQL("COMMENT ON VIEW {} IS {}").format(view, sql.Literal(comment)),
        ]
