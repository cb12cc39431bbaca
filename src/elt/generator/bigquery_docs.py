"""The architecture document's BigQuery parts: raw tables as BigQuery holds them, models as they run there, costs.

Used for projects whose requirements say ``destination: bigquery``. Dataset
names are written as the layer (``raw.orders``); the destination adds
``ELT_BIGQUERY_DATASET_PREFIX`` in front of each.
"""

from __future__ import annotations

from elt.errors import ConfigError
from elt.generator.requirements import Requirements
from elt.loaders.postgres.raw import RawTable
from elt.transforms.dialects import transpile
from elt.transforms.models import Model

#: A raw data column's PostgreSQL type -> its BigQuery type.
_TYPES = {"text": "STRING", "bigint": "INT64", "numeric": "NUMERIC", "timestamptz": "TIMESTAMP", "date": "DATE"}
#: BigQuery clusters by at most four columns.
_MAX_CLUSTER = 4
#: The size of a record's JSON payload the estimates assume (bytes).
PAYLOAD_BYTES = 1024


def _quote(name: str) -> str:
    return name if name.replace("_", "a").isalnum() and not name[0].isdigit() else f"`{name}`"


def raw_ddl(table: RawTable, description: str) -> str:
    """The raw table's CREATE TABLE in BigQuery: JSON payload, partitioned by day of load, clustered by key."""
    columns = [f"{_quote(c)} {_TYPES.get(t, 'STRING')}" for c, t, _ in table.data_columns()]
    columns += ["_raw_payload JSON NOT NULL", "_loaded_at TIMESTAMP NOT NULL", "_batch_id STRING NOT NULL",
                "_run_id INT64 NOT NULL", "_record_hash STRING NOT NULL", "_deleted_at TIMESTAMP"]
    cluster = ", ".join(_quote(k) for k in (table.keys or ("_record_hash",))[:_MAX_CLUSTER])
    body = ",\n".join(f"    {column}" for column in columns)
    return (f"CREATE TABLE IF NOT EXISTS raw.{_quote(table.name)} (\n{body}\n)\n"
            "PARTITION BY DATE(_loaded_at)  -- a query filtering on _loaded_at reads only those days\n"
            f"CLUSTER BY {cluster}  -- MERGEs and lookups by key read only the blocks holding those keys\n"
            f"OPTIONS (description = '{description}');")


def model_sql(model: Model) -> str:
    """How a model is built on BigQuery: its SQL translated from PostgreSQL's dialect by sqlglot."""
    try:
        body = transpile(model.sql, "bigquery", where=model.path, pretty=True)
    except ConfigError as exc:
        return f"-- not translatable yet, so this model fails on BigQuery:\n-- {exc}"
    kind = model.config.materialized
    if kind == "view":
        return f"CREATE OR REPLACE VIEW {model.relation} AS\n{body};"
    create = f"CREATE OR REPLACE TABLE {model.relation} AS\n{body};"
    if kind == "incremental":
        return (f"-- First build and --full-refresh:\n{create}\n-- Every later run: the rows of the window"
                f" ({model.config.watermark} >= newest - lookback) MERGEd by {', '.join(model.config.unique_key)};"
                " rows of the window the SELECT no longer yields are deleted.")
    note = "-- materialized_view: built as a table on BigQuery\n" if kind == "materialized_view" else ""
    return note + create


def costs(req: Requirements | None, tables: list[tuple[str, str]]) -> str:
    """What a BigQuery project pays for, and the settings that bound it. ``tables``: (raw table, strategy)."""
    lines = [
        "### Costs (BigQuery)\n",
        "BigQuery bills queries by the bytes they scan (on-demand pricing) and storage by the bytes kept; load jobs"
        " and table copies are free, so elt loads by load jobs (no streaming inserts) and swaps rebuilt tables in"
        " with copy jobs.\n",
        "- **The guard**: every query elt sends carries `maximum_bytes_billed` (`ELT_BIGQUERY_MAXIMUM_BYTES_BILLED`,"
        " 10 GiB unless set): a query that would scan more fails before it runs, without charge, and the run's error"
        " says so. Raise it for a backfill on purpose, then set it back.",
        "- **Bytes scanned per run**: the bytes processed by every query of a run are summed into its row of"
        " `pipeline.execution_log`; `elt status` shows them. A run that scans much more than the previous ones has"
        " lost its partition pruning.",
        "- **Partition pruning**: raw tables are partitioned by `DATE(_loaded_at)`. A query filtering on"
        " `_loaded_at` reads only the days it names; an incremental model watermarked on `_loaded_at` reads only its"
        " window; a staging view without such a filter reads the whole raw table each time it is queried.",
        "- **Clustering**: raw tables are clustered by key, so upsert MERGEs and lookups by key read only the"
        " blocks holding those keys.",
        "- **Columns**: BigQuery reads only the columns a query names; `SELECT *` or `_raw_payload` reads every"
        " payload. Staging models extract the fields once; marts and dashboards read the typed columns.",
        "- **Views cost per read**: a `view` model runs its SQL each time it is read. What dashboards read often"
        " belongs in a `table` model (rpt), rebuilt once per run.",
        "- **Storage**: append and append_dedup raw tables keep every version; partitions older than the retention"
        " expire on their own with `partition_expiration_days` (section 10), and partitions untouched for 90 days"
        " cost about half (long-term storage).",
    ]
    if req is not None and tables:
        lines += ["", f"Bytes one full scan of each raw table reads, at about {PAYLOAD_BYTES:,} bytes per record"
                  " (an assumption: measure with `elt status` after the first runs):\n",
                  "| raw table | write strategy | records (requirements) | a full scan |", "|---|---|---:|---:|"]
        totals = {f"{s.name}_{e.name}": s.volume.total_rows for s in req.sources for e in s.entities}
        for table, strategy in tables:
            rows = totals.get(table)
            if rows is None:
                continue
            lines.append(f"| raw.{table} | {strategy} | {rows:,} | {_size(rows * PAYLOAD_BYTES)} |")
    return "\n".join(lines)


def retention(table: str, strategy: str, days: int, keys: tuple[str, ...]) -> str:
    """How raw rows past the retention go on BigQuery (no VACUUM: storage is freed by itself)."""
    if strategy == "append":
        return (f"- `raw.{table}` ({strategy}): partitions older than {days} days expire by themselves"
                f" (each row is an immutable fact):\n\n```sql\nALTER TABLE raw.{table}"
                f" SET OPTIONS (partition_expiration_days = {days});\n```\n")
    if strategy == "append_dedup" and keys:
        same = " AND ".join(f"newer.{_quote(k)} = old.{_quote(k)}" for k in keys)
        return (f"- `raw.{table}` ({strategy}): older versions of each key past the retention; the latest version of"
                " every key stays (so not partition expiration, which would drop keys unchanged since):\n\n"
                f"```sql\nDELETE FROM raw.{table} AS old\nWHERE old._loaded_at < TIMESTAMP_SUB(CURRENT_TIMESTAMP(),"
                f" INTERVAL {days} DAY)\n  AND EXISTS (SELECT 1 FROM raw.{table} AS newer WHERE {same}"
                " AND newer._loaded_at > old._loaded_at);\n```\n")
    return (f"- `raw.{table}` ({strategy}): holds the current rows, not history: never delete by age (that would"
            " delete live rows).")


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n = n / 1024  # type: ignore[assignment]
    return str(n)
