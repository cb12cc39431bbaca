"""Raw tables in BigQuery: their columns, and the BigQuery SQL behind each strategy primitive.

The layout is PostgreSQL's (``loaders/postgres/raw.py``): key, cursor,
partition and source columns, then ``_raw_payload`` (JSON), ``_loaded_at``,
``_batch_id``, ``_run_id``, ``_record_hash``, ``_row_seq`` and ``_deleted_at``.
Tables are partitioned by day of ``_loaded_at`` and clustered by the key (by
the partition column for ``delete_reload``, by ``_record_hash`` without a key).

Each batch is loaded into a stage table by a load job; the statements here
read it as ``s`` and are run inside the batch's multi-statement transaction,
so they are DML only (no MERGE: see ``writer.py``). Every identifier that
comes from a source goes through :func:`quote`, never into the SQL text raw.
"""

from __future__ import annotations

from dataclasses import dataclass

from elt.extractors.base import Extractor
from elt.loaders.base import raw_data_columns
from elt.strategies import WriteStrategy

#: BigQuery type of a cursor column for each cursor kind (see records.cursor_kind).
CURSOR_TYPES = {"integer": "INT64", "number": "BIGNUMERIC", "timestamp": "TIMESTAMP", "date": "DATE", "text": "STRING"}
KIND_OF_TYPE = {"INT64": "integer", "BIGNUMERIC": "number", "NUMERIC": "number", "TIMESTAMP": "timestamp",
                "DATE": "date", "STRING": "text"}
GENERATED_VIEW_MARK = "elt:generated"
#: Tables elt keeps beside the raw tables (stages, shadows): never listed as raw tables.
WORK_PREFIX = "_elt_"
#: BigQuery clusters by at most four columns.
MAX_CLUSTER = 4


def quote(name: str) -> str:
    """A BigQuery quoted identifier (backticks; a backtick or backslash in the name is escaped)."""
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


