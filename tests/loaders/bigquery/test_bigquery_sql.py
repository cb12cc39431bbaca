"""The BigQuery SQL of each strategy primitive, parsed with sqlglot's BigQuery dialect (no emulator needed).

The emulator runs these statements (test_bigquery_loader.py) but cannot show what BigQuery would
prune: that the table is partitioned and clustered, and that each statement touching the raw table
names the batch's values as constants, is checked here on the statements' shape.
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp

from elt import extractor
from elt.loaders.bigquery.raw import RawTable


def _table(strategy: str, **settings: object) -> RawTable:
    stream = extractor(lambda since: iter(()), name="orders", write_strategy=strategy, **settings)
    return RawTable.for_stream("proj", "x_raw", "shop_orders", stream, "timestamp")


def _parse(statement: str) -> exp.Expression:
    tree = sqlglot.parse_one(statement, read="bigquery")
    assert tree is not None
    return tree


def test_raw_tables_are_partitioned_by_load_day_and_clustered_by_key():
    create = _parse(_table("upsert", primary_key="id", cursor="updated_at").create_sql())
    sql = create.sql("bigquery")
    assert "PARTITION BY DATE(_loaded_at)" in sql and "CLUSTER BY `id`" in sql
    columns = {c.name: c.args["kind"].sql("bigquery") for c in create.find_all(exp.ColumnDef)}
    assert columns["_raw_payload"] == "JSON" and columns["updated_at"] == "TIMESTAMP" and columns["id"] == "STRING"
    assert "CLUSTER BY `day`" in _table("delete_reload", primary_key="id", partition_by="day").create_sql()
    assert "CLUSTER BY `_record_hash`" in _table("append").create_sql()


def test_every_statement_on_the_raw_table_names_the_batch_values_it_can_touch():
    upsert = _table("upsert", primary_key="id", cursor="updated_at")
    statements = [s for s, _ in upsert.merge_sql()] + [s for s, _ in _table("append").insert_new_sql(restore_deleted=True)]
    for statement in statements:
        tree = _parse(statement)
        assert isinstance(tree, (exp.Update, exp.Insert)), "DML only: it runs inside the batch's transaction"
        assert not list(tree.find_all(exp.Merge))
        assert "IN UNNEST(@prune)" in tree.sql("bigquery"), statement
    update = _parse(upsert.merge_sql()[0][0]).sql("bigquery")
    # Unchanged rows are not rewritten; an older version never overwrites a newer one.
    assert "r._record_hash <> s._hash" in update and "CAST(s._cursor AS TIMESTAMP) >= r.`updated_at`" in update


def test_delete_reload_deletes_only_the_partition_values_it_read():
    delete, insert = _table("delete_reload", primary_key="id", partition_by="day").replace_partitions_sql()
    tree = _parse(delete)
    assert isinstance(tree, exp.Delete) and tree.args["where"].sql("bigquery") == "WHERE `day` IN UNNEST(@partitions)"
    assert isinstance(_parse(insert), exp.Insert)


def test_replace_swaps_rows_with_dml_so_the_table_keeps_its_grants():
    statements = _table("replace", primary_key="id").swap_sql()
    assert [type(_parse(s)) for s in statements] == [exp.Delete, exp.Insert]
