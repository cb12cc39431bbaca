"""Each data test passes on good data, fails on bad data, and a failure keeps the last good version."""

from __future__ import annotations

import pytest

from elt.transforms import Builder, project_graph
from tests.transforms.conftest import write_models

PARENT = """
    -- materialized: table
    SELECT * FROM (VALUES (1, 'a'), (2, 'b')) AS t(id, name)
"""

CASES = {
    # test header: (good SELECT, bad SELECT, failing rows reported)
    "unique(id)": ("VALUES (1, 'x', now()), (2, 'y', now())", "VALUES (1, 'x', now()), (1, 'y', now()), (2, 'z', now())", 1),
    "not_null(name)": ("VALUES (1, 'x', now())", "VALUES (1, NULL, now()), (2, NULL, now())", 2),
    "accepted_values(name: x, y)": ("VALUES (1, 'x', now()), (2, 'y', now())", "VALUES (1, 'x', now()), (2, 'q', now())", 1),
    "relationships(id: mart.parent.id)": (
        "VALUES (1, 'x', now()), (2, 'y', now())", "VALUES (1, 'x', now()), (3, 'y', now())", 1),
    "row_count > 1": ("VALUES (1, 'x', now()), (2, 'y', now())", "VALUES (1, 'x', now())", 1),
    "freshness(at: 1h)": ("VALUES (1, 'x', now())", "VALUES (1, 'x', now() - interval '2 hours')", 1),
}


def child(test: str, values: str) -> str:
    return f"-- materialized: table\n-- tests: {test}\nSELECT * FROM ({values}) AS t(id, name, at)\n"


def build(project, database_url):
    graph = project_graph(project, [])
    return Builder(database_url, graph).run(graph.select())


@pytest.mark.parametrize("test", list(CASES))
def test_each_data_test_fails_when_it_should_and_keeps_the_last_good_table(tmp_path, database_url, db, test):
    good, bad, failures = CASES[test]
    project = write_models(tmp_path, {"mart/parent.sql": PARENT, "mart/child.sql": child(test, good)})
    assert build(project, database_url).models["mart.child"].status == "success"
    rows_before = db.execute("SELECT count(*) AS n FROM mart.child").fetchone()["n"]

    write_models(project, {"mart/child.sql": child(test, bad)})
    result = build(project, database_url).models["mart.child"]
    assert result.status == "failed"
    kind = test.split("(")[0].split(" ")[0]
    assert f"test {test} on mart.child failed: {failures}" in result.error
    assert "mart.child was not replaced" in result.error
    assert kind in result.error
    # The last good version is still there.
    assert db.execute("SELECT count(*) AS n FROM mart.child").fetchone()["n"] == rows_before


def test_a_warn_test_logs_but_builds(tmp_path, database_url, db):
    project = write_models(tmp_path, {"mart/child.sql": child("warn not_null(name), unique(id)", "VALUES (1, NULL, now())")})
    result = build(project, database_url).models["mart.child"]
    assert result.status == "success"
    assert result.warnings == ["test warn not_null(name) on mart.child failed: 1 null rows"]
    assert db.execute("SELECT count(*) AS n FROM mart.child").fetchone()["n"] == 1


def test_a_failing_test_on_a_view_rolls_the_view_back(tmp_path, database_url, db):
    project = write_models(tmp_path, {"stg/v.sql": "-- tests: not_null(id)\nSELECT 1 AS id"})
    build(project, database_url)
    write_models(project, {"stg/v.sql": "-- tests: not_null(id)\nSELECT NULL::int AS id"})
    assert build(project, database_url).models["stg.v"].status == "failed"
    assert db.execute("SELECT id FROM stg.v").fetchone()["id"] == 1


def test_a_duplicate_unique_key_is_a_clear_error(tmp_path, database_url):
    project = write_models(tmp_path, {"mart/t.sql": "-- unique_key: id\nSELECT 1 AS id UNION ALL SELECT 1"})
    error = build(project, database_url).models["mart.t"].error
    assert "unique_key (id) is not unique in the new mart.t" in error and "Deduplicate in the SELECT" in error


def test_an_unreadable_view_names_the_column_whose_cast_fails(tmp_path, database_url, db):
    # Found by the reliability suite (attack 5, schema drift): the failure was PostgreSQL's bare
    # "invalid input syntax for type bigint", which does not say which field changed type.
    db.execute("CREATE TABLE public.source (amount text, note text)")
    db.execute("INSERT INTO public.source VALUES ('5', 'a'), ('n/a', 'b')")
    view = "-- materialized: view\n-- tests: readable\nSELECT note, amount::bigint AS amount FROM public.source\n"
    project = write_models(tmp_path, {"stg/amounts.sql": view})
    result = build(project, database_url).models["stg.amounts"]
    assert result.status == "failed"
    assert "column 'amount' cannot be read" in (result.error or "") and "bigint" in (result.error or ""), result.error