@dataclass
class RawTable:
    """The raw table of one stream, where it lives, and the SQL of its write strategy."""

    project: str
    dataset: str
    name: str
    keys: tuple[str, ...]
    cursor: str | None
    cursor_type: str
    partition: str | None
    strategy: WriteStrategy
    sources: tuple[str, ...] = ()

    @classmethod
    def for_stream(cls, project: str, dataset: str, table: str, extractor: Extractor, cursor_kind: str | None) -> RawTable:
        partition = extractor.partition_by if extractor.strategy.needs_partition else None
        return cls(project=project, dataset=dataset, name=table, keys=extractor.key_fields,
                   cursor=extractor.cursor_field, cursor_type=CURSOR_TYPES[cursor_kind or "text"],
                   partition=partition, strategy=extractor.strategy, sources=tuple(extractor.source_fields))

    # --- names ------------------------------------------------------------------

    def ref(self, name: str | None = None) -> str:
        """The quoted ``project.dataset.table`` of the raw table (or of a work table beside it)."""
        return quote(f"{self.project}.{self.dataset}.{name or self.name}")

    def table_id(self, name: str | None = None) -> str:
        return f"{self.project}.{self.dataset}.{name or self.name}"

    @property
    def stage_name(self) -> str:
        return f"{WORK_PREFIX}stage__{self.name}"

    @property
    def shadow_name(self) -> str:
        return f"{WORK_PREFIX}shadow__{self.name}"

    def data_columns(self) -> list[tuple[str, str, str]]:
        """``(column, type, stage column)`` for the key, cursor, partition and source columns, without repeats."""
        return raw_data_columns(self.keys, self.cursor, self.cursor_type, self.partition, self.sources, text="STRING")

    def cluster_columns(self) -> list[str]:
        if self.partition:  # delete_reload deletes by partition value: cluster pruning finds its blocks
            return [self.partition]
        return list(self.keys[:MAX_CLUSTER]) or ["_record_hash"]

    # --- DDL ----------------------------------------------------------------------

    def create_sql(self) -> str:
        columns = [f"{quote(c)} {t}{' NOT NULL' if c in self.keys else ''}" for c, t, _ in self.data_columns()]
        columns += [
            "_raw_payload JSON NOT NULL",
            "_loaded_at TIMESTAMP NOT NULL",
            "_batch_id STRING NOT NULL",
            "_run_id INT64 NOT NULL",
            "_record_hash STRING NOT NULL",
            # Arrival order (no identity columns in BigQuery): the batch's base number plus the row's place.
            "_row_seq INT64 NOT NULL",
            "_deleted_at TIMESTAMP",
        ]
        return (f"CREATE TABLE IF NOT EXISTS {self.ref()} ({', '.join(columns)})"
                f" PARTITION BY DATE(_loaded_at) CLUSTER BY {', '.join(map(quote, self.cluster_columns()))}")

    def stage_schema(self) -> list[tuple[str, str]]:
        """The stage's columns, in the order of a prepared row (see validation.PreparedBatch), plus ``_ord``.

        All text: the cursor is cast in SQL (one rule for every kind), the payload parsed as JSON there.
        """
        return [(f"_k{i}", "STRING") for i in range(len(self.keys))] + [
            ("_cursor", "STRING"), ("_partition", "STRING"), *((f"_s{i}", "STRING") for i in range(len(self.sources))),
            ("_payload", "STRING"), ("_hash", "STRING"), ("_ord", "INT64"),
        ]

    def create_shadow_sql(self) -> list[str]:
        """An empty shadow like the raw table (same columns, partitioning and clustering), replacing any left."""
        return [f"CREATE OR REPLACE TABLE {self.ref(self.shadow_name)} LIKE {self.ref()}"]

    def drop_sql(self, name: str) -> str:
        return f"DROP TABLE IF EXISTS {self.ref(name)}"

    # --- the pieces every statement shares -------------------------------------------

    def _cast_cursor(self) -> str:
        # A cursor that is also a key is stored (and so compared) as the key's text, as on PostgreSQL.
        if self.cursor_type == "STRING" or self.cursor in self.keys:
            return "s._cursor"
        return f"CAST(s._cursor AS {self.cursor_type})"

    def _stage_value(self, stage_column: str) -> str:
        return self._cast_cursor() if stage_column == "_cursor" else f"s.{stage_column}"

    def _target_columns(self) -> str:
        names = [quote(c) for c, _, _ in self.data_columns()]
        return ", ".join([*names, "_raw_payload", "_loaded_at", "_batch_id", "_run_id", "_record_hash", "_row_seq"])

    def _select_list(self) -> str:
        values = [self._stage_value(stage) for _, _, stage in self.data_columns()]
        # One _loaded_at per batch (a parameter): the batch's rows land in one day's partition.
        values += ["PARSE_JSON(s._payload)", "@loaded_at", "@batch_id", "@run_id", "s._hash", "@seq + s._ord"]
        return ", ".join(values)

    def _stage(self, latest: str | None = None, by: str | None = None) -> str:
        """The stage as ``s``: every row, or one per ``by`` (the first by ``latest``)."""
        stage = self.ref(self.stage_name)
        if by is None:
            return f"{stage} s"
        # QUALIFY needs a WHERE, GROUP BY or HAVING beside it in BigQuery.
        return (f"(SELECT * FROM {stage} s WHERE TRUE"
                f" QUALIFY ROW_NUMBER() OVER (PARTITION BY {by} ORDER BY {latest}) = 1) s")

    def _stage_keys(self) -> str:
        return ", ".join(f"s._k{i}" for i in range(len(self.keys)))

    def _key_match(self, stored: str = "r", incoming: str = "s") -> str:
        return " AND ".join(f"{stored}.{quote(k)} = {incoming}._k{i}" for i, k in enumerate(self.keys))

    def _prune(self, stored: str = "r") -> str:
        """A filter on the table's first cluster column by the batch's values (``@prune``, constants).

        A join alone makes BigQuery read the key (or hash) column of the whole
        table; with the batch's values named, it skips the blocks that cannot
        hold them. The values are the batch's first key column, or its hashes.
        """
        column = quote(self.keys[0]) if self.keys else "_record_hash"
        return f" AND {stored}.{column} IN UNNEST(@prune)"

    def prune_values(self, rows: list[tuple[str | None, ...]]) -> list[str]:
        """The ``@prune`` values of a batch's prepared rows (first key, or record hash)."""
        return sorted({str(row[0] if self.keys else row[-1]) for row in rows})

    def _latest_first(self) -> str:
        """Within a batch, the version to keep first: the greatest cursor, then the last to arrive."""
        return f"{self._cast_cursor()} DESC NULLS LAST, s._ord DESC" if self.cursor else "s._ord DESC"

    def _replay_latest(self) -> str:
        """Replay: the greatest cursor, then the newest letter (letters are staged newest first)."""
        return f"{self._cast_cursor()} DESC NULLS LAST, s._ord ASC" if self.cursor else "s._ord ASC"

    def _newer_rule(self, stored: str, incoming: str) -> str:
        """SQL true when a replayed ``incoming`` version may replace the ``stored`` one (a strictly greater cursor)."""
        if not self.cursor:
            return "FALSE"
        c = quote(self.cursor)
        return f"(({incoming} > {stored}.{c}) OR ({stored}.{c} IS NULL AND {incoming} IS NOT NULL))"

    # --- the write strategies -------------------------------------------------------
    # Each returns (statement, counter): the counter ('ins' or 'upd') that @@row_count after it adds to.

    def insert_new_sql(self, shadow: bool = False, restore_deleted: bool = False) -> list[tuple[str, str | None]]:
        """Insert staged records not stored yet byte for byte (one per hash); clear ``_deleted_at`` of those sent again."""
        target = self.ref(self.shadow_name if shadow else None)
        statements: list[tuple[str, str | None]] = []
        if restore_deleted:
            statements.append((
                f"UPDATE {target} r SET _deleted_at = NULL WHERE r._deleted_at IS NOT NULL"
                f" AND r._record_hash IN (SELECT _hash FROM {self.ref(self.stage_name)}){self._prune()}", None))
        statements.append((
            f"INSERT INTO {target} ({self._target_columns()}) SELECT {self._select_list()}"
            f" FROM {self._stage('s._ord', 's._hash')}"
            # A stored record with the same hash has the same key: the key filter prunes without changing the answer.
            f" WHERE NOT EXISTS (SELECT 1 FROM {target} r WHERE r._record_hash = s._hash{self._prune()})", "ins"))
        return statements

    def merge_sql(self, shadow: bool = False) -> list[tuple[str, str | None]]:
        """Insert or update by key: the batch's latest version of each key; an unchanged row is not rewritten.

        What a MERGE would do, as an UPDATE and an INSERT in the batch's
        transaction. With a cursor, an older version read later never
        overwrites a newer stored one.
        """
        target = self.ref(self.shadow_name if shadow else None)
        source = self._stage(self._latest_first(), self._stage_keys())
        sets = [f"{quote(c)} = {self._stage_value(stage)}" for c, _, stage in self.data_columns() if c not in self.keys]
        sets += ["_raw_payload = PARSE_JSON(s._payload)", "_loaded_at = @loaded_at", "_batch_id = @batch_id",
                 "_run_id = @run_id", "_record_hash = s._hash", "_row_seq = @seq + s._ord", "_deleted_at = NULL"]
        condition = "(r._record_hash != s._hash OR r._deleted_at IS NOT NULL)"
        if self.cursor:
            c = quote(self.cursor)
            new = self._cast_cursor()
            condition += f" AND (r.{c} IS NULL OR {new} IS NULL OR {new} >= r.{c})"
        return [
            (f"UPDATE {target} r SET {', '.join(sets)} FROM {source} WHERE {self._key_match()}{self._prune()}"
             f" AND {condition}", "upd"),
            (f"INSERT INTO {target} ({self._target_columns()}) SELECT {self._select_list()} FROM {source}"
             f" WHERE NOT EXISTS (SELECT 1 FROM {target} r WHERE {self._key_match()}{self._prune()})", "ins"),
        ]

    def replay_candidates_sql(self, history: bool) -> str:
        """Replay: the staged versions that may be written, one per key, as ``_elt_replay`` (hash, inserted).

        ``history`` (append_dedup, delete_reload): insert only where every stored
        version of the key is provably older. Otherwise (upsert): write where the
        stored version is provably older or absent.
        """
        source = self._stage(self._replay_latest(), self._stage_keys())
        cursor = self._cast_cursor()
        if history:
            newer = self._newer_rule("r", cursor)
            where = (f"NOT EXISTS (SELECT 1 FROM {self.ref()} r WHERE {self._key_match()} AND NOT {newer})"
                     f" AND NOT EXISTS (SELECT 1 FROM {self.ref()} r WHERE r._record_hash = s._hash)")
        else:
            where = (f"NOT EXISTS (SELECT 1 FROM {self.ref()} r WHERE {self._key_match()}"
                     f" AND NOT ((r._record_hash != s._hash OR r._deleted_at IS NOT NULL) AND {self._newer_rule('r', cursor)}))")
        stored = f"EXISTS (SELECT 1 FROM {self.ref()} r WHERE {self._key_match()})"
        return (f"CREATE TEMP TABLE _elt_replay AS SELECT s.*, NOT {stored} AS _inserted FROM {source} WHERE {where}")

    def replay_write_sql(self, history: bool) -> list[tuple[str, str | None]]:
        """Write the replay candidates (``_elt_replay``) in the transaction."""
        replay = "_elt_replay s"
        if history:
            return [(f"INSERT INTO {self.ref()} ({self._target_columns()}) SELECT {self._select_list()} FROM {replay}", "ins")]
        sets = [f"{quote(c)} = {self._stage_value(stage)}" for c, _, stage in self.data_columns() if c not in self.keys]
        sets += ["_raw_payload = PARSE_JSON(s._payload)", "_loaded_at = @loaded_at", "_batch_id = @batch_id",
                 "_run_id = @run_id", "_record_hash = s._hash", "_row_seq = @seq + s._ord", "_deleted_at = NULL"]
        return [
            (f"UPDATE {self.ref()} r SET {', '.join(sets)} FROM {replay} WHERE {self._key_match()} AND NOT s._inserted", "upd"),
            (f"INSERT INTO {self.ref()} ({self._target_columns()}) SELECT {self._select_list()} FROM {replay}"
             " WHERE s._inserted", "ins"),
        ]

    def swap_sql(self) -> list[str]:
        """Make the shadow's rows the table's rows, in the caller's transaction.

        DML, not a table swap: the table keeps its grants, policy tags and
        description, and the swap commits with the stream's state.
        """
        return [f"DELETE FROM {self.ref()} WHERE TRUE",
                f"INSERT INTO {self.ref()} SELECT * FROM {self.ref(self.shadow_name)}"]

    def replace_partitions_sql(self) -> list[str]:
        """Replace every partition (value of ``partition_by``) the shadow holds, in the caller's transaction.

        The DELETE names the partition values as constants (``@partitions``), so
        clustering by the partition column lets BigQuery read only the blocks
        that hold them.
        """
        part = quote(self.partition or "")
        return [f"DELETE FROM {self.ref()} WHERE {part} IN UNNEST(@partitions)",
                f"INSERT INTO {self.ref()} SELECT * FROM {self.ref(self.shadow_name)}"]

    def shadow_partitions_sql(self) -> str:
        """The partition values the shadow holds (``@partitions`` of :meth:`replace_partitions_sql`)."""
        part = quote(self.partition or "")
        return f"SELECT DISTINCT {part} AS p FROM {self.ref(self.shadow_name)} WHERE {part} IS NOT NULL"

    def dedup_view_sql(self, view: str) -> str:
        """The generated ``stg`` view of an ``append_dedup`` stream: the latest version per key, deleted keys left out."""
        order = [f"{quote(self.cursor)} DESC NULLS LAST"] if self.cursor else []
        order.append("_row_seq DESC")
        return (f"CREATE OR REPLACE VIEW {view} AS SELECT * FROM (SELECT * FROM {self.ref()} WHERE TRUE"
                f" QUALIFY ROW_NUMBER() OVER (PARTITION BY {', '.join(map(quote, self.keys))} ORDER BY {', '.join(order)}) = 1)"
                " WHERE _deleted_at IS NULL")
