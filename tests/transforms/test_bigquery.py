"""The shop's models built on BigQuery (the local emulator, the stock client): views, tables,
an incremental MERGE, data tests, and a starter staging view over raw JSON payloads.

The raw tables are created here with the client, in the layout the BigQuery raw writer
uses (the columns of PostgreSQL's raw tables, ``_raw_payload`` as JSON, partitioned by
day of ``_loaded_at`` and clustered by key): these tests do not depend on the loader.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
from typing import Any

import pytest
import sqlglot
from sqlglot import exp

from elt import extractor
from elt.errors import ConfigError
from elt.loaders.base import Loader
from elt.loaders.bigquery import BigQueryConnection, BigQuerySettings
from elt.loaders.bigquery.store import BigQueryStore
from elt.loaders.bigquery.warehouse import BigQueryWarehouse, bigquery_warehouse, string
from elt.transforms import Builder
from elt.transforms.dialects import transpile
from elt.transforms.graph import Graph
from elt.transforms.incremental import overdue
from elt.transforms.models import discover
from elt.transforms.stage import starter_sql
from tests.transforms.conftest import CUSTOMERS, MODELS, START, make_orders, write_models

# BigQuery raw tables have no _row_seq (no identity columns): versions loaded together tie on _loaded_at.
BQ_MODELS = {path: text.replace("_row_seq DESC", "_loaded_at DESC") for path, text in MODELS.items()}
RAW = {"shop_orders": "id", "shop_customers": "id"}


@pytest.fixture
def warehouse(bq_emulator, bq_prefix) -> Any:
    settings = BigQuerySettings(project=bq_emulator.project, dataset_prefix=bq_prefix, endpoint=bq_emulator.endpoint)
    connection = BigQueryConnection(settings)
    yield bigquery_warehouse(connection)
    connection.close()


def create_raw(wh: BigQueryWarehouse, table: str, key: str) -> None:
    wh.connection.ensure_dataset("raw")
    wh.connection.query(
        f"CREATE TABLE {wh.table_id('raw.' + table)} ({key} STRING, _raw_payload JSON, _loaded_at TIMESTAMP,"
        " _batch_id STRING, _run_id INT64, _record_hash STRING, _deleted_at TIMESTAMP)"
        f" PARTITION BY DATE(_loaded_at) CLUSTER BY {key}")


def load_raw(wh: BigQueryWarehouse, table: str, records: list[dict[str, Any]], *, batch: str = "b1",
             deleted: set[Any] = frozenset()) -> None:
    values = ", ".join(
        f"({string(str(r['id']))}, JSON {string(json.dumps(r))}, CURRENT_TIMESTAMP(), {string(batch)}, 1,"
        f" {string(str(hash(json.dumps(r))))}, {'CURRENT_TIMESTAMP()' if r['id'] in deleted else 'NULL'})"
        for r in records)
    wh.connection.query(f"INSERT INTO {wh.table_id('raw.' + table)}"
                        f" (id, _raw_payload, _loaded_at, _batch_id, _run_id, _record_hash, _deleted_at) VALUES {values}")


def rows(wh: BigQueryWarehouse, sql: str) -> list[dict[str, Any]]:
    return wh.connection.query(sql)


def build(wh: BigQueryWarehouse, project, select=(), full_refresh=False):
    graph = Graph.build(discover(project), sources={f"raw.{t}" for t in RAW})
    return Builder(wh, graph, threads=4, full_refresh=full_refresh).run(graph.select(select))


@pytest.fixture
def shop(warehouse, tmp_path):
    for table, key in RAW.items():
        create_raw(warehouse, table, key)
    load_raw(warehouse, "shop_orders", make_orders(40))
    load_raw(warehouse, "shop_customers", CUSTOMERS)
    return write_models(tmp_path / "shop", BQ_MODELS)


def test_the_shop_example_builds_views_tables_and_an_incremental_merge(warehouse, shop):
    wh = warehouse
    result = build(wh, shop)
    assert result.status == "success", result.failures
    assert {m.status for m in result.models.values()} == {"success"}
    assert result.models["mart.orders"].rows == 40
    # Each layer lives in its own dataset, with the prefix; views are views, tables tables.
    kinds = {t: wh._get(t).table_type for t in ("stg.shop_orders", "mart.orders", "rpt.client_health", "rpt.status_mix")}
    assert kinds == {"stg.shop_orders": "VIEW", "mart.orders": "TABLE", "rpt.client_health": "TABLE",
                     "rpt.status_mix": "VIEW"}
    orders = rows(wh, f"SELECT id, customer_id, status, amount FROM {wh.table_id('mart.orders')} ORDER BY id")
    expected = make_orders(40)
    assert [(r["id"], r["customer_id"], r["status"], r["amount"]) for r in orders] == [
        (o["id"], o["customer_id"], o["status"], decimal.Decimal(o["amount"])) for o in expected]
    top = rows(wh, f"SELECT customer_id, spent FROM {wh.table_id('rpt.top_customers')} ORDER BY spent DESC")
    assert len(top) == 3 and top[0]["spent"] >= top[-1]["spent"]
    revenue = rows(wh, f"SELECT SUM(revenue) AS r FROM {wh.table_id('rpt.revenue_by_month')}")[0]["r"]
    assert float(revenue) == pytest.approx(sum(float(o["amount"]) for o in expected if o["status"] == "paid"))
    # No work table is left behind.
    leftovers = [t.table_id for layer in ("stg", "mart", "rpt")
                 for t in wh.connection.client.list_tables(f"test.{wh.settings.dataset(layer)}") if "__elt_" in t.table_id]
    assert leftovers == []

    again = build(wh, shop, select=["stg.shop_orders", "mart.orders_incremental"])
    assert again.models["stg.shop_orders"].action == "kept (unchanged)"
    assert again.models["mart.orders_incremental"].action == "merged"
    assert again.models["mart.orders_incremental"].rows == 0  # nothing new: nothing rewritten

    # A row outside the next window, changed by hand: a merge leaves it alone (a rebuild would not).
    incremental = wh.table_id("mart.orders_incremental")
    wh.connection.query(f"UPDATE {incremental} SET status = 'by hand' WHERE id = 2")
    newer = make_orders(45)[40:]  # five new orders, later than every stored one
    changed = dict(make_orders(1, version=2)[0], updated_at=(START + dt.timedelta(days=30)).isoformat())
    load_raw(wh, "shop_orders", [*newer, changed], batch="b2")
    merged = build(wh, shop, select=["mart.orders_incremental"])
    model = merged.models["mart.orders_incremental"]
    assert model.status == "success" and model.action == "merged"
    assert model.rows == 6  # 5 inserted + 1 updated
    table = {r["id"]: r for r in rows(wh, f"SELECT id, status, updated_at FROM {incremental}")}
    assert len(table) == 45
    assert table[2]["status"] == "by hand"
    assert table[1]["status"] == changed["status"] and table[1]["updated_at"] == START + dt.timedelta(days=30)
    state = rows(wh, f"SELECT merged_at, full_refresh_at FROM {wh.table_id('pipeline.model_state')}"
                     " WHERE relation = 'mart.orders_incremental'")
    assert state[0]["merged_at"] is not None and state[0]["full_refresh_at"] is not None
    # `elt check`'s rule reads the same state on BigQuery: refreshed just now, so not overdue.
    write_models(shop, {"mart/orders_incremental.sql": MODELS["mart/orders_incremental.sql"].replace(
        "-- watermark: updated_at", "-- watermark: updated_at\n        -- full_refresh_every: 7d")})
    store = BigQueryStore(wh.connection, "emulator")  # what `elt check` asks
    assert overdue(shop, store.model_refreshes) == []
    assert [p[0] for p in overdue(shop, store.model_refreshes, now=dt.datetime.now(dt.UTC) + dt.timedelta(days=8))] == [
        "mart.orders_incremental"]


def test_a_failing_data_test_keeps_the_last_good_table(warehouse, shop):
    wh = warehouse
    assert build(wh, shop, select=["stg.shop_customers", "mart.customers"]).status == "success"
    before = rows(wh, f"SELECT id, tier FROM {wh.table_id('mart.customers')} ORDER BY id")
    load_raw(wh, "shop_customers", [{"id": 6, "name": "Customer 6", "tier": "platinum"}], batch="b2")

    result = build(wh, shop, select=["stg.shop_customers", "mart.customers"])
    customers = result.models["mart.customers"]
    assert customers.status == "failed"
    assert "accepted_values(tier: gold, silver, bronze) on mart.customers failed: 1 rows with other values" in customers.error
    assert "mart.customers was not replaced" in customers.error
    assert rows(wh, f"SELECT id, tier FROM {wh.table_id('mart.customers')} ORDER BY id") == before
    assert wh._existing("mart.customers__elt_new") is None


def test_a_view_becomes_a_table_only_once_the_table_passes_its_tests(warehouse, tmp_path):
    wh = warehouse
    create_raw(wh, "shop_customers", "id")
    load_raw(wh, "shop_customers", CUSTOMERS)
    select = "SELECT CAST(_raw_payload->>'id' AS int) AS id FROM raw.shop_customers\n"
    project = write_models(tmp_path / "p", {"stg/customers.sql": select})
    assert build(wh, project).models["stg.customers"].action == "created"
    write_models(project, {"stg/customers.sql": "-- materialized: table\n-- tests: row_count > 5\n" + select})
    failed = build(wh, project).models["stg.customers"]
    assert failed.status == "failed" and "row_count > 5 on stg.customers failed" in failed.error
    assert wh._get("stg.customers").table_type == "VIEW"  # the last good version, still readable
    write_models(project, {"stg/customers.sql": "-- materialized: table\n-- tests: row_count > 4\n" + select})
    assert build(wh, project).models["stg.customers"].action == "replaced"
    assert wh._get("stg.customers").table_type == "TABLE"
    assert len(rows(wh, f"SELECT id FROM {wh.table_id('stg.customers')}")) == 5


def test_unique_key_is_checked_and_a_sql_error_names_the_file(warehouse, tmp_path):
    wh = warehouse
    create_raw(wh, "shop_orders", "id")
    load_raw(wh, "shop_orders", make_orders(3))
    project = write_models(tmp_path / "p", {
        "mart/dupes.sql": "-- unique_key: customer_id\nSELECT 1 AS customer_id FROM raw.shop_orders\n",
        "mart/broken.sql": "SELECT no_such_column FROM raw.shop_orders\n",
    })
    graph = Graph.build(discover(project), sources={"raw.shop_orders"})
    result = Builder(wh, graph).run(graph.select())
    assert result.models["mart.dupes"].error.startswith(
        "sql/mart/dupes.sql: unique_key (customer_id) is not unique in the new mart.dupes: 1 duplicate key groups")
    assert result.models["mart.broken"].status == "failed"
    assert result.models["mart.broken"].error.startswith("sql/mart/broken.sql: ")
    assert wh._existing("mart.dupes") is None


def test_an_incremental_model_with_a_json_column_merges_changed_payloads(warehouse, tmp_path):
    # JSON has no equality in BigQuery: the MERGE compares such columns by their JSON text.
    wh = warehouse
    create_raw(wh, "shop_orders", "id")
    load_raw(wh, "shop_orders", make_orders(3))
    project = write_models(tmp_path / "p", {"mart/payloads.sql": """
        -- materialized: incremental
        -- unique_key: id
        -- watermark: _loaded_at
        -- lookback: 1h
        SELECT id, _raw_payload AS payload, _loaded_at FROM raw.shop_orders
    """})
    assert build(wh, project).models["mart.payloads"].action == "created"
    wh.connection.query(f"DELETE FROM {wh.table_id('raw.shop_orders')} WHERE id = '2'")
    load_raw(wh, "shop_orders", [{"id": 2, "status": "x"}], batch="b2")  # a new payload for key 2, loaded now
    merged = build(wh, project).models["mart.payloads"]
    assert (merged.status, merged.rows) == ("success", 1), merged.error
    stored = rows(wh, f"SELECT id, payload FROM {wh.table_id('mart.payloads')} ORDER BY id")
    assert [r["payload"].get("status") for r in stored] == [make_orders(3)[0]["status"], "x", make_orders(3)[2]["status"]]
    sql = wh._merge_sql(discover(project)[0], {f.name: f for f in wh._get("mart.payloads").schema}, "mart.a", "mart.b", None)
    assert "TO_JSON_STRING(t.`payload`) IS NOT DISTINCT FROM TO_JSON_STRING(w.`payload`)" in sql


def test_a_starter_staging_view_reads_json_payloads_and_leaves_deleted_keys_out(warehouse, tmp_path):
    wh = warehouse
    create_raw(wh, "shop_orders", "id")
    stream = extractor(lambda: [], name="orders", primary_key="id", cursor="updated_at")
    first = [{"id": 1, "amount": "5.50", "updated_at": "2026-01-01T00:00:00Z", "note": ""},
             {"id": 2, "amount": "7", "updated_at": "2026-01-01T00:00:00Z", "note": "x"},
             {"id": 3, "amount": "", "updated_at": "2026-01-01T00:00:00Z", "note": "y"}]
    load_raw(wh, "shop_orders", first, deleted={2})
    load_raw(wh, "shop_orders", [dict(first[0], amount="6.25", updated_at="2026-01-02T00:00:00Z")], batch="b2")
    fields = {"id": "integer", "amount": "string", "updated_at": "string", "note": "string"}
    samples = {"amount": ["5.50", "7"], "updated_at": ["2026-01-01T00:00:00Z"]}
    text = starter_sql("shop_orders", stream, fields, samples, sequence=None)
    assert "_row_seq" not in text and "_loaded_at DESC" in text
    project = write_models(tmp_path / "p", {"stg/shop_orders.sql": text})
    result = build(wh, project)
    assert result.status == "success", result.failures  # its readable, unique and not_null tests ran too
    view = rows(wh, f"SELECT id, amount, updated_at, note FROM {wh.table_id('stg.shop_orders')} ORDER BY id")
    assert [(r["id"], r["amount"], r["note"]) for r in view] == [(1, decimal.Decimal("6.25"), ""), (3, None, "y")]
    assert view[0]["updated_at"] == dt.datetime(2026, 1, 2, tzinfo=dt.UTC)


def test_model_sql_points_at_the_prefixed_datasets(warehouse, tmp_path):
    # SQL shape only (no query runs): the translation reads the destination's datasets, CTEs stay as they are.
    project = write_models(tmp_path / "p", {"mart/m.sql": """
        WITH paid AS (SELECT * FROM stg.orders WHERE status = 'paid')
        SELECT p.id, c.name FROM paid AS p JOIN raw.shop_customers AS c ON c._raw_payload->>'id' = p.id::text
    """})
    sql = warehouse.translate(discover(project)[0])
    tables = {(t.catalog, t.db, t.name) for t in sqlglot.parse_one(sql, read="bigquery").find_all(exp.Table)}
    prefix = warehouse.settings.dataset_prefix
    assert tables == {("", "", "paid"), ("test", f"{prefix}stg", "orders"), ("test", f"{prefix}raw", "shop_customers")}


def test_a_destination_without_a_warehouse_says_so():
    loader = Loader.__new__(Loader)
    with pytest.raises(ConfigError, match="this destination cannot build SQL models yet"):
        loader.warehouse()


@pytest.mark.parametrize("materialized", ["view", "table"])
def test_an_unreadable_model_names_the_column_whose_cast_fails(warehouse, tmp_path, materialized):
    # Before: BigQuery's bare error (a bad INT64 value), without the column, as the cast failed inside
    # the CREATE (or the whole-row test query); PostgreSQL names it (see test_datatests.py).
    wh = warehouse
    create_raw(wh, "shop_orders", "id")
    load_raw(wh, "shop_orders", [{"id": 1, "amount": "5", "note": "a"}, {"id": 2, "amount": "n/a", "note": "b"}])
    project = write_models(tmp_path / "p", {"stg/amounts.sql": (
        f"-- materialized: {materialized}\n-- tests: readable\n"
        "SELECT _raw_payload->>'note' AS note, (_raw_payload->>'amount')::bigint AS amount FROM raw.shop_orders\n")})
    result = build(wh, project).models["stg.amounts"]
    assert result.status == "failed"
    assert "column 'amount' cannot be read" in (result.error or ""), result.error
    assert "n/a" in result.error and "Cast it differently" in result.error
    assert wh._existing("stg.amounts") is None and wh._existing("stg.amounts__elt_new") is None


# Expressions whose BigQuery translation once gave other answers than PostgreSQL (a trial found the
# week's start): each is run on both, and the answers compared.
SAME_ANSWER = {
    "week starts on Monday": "date_trunc('week', TIMESTAMPTZ '2026-12-02 10:00:00+00')",
    "week of a Sunday": "date_trunc('week', TIMESTAMPTZ '2026-11-29 23:00:00+00')",
    "month": "date_trunc('month', TIMESTAMPTZ '2026-12-02 10:00:00+00')",
    "isodow of a Sunday": "extract(isodow FROM TIMESTAMPTZ '2026-11-29 10:00:00+00')",
    "dow of a Sunday": "extract(dow FROM TIMESTAMPTZ '2026-11-29 10:00:00+00')",
    "iso week": "extract(week FROM TIMESTAMPTZ '2027-01-01 10:00:00+00')",
}


@pytest.mark.parametrize("expression", SAME_ANSWER.values(), ids=SAME_ANSWER.keys())
def test_a_translated_expression_gives_postgresql_s_answer(warehouse, db, expression):
    from elt.transforms.dialects import transpile

    expected = db.execute(f"SELECT {expression} AS v").fetchone()["v"]
    [got] = rows(warehouse, transpile(f"SELECT {expression} AS v", "bigquery"))
    if isinstance(expected, dt.datetime):
        assert got["v"] == expected, transpile(f"SELECT {expression} AS v", "bigquery")
    else:
        assert decimal.Decimal(str(got["v"])) == decimal.Decimal(str(expected))


# PostgreSQL's figure for each division over u = 1, 2, 4, 4, 5 (sum 16, count 5).
DIVISIONS = {
    "sum(u::int) / count(*)": 3, "7 / 2": 3, "-7 / 2": -3, "(max(u::int) + 2) / 2": 3, "7 / 2 / 2": 1,
    "div(7, 2)": 3, "coalesce(min(u::int), 0) / 2": 0, "sum(u::int)::numeric / count(*)": 3.2, "7.0 / 2": 3.5,
    "avg(u::int) / 2": 1.6, "count(*) * 1.0 / 2": 2.5, "sum(u::bigint) / 3": 16 / 3, "7 / 2 / 2.0": 1.5,
    "3000000000 / 7": 428571428, "extract(year FROM DATE '2023-06-01') / 2": 1011.5, "count(*) / -2": -2,
    "count(*) FILTER (WHERE u::int > 2) / nullif(count(*), 0)": 0, "sum(u::int) / nullif(3, 0)": 5,
}


def test_divisions_give_postgres_figures_on_bigquery(warehouse, db):
    # Before: BigQuery's / returned 3.2 for sum(u::int) / count(*) and 3.5 for 7 / 2, where PostgreSQL says 3.
    columns = ", ".join(f"{expr} AS c{i}" for i, expr in enumerate(DIVISIONS))
    sql = (f"WITH items AS (SELECT 1 AS u UNION ALL SELECT 2 UNION ALL SELECT 4 UNION ALL SELECT 4 UNION ALL SELECT 5)"
           f" SELECT {columns} FROM items")
    postgres = db.execute(sql).fetchone()
    bigquery = rows(warehouse, transpile(sql, "bigquery"))[0]
    for i, (expr, expected) in enumerate(DIVISIONS.items()):
        assert float(postgres[f"c{i}"]) == pytest.approx(expected), expr
        assert float(bigquery[f"c{i}"]) == pytest.approx(expected), (expr, bigquery[f"c{i}"])


def test_a_model_dividing_values_of_unknown_types_fails_naming_the_model(warehouse, tmp_path):
    wh = warehouse
    create_raw(wh, "shop_orders", "id")
    load_raw(wh, "shop_orders", make_orders(3))
    project = write_models(tmp_path / "p", {
        "stg/items.sql": "SELECT id, (_raw_payload->>'amount')::numeric AS u FROM raw.shop_orders\n",
        "mart/avg.sql": "SELECT sum(u) / count(*) AS avg_int, 7 / 2 AS seven_halves FROM stg.items\n",
    })
    result = build(wh, project).models["mart.avg"]
    assert result.status == "failed"
    assert (result.error or "").startswith("sql/mart/avg.sql: `SUM(u) / COUNT(*)` divides values whose types"), result.error
    assert wh._existing("mart.avg") is None
