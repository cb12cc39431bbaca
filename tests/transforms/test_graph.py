"""Dependencies read from the SQL, build order, cycles, missing models and selections."""

from __future__ import annotations

import pytest

from elt.errors import ConfigError
from elt.transforms import project_graph
from elt.transforms.graph import references
from tests.transforms.conftest import MODELS, write_models


def test_references_skip_ctes_and_find_joins_and_subqueries():
    sql = """
        WITH recent AS (SELECT * FROM stg.orders WHERE updated_at > now() - interval '1 day')
        SELECT r.*, c.name FROM recent r JOIN mart.customers c ON c.id = r.customer_id
        WHERE r.id IN (SELECT order_id FROM raw.shop_refunds)
    """
    assert references(sql) == {"stg.orders", "mart.customers", "raw.shop_refunds"}


def test_build_order_of_the_shop_project(tmp_path):
    graph = project_graph(write_models(tmp_path, MODELS), [])
    order = [m.relation for m in graph.order()]
    assert order == [
        "stg.shop_customers", "stg.shop_orders", "mart.customers", "mart.orders_incremental", "mart.orders",
        "mart.daily_revenue", "rpt.client_health", "rpt.status_mix", "rpt.revenue_by_month", "rpt.top_customers",
    ]
    # The relationships test of mart.orders reads mart.customers: that is a dependency too.
    assert graph.models["mart.orders"].depends_on == {"stg.shop_orders", "mart.customers"}


def test_a_cycle_names_the_files(tmp_path):
    project = write_models(tmp_path, {
        "mart/a.sql": "SELECT * FROM mart.b",
        "mart/b.sql": "SELECT * FROM rpt.c",
        "rpt/c.sql": "SELECT * FROM mart.a",
        "stg/ok.sql": "SELECT 1 AS x",
    })
    with pytest.raises(ConfigError) as raised:
        project_graph(project, [])
    assert str(raised.value) == ("models depend on each other in a cycle: sql/mart/a.sql (mart.a) -> sql/mart/b.sql"
                                 " (mart.b) -> sql/rpt/c.sql (rpt.c) -> sql/mart/a.sql (mart.a)")


def test_a_reference_to_a_missing_model_names_both_files(tmp_path):
    project = write_models(tmp_path, {"rpt/r.sql": "SELECT * FROM mart.revenue JOIN raw.anything USING (id)"})
    with pytest.raises(ConfigError, match=r"sql/rpt/r.sql selects from mart.revenue, but there is no sql/mart/revenue.sql"):
        project_graph(project, [])


def test_a_generated_stg_view_of_a_stream_is_not_a_missing_model(tmp_path):
    from elt import Cursor, Pipeline
    from tests.helpers import list_stream

    pipeline = Pipeline("shop", streams=[list_stream([], name="events", primary_key="id", cursor=Cursor("at"))])
    project = write_models(tmp_path, {"mart/e.sql": "SELECT * FROM stg.shop_events"})
    assert project_graph(project, [pipeline]).models["mart.e"].depends_on == set()


@pytest.mark.parametrize("selectors, layers, expected", [
    (["orders"], [], {"mart.orders"}),
    (["mart.daily_revenue+"], [], {"mart.daily_revenue", "rpt.revenue_by_month"}),
    (["+mart.daily_revenue"], [], {"mart.daily_revenue", "mart.orders", "stg.shop_orders", "mart.customers",
                                   "stg.shop_customers"}),
    ([], ["rpt"], {"rpt.client_health", "rpt.top_customers", "rpt.status_mix", "rpt.revenue_by_month"}),
])
def test_selection(tmp_path, selectors, layers, expected):
    graph = project_graph(write_models(tmp_path, MODELS), [])
    assert graph.select(selectors, layers) == expected
    assert len(graph.select()) == 10  # nothing given: everything


def test_an_unknown_or_ambiguous_selection_says_what_exists(tmp_path):
    graph = project_graph(write_models(tmp_path, {"stg/x.sql": "SELECT 1 AS a", "mart/x.sql": "SELECT 1 AS a"}), [])
    with pytest.raises(ConfigError, match=r"model name 'x' is ambiguous \(mart.x, stg.x\)"):
        graph.select(["x"])
    with pytest.raises(ConfigError, match="no model 'y'; models: mart.x, stg.x"):
        graph.select(["y"])
