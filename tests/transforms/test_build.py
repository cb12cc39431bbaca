"""Building models on a real PostgreSQL: order, isolation of failures, atomic swaps, incremental merges."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from elt.pipeline import registered
from elt.runner import Runner
from elt.transforms import Builder, project_graph
from tests.helpers import run
from tests.transforms.conftest import make_orders, write_models


def build(project, database_url, select=(), full_refresh=False, threads=4):
    graph = project_graph(project, registered().values())
    return Builder(database_url, graph, threads=threads, full_refresh=full_refresh).run(graph.select(select))


def test_a_pipeline_loads_then_builds_ten_models_in_order(shop, loader, db):
    source, project = shop
    result = run(source.pipeline, loader, project_dir=project)
    assert result.status == "success", result.summary.error_message
    models = result.models.models
    assert len(models) == 10 and all(m.status == "success" for m in models.values())
    order = list(models)
    for later, earlier in [("mart.orders", "stg.shop_orders"), ("mart.daily_revenue", "mart.orders"),
                           ("rpt.revenue_by_month", "mart.daily_revenue"), ("rpt.top_customers", "rpt.client_health"),
                           ("rpt.client_health", "mart.customers")]:
        assert order.index(earlier) < order.index(later)

    paid = [o for o in source.orders if o["status"] == "paid"]
    revenue = db.execute("SELECT sum(revenue) AS r, sum(orders) AS n FROM mart.daily_revenue").fetchone()
    assert revenue["n"] == len(paid)
    assert float(revenue["r"]) == pytest.approx(sum(float(o["amount"]) for o in paid))
    health = db.execute("SELECT customer_id, orders FROM rpt.client_health ORDER BY 1").fetchall()
    assert [h["orders"] for h in health] == [sum(1 for o in source.orders if o["customer_id"] == c) for c in range(1, 6)]
    assert db.execute("SELECT count(*) AS n FROM rpt.top_customers").fetchone()["n"] == 3
    # The typed staging model replaced the loader's generated view, and the loader leaves it alone after.
    comment = db.execute("SELECT obj_description('stg.shop_orders'::regclass) AS c").fetchone()["c"]
    assert comment.startswith("elt:model sql/stg/shop_orders.sql")
    logged = db.execute("SELECT status, rows_transformed FROM pipeline.execution_log").fetchone()
    assert logged["status"] == "success"
    assert logged["rows_transformed"] == result.models.rows_transformed > 0

    assert run(source.pipeline, loader, project_dir=project).status == "success"
    comment = db.execute("SELECT obj_description('stg.shop_orders'::regclass) AS c").fetchone()["c"]
    assert comment.startswith("elt:model")
    assert db.execute("SELECT data_type FROM information_schema.columns WHERE table_schema = 'stg'"
                      " AND table_name = 'shop_orders' AND column_name = 'amount'").fetchone()["data_type"] == "numeric"


def test_a_broken_model_stops_only_its_dependents_and_the_run_ends_partial(shop, loader, db):
    source, project = shop
    write_models(project, {"mart/daily_revenue.sql": "SELECT date_trunc('day', updated_at) AS day, sum(amont) AS revenue"
                                                     " FROM mart.orders GROUP BY 1"})
    result = run(source.pipeline, loader, project_dir=project)
    assert result.status == "partial"
    models = result.models.models
    assert models["mart.daily_revenue"].status == "failed"
    assert 'column "amont" does not exist' in models["mart.daily_revenue"].error
    assert models["rpt.revenue_by_month"].status == "skipped"
    assert "upstream mart.daily_revenue failed" in models["rpt.revenue_by_month"].error
    built = [r for r, m in models.items() if m.status == "success"]
    assert len(built) == 8 and "rpt.client_health" in built
    message = result.summary.error_message
    assert "model mart.daily_revenue: sql/mart/daily_revenue.sql:" in message
    assert "model rpt.revenue_by_month: skipped" in message
    # The loads are kept, and the log row says what failed.
    assert db.execute("SELECT count(*) AS n FROM raw.shop_orders").fetchone()["n"] == 40
    logged = db.execute("SELECT models FROM pipeline.execution_log").fetchone()["models"]
    assert logged["mart.daily_revenue"]["status"] == "failed"
    assert logged["rpt.client_health"]["status"] == "success"


def test_a_table_swap_never_shows_a_half_built_table(shop, loader, db, database_url):
    source, project = shop
    assert run(source.pipeline, loader, project_dir=project).status == "success"
    before = db.execute("SELECT count(*) AS n FROM mart.orders").fetchone()["n"]
    source.orders.extend(make_orders(70)[40:])
    source.pipeline.transforms = False  # load only: the build below is the one under watch
    run(source.pipeline, loader, project_dir=project, streams=["orders"])
    # A slow build: the new table takes about a second to fill.
    write_models(project, {"mart/orders.sql": "SELECT o.*, pg_sleep(0.03) IS NULL AS slow FROM stg.shop_orders AS o"})

    seen: list[object] = []
    stop = threading.Event()

    def reader():
        with psycopg.connect(database_url, autocommit=True) as conn:
            while not stop.is_set() and len(seen) < 10_000:
                try:
                    seen.append(conn.execute("SELECT count(*) FROM mart.orders").fetchone()[0])
                except psycopg.Error as exc:
                    seen.append(exc)
                time.sleep(0.005)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        result = build(project, database_url, select=["mart.orders"])
    finally:
        stop.set()
        thread.join(timeout=30)
    assert result.models["mart.orders"].status == "success"
    assert not [s for s in seen if isinstance(s, Exception)]
    assert set(seen) <= {before, 70} and seen[0] == before and seen[-1] == 70


def test_incremental_model_equals_a_full_rebuild_after_several_runs(shop, loader, db, database_url):
    source, project = shop
    run(source.pipeline, loader, project_dir=project)
    for version in (1, 2, 3):
        # Some orders change (later updated_at, new status/amount), some are new.
        changed = make_orders(60, version=version)
        source.orders[:] = [o for o in source.orders if o["id"] % (version + 2)] + [
            o for o in changed if o["id"] % (version + 2) == 0 or o["id"] > len(source.orders)]
        result = run(source.pipeline, loader, project_dir=project)
        assert result.models.models["mart.orders_incremental"].action == "merged"
    incremental = db.execute("SELECT * FROM mart.orders_incremental ORDER BY id").fetchall()
    full = db.execute("SELECT id, customer_id, status, amount, updated_at FROM stg.shop_orders ORDER BY id").fetchall()
    assert incremental == full

    rebuilt = build(project, database_url, select=["mart.orders_incremental"], full_refresh=True)
    assert rebuilt.models["mart.orders_incremental"].action.startswith("rebuilt")
    assert db.execute("SELECT * FROM mart.orders_incremental ORDER BY id").fetchall() == full


def test_incremental_merge_counts_only_changed_rows(shop, loader, db, database_url):
    source, project = shop
    run(source.pipeline, loader, project_dir=project)
    again = build(project, database_url, select=["mart.orders_incremental"])
    # Only rows at the newest watermark are re-read, and they are unchanged.
    assert again.models["mart.orders_incremental"].rows == 0


def test_views_reading_a_rebuilt_table_survive_with_their_grants(shop, loader, db, database_url):
    source, project = shop
    run(source.pipeline, loader, project_dir=project)
    db.execute("CREATE SCHEMA bi")
    db.execute("CREATE VIEW bi.big_orders AS SELECT * FROM mart.orders WHERE amount > 50")
    db.execute("CREATE VIEW bi.big_order_count AS SELECT count(*) AS n FROM bi.big_orders")
    db.execute("DO $$ BEGIN CREATE ROLE metabase_reader; EXCEPTION WHEN duplicate_object THEN NULL; END $$")
    db.execute("GRANT SELECT ON mart.orders, bi.big_orders TO metabase_reader")
    result = build(project, database_url, select=["mart.orders"])
    # bi.big_orders, bi.big_order_count, and the models rpt.status_mix, rpt.client_health, rpt.top_customers
    assert "5 dependent views kept" in result.models["mart.orders"].action
    assert db.execute("SELECT n FROM bi.big_order_count").fetchone()["n"] == sum(
        1 for o in source.orders if float(o["amount"]) > 50)
    grants = db.execute(
        "SELECT table_schema || '.' || table_name AS t FROM information_schema.role_table_grants"
        " WHERE grantee = 'metabase_reader' AND privilege_type = 'SELECT' ORDER BY 1").fetchall()
    assert [g["t"] for g in grants] == ["bi.big_orders", "mart.orders"]


def test_materialized_view_refreshes_concurrently_and_views_are_kept_when_unchanged(shop, loader, db, database_url):
    source, project = shop
    run(source.pipeline, loader, project_dir=project)
    source.orders.append(dict(make_orders(41)[-1]))
    result = run(source.pipeline, loader, project_dir=project)
    models = result.models.models
    # Its upstream tables were swapped, and each swap computed it from the new data: not refreshed again.
    assert models["rpt.client_health"].action == "kept (computed when its upstream was swapped)"
    assert models["rpt.status_mix"].action == "kept (unchanged)"
    assert db.execute("SELECT sum(orders) AS n FROM rpt.client_health").fetchone()["n"] == 41
    alone = build(project, database_url, select=["rpt.client_health"])
    assert alone.models["rpt.client_health"].action == "refreshed concurrently"


def test_pipeline_transforms_false_builds_nothing(shop, loader, db):
    source, project = shop
    source.pipeline.transforms = False
    result = run(source.pipeline, loader, project_dir=project)
    assert result.models is None
    assert db.execute("SELECT to_regclass('mart.orders') AS t").fetchone()["t"] is None


def test_transform_runs_are_logged(shop, loader, db):
    source, project = shop
    run(source.pipeline, loader, project_dir=project)
    result = Runner(source.pipeline, project_dir=project, loader=loader).transform(["mart.orders+"])
    assert result.status == "success"
    assert set(result.models.models) == {"mart.orders", "mart.daily_revenue", "rpt.revenue_by_month",
                                         "rpt.client_health", "rpt.top_customers", "rpt.status_mix"}
    row = db.execute("SELECT pipeline_name, trigger, status, rows_transformed FROM pipeline.execution_log"
                     " ORDER BY id DESC LIMIT 1").fetchone()
    assert row == {"pipeline_name": "transforms", "trigger": "transform", "status": "success",
                   "rows_transformed": result.models.rows_transformed}


def test_independent_models_build_in_parallel_up_to_the_limit(tmp_path, database_url):
    # Three independent models of ~0.6 s each, and one that reads all three.
    slow = {f"mart/m{i}.sql": f"SELECT {i} AS id, pg_sleep(0.6) IS NULL AS slept" for i in range(3)}
    slow["rpt/all.sql"] = "SELECT * FROM mart.m0 UNION ALL SELECT * FROM mart.m1 UNION ALL SELECT * FROM mart.m2"
    project = write_models(tmp_path, slow)
    timings = {}
    for threads in (1, 3):
        started = time.monotonic()
        result = build(project, database_url, threads=threads, full_refresh=True)
        timings[threads] = time.monotonic() - started
        assert result.status == "success"
        assert list(result.models)[-1] == "rpt.all"  # built only after all three
    assert timings[1] >= 1.8
    assert timings[3] < 1.5


def test_a_python_transform_builds_with_the_sql_models(shop, loader, db):
    from elt.transforms import Transform

    class OrderBuckets(Transform):
        """Orders per amount bucket; the bucket edges come from Python."""

        schema = "rpt"
        name = "order_buckets"
        materialized = "table"
        tests = "unique(bucket), row_count > 0"

        def sql(self):
            edges = [25, 50, 75]
            case = " ".join(f"WHEN amount < {e} THEN 'under {e}'" for e in edges)
            return f"SELECT CASE {case} ELSE 'over {edges[-1]}' END AS bucket, count(*) AS n FROM mart.orders GROUP BY 1"

    source, project = shop
    result = run(source.pipeline, loader, project_dir=project)
    assert result.models.models["rpt.order_buckets"].status == "success"
    order = list(result.models.models)
    assert order.index("mart.orders") < order.index("rpt.order_buckets")
    assert db.execute("SELECT sum(n) AS n FROM rpt.order_buckets").fetchone()["n"] == 40


def test_models_of_a_stream_with_no_data_yet_wait_instead_of_failing(tmp_path, database_url):
    from elt import Pipeline
    from tests.helpers import list_stream

    Pipeline("shop", streams=[list_stream([], name="refunds", primary_key="id")])
    project = write_models(tmp_path, {
        "stg/refunds.sql": "SELECT (_raw_payload->>'id')::int AS id FROM raw.shop_refunds",
        "mart/refund_count.sql": "SELECT count(*) AS n FROM stg.refunds",
        "mart/broken.sql": "SELECT nope FROM raw.shop_refunds_typo_is_not_missing_data",
        "stg/ok.sql": "SELECT 1 AS id",
    })
    result = build(project, database_url)
    models = result.models
    assert models["stg.refunds"].status == "waiting"
    assert models["stg.refunds"].error == "waiting: raw.shop_refunds has no data yet (no records loaded so far)"
    assert models["mart.refund_count"].status == "waiting"  # and so does what reads it
    assert models["stg.ok"].status == "success"
    # A raw table no stream of the project loads is a mistake, not missing data.
    assert models["mart.broken"].status == "failed" and "does not exist" in models["mart.broken"].error
    assert set(result.failures) == {"mart.broken"}
