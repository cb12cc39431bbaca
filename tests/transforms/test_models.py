"""Model files: header settings, data-test syntax, and the errors a wrong header gets."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from elt.errors import ConfigError
from elt.transforms.models import DataTest, Transform, discover
from tests.transforms.conftest import write_models


def test_header_settings_and_defaults_per_layer(tmp_path):
    project = write_models(tmp_path, {
        "mart/revenue.sql": """
            -- Revenue per day, paid orders only.
            -- materialized: incremental
            -- unique_key: day, currency
            -- watermark: day
            -- tests: unique(day, currency), warn not_null(revenue),
            -- tests: accepted_values(currency: AUD | NZD), freshness(day: 2d), row_count > 10
            SELECT 1;
        """,
        "stg/a.sql": "SELECT 1 AS x",
        "mart/b.sql": "SELECT 1 AS x",
        "rpt/c.sql": "WITH t AS (SELECT 1 AS x) SELECT * FROM t",
    })
    models = {m.relation: m for m in discover(project)}
    revenue = models["mart.revenue"]
    assert revenue.path == "sql/mart/revenue.sql" and revenue.sql.endswith("SELECT 1")  # no trailing semicolon
    config = revenue.config
    assert (config.materialized, config.unique_key, config.watermark) == ("incremental", ("day", "currency"), "day")
    assert [(t.kind, t.columns, t.args, t.warn) for t in config.tests] == [
        ("unique", ("day", "currency"), (), False),
        ("not_null", ("revenue",), (), True),
        ("accepted_values", ("currency",), ("AUD", "NZD"), False),
        ("freshness", ("day",), ("2d",), False),
        ("row_count", (), ("10",), False),
    ]
    assert [models[r].config.materialized for r in ("stg.a", "mart.b", "rpt.c")] == ["view", "table", "view"]


@pytest.mark.parametrize("header, message", [
    ("-- materialized: snapshot", "materialized: Input should be 'view', 'table', 'materialized_view' or 'incremental'"),
    ("-- materialised: table", "header setting 'materialised' is not known; did you mean 'materialized'?"),
    ("-- materialized: incremental\n-- unique_key: id", "incremental needs unique_key (what to merge on) and watermark"),
    ("-- tests: uniq(id)", "unknown test 'uniq(id)'"),
    ("-- tests: accepted_values(status)", "needs accepted_values(column: a, b)"),
    ("-- tests: relationships(customer_id: customers.id)", "relationships needs schema.table.column"),
    ("-- tests: freshness(at: soon)", "duration 'soon' should look like 30m, 24h or 2d"),
])
def test_a_wrong_header_names_the_file_and_the_fix(tmp_path, header, message):
    project = write_models(tmp_path, {"mart/x.sql": f"{header}\nSELECT 1 AS id"})
    with pytest.raises(ConfigError) as raised:
        discover(project)
    assert str(raised.value).startswith("sql/mart/x.sql: ")
    assert message in str(raised.value)


def test_a_file_without_a_select_is_an_error(tmp_path):
    project = write_models(tmp_path, {"stg/empty.sql": "-- materialized: view\n"})
    with pytest.raises(ConfigError, match="sql/stg/empty.sql: the file holds no SELECT"):
        discover(project)


def test_python_transform_becomes_a_model(tmp_path):
    class ClientHealth(Transform):
        """Health buckets computed in Python."""

        schema = "rpt"
        name = "client_health_py"
        materialized = "table"
        tests = "unique(id)"

        def sql(self):
            buckets = " + ".join(f"(spent > {n})::int" for n in (10, 50, 90))
            return f"SELECT customer_id AS id, {buckets} AS health FROM rpt.client_health;"

    (tmp_path / "sql").mkdir()
    model = next(m for m in discover(tmp_path) if m.relation == "rpt.client_health_py")
    assert model.config.materialized == "table" and model.config.tests == (DataTest.parse("unique(id)"),)
    assert "(spent > 90)::int" in model.sql and not model.sql.endswith(";")
    assert model.config.description == "Health buckets computed in Python."


PROJECT_WITH_A_TRANSFORM = '''
from elt import Pipeline, Transform

Pipeline("numbers", streams=[])


class Numbers(Transform):
    schema = "rpt"
    name = "numbers"
    materialized = "materialized_view"

    def sql(self):
        return "SELECT generate_series(1, 3) AS n"
'''

SHOW_IDENTITY = '''
import sys
from elt.pipeline import load_project
from elt.transforms.materialize import _comment
from elt.transforms.models import discover
project, _ = load_project(sys.argv[1])
model = next(m for m in discover(project) if m.relation == "rpt.numbers")
print(model.path, "|", _comment(model))
'''


def test_a_python_transform_keeps_its_identity_across_processes(tmp_path):
    # Two separate interpreters with different hash seeds: the identity (and so the stored
    # fingerprint that decides "unchanged, keep it") must not depend on Python's salted hash().
    (tmp_path / "pipelines.py").write_text(PROJECT_WITH_A_TRANSFORM, encoding="utf-8")
    (tmp_path / "sql").mkdir()
    seen = set()
    for seed in ("1", "2"):
        done = subprocess.run([sys.executable, "-c", SHOW_IDENTITY, str(tmp_path)], capture_output=True, text=True,
                              env={**os.environ, "PYTHONHASHSEED": seed}, timeout=60, check=True)
        seen.add(done.stdout.strip())
    assert len(seen) == 1, seen
    path, comment = seen.pop().split(" | ")
    assert path == "pipelines.py:Numbers"
    assert "_elt_project" not in comment


def test_transform_is_importable_from_elt():
    import elt

    assert elt.Transform is Transform and "Transform" in elt.__all__
