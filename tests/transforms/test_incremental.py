"""Incremental models equal a full refresh of the same SQL after late rows, updates, deletes and changed joins."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import psycopg
import pytest

from elt.errors import ConfigError
from elt.loaders.postgres import PostgresStore
from elt.transforms import Builder
from elt.transforms.graph import Graph
from elt.transforms.incremental import overdue
from elt.transforms.models import discover
from tests.transforms.conftest import write_models

BASE = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)

MODELS = {
    # Watermarked on a business timestamp, with a WHERE that a cancellation leaves.
    "mart/orders_by_time.sql": """
        -- materialized: incremental
        -- unique_key: id
        -- watermark: updated_at
        -- lookback: 2d
        SELECT id, customer_id, status, amount, updated_at FROM src.orders WHERE status <> 'cancelled'
    """,
    # A joined table's change moves the row into the window through the watermark.
    "mart/orders_with_country.sql": """
        -- materialized: incremental
        -- unique_key: id
        -- watermark: changed_at
        -- lookback: 2d
        SELECT o.id, c.country, o.amount, greatest(o.updated_at, c.updated_at) AS changed_at
        FROM src.orders AS o JOIN src.customers AS c ON c.id = o.customer_id
        WHERE o.status <> 'cancelled'
    """,
    # Watermarked on the load time (the transaction's start, like _loaded_at): late commits.
    "mart/orders_by_load.sql": """
        -- materialized: incremental
        -- unique_key: id
        -- watermark: loaded_at
        -- full_refresh_every: 1d
        SELECT id, status, amount, loaded_at FROM src.orders
    """,
}


@pytest.fixture
def project(tmp_path: Path, db, loader) -> Path:
    db.execute("CREATE SCHEMA src")
    db.execute("CREATE TABLE src.customers (id int PRIMARY KEY, country text, updated_at timestamptz)")
    db.execute("CREATE TABLE src.orders (id int PRIMARY KEY, customer_id int, status text, amount numeric(12, 2),"
               " updated_at timestamptz, loaded_at timestamptz NOT NULL DEFAULT now())")
    db.execute("INSERT INTO src.customers SELECT c, 'NZ', %s FROM generate_series(1, 10) AS c", [BASE])
    db.execute("INSERT INTO src.orders (id, customer_id, status, amount, updated_at)"
               " SELECT i, 1 + i %% 10, 'paid', i, %s + i * interval '1 hour' FROM generate_series(1, 100) AS i", [BASE])
    return write_models(tmp_path, MODELS)


def build(project: Path, url: str, select=(), full_refresh=False):
    graph = Graph.build(discover(project), external={"src.orders", "src.customers"})
    result = Builder(url, graph, threads=2, full_refresh=full_refresh).run(graph.select(list(select)))
    assert result.status == "success", result.failures
    return result


def assert_equal_to_full_refresh(db, project: Path, only: str | None = None) -> None:
    for model in discover(project):
        if only and model.relation != only:
            continue
        incremental = db.execute(f"SELECT * FROM {model.relation} ORDER BY 1").fetchall()
        full = db.execute(f"SELECT * FROM ({model.sql}) AS m ORDER BY 1").fetchall()
        assert incremental == full, model.relation


def test_each_incremental_model_equals_a_full_refresh_after_late_rows_updates_deletes_and_joins(project, db,
                                                                                                 database_url):
    build(project, database_url)
    newest = BASE + dt.timedelta(hours=100)
    # Late rows: a business timestamp a day behind the newest one, loaded now.
    db.execute("INSERT INTO src.orders (id, customer_id, status, amount, updated_at)"
               " SELECT i, 1 + i %% 10, 'paid', i, %s FROM generate_series(101, 110) AS i", [newest - dt.timedelta(days=1)])
    # Updates, a late update (older timestamp than the newest), cancellations the WHERE drops, a hard delete.
    db.execute("UPDATE src.orders SET amount = amount + 1, updated_at = %s, loaded_at = now() WHERE id BETWEEN 95 AND 96",
               [newest + dt.timedelta(hours=1)])
    db.execute("UPDATE src.orders SET amount = 0, updated_at = %s, loaded_at = now() WHERE id = 90",
               [newest - dt.timedelta(hours=20)])
    db.execute("UPDATE src.orders SET status = 'cancelled', updated_at = %s, loaded_at = now() WHERE id IN (97, 98)",
               [newest + dt.timedelta(hours=2)])
    db.execute("DELETE FROM src.orders WHERE id = 99")
    # A customer moves country: every one of their orders changes in the joined model.
    db.execute("UPDATE src.customers SET country = 'AU', updated_at = %s WHERE id = 3", [newest + dt.timedelta(hours=3)])

    result = build(project, database_url)
    assert {r.action.split(" ")[0] for r in result.models.values()} == {"merged"}
    assert "removed" in result.models["mart.orders_by_time"].action
    assert_equal_to_full_refresh(db, project)
    assert db.execute("SELECT count(*) AS n FROM mart.orders_with_country WHERE country = 'AU'").fetchone()["n"] == 11


def test_a_load_that_commits_late_is_not_skipped(project, db, database_url):
    build(project, database_url)
    with psycopg.connect(database_url) as slow:
        # Starts first (its loaded_at is its start time), commits last.
        slow.execute("INSERT INTO src.orders (id, customer_id, status, amount, updated_at) VALUES (200, 1, 'paid', 1, %s)",
                     [BASE])
        db.execute("INSERT INTO src.orders (id, customer_id, status, amount, updated_at) VALUES (201, 1, 'paid', 1, %s)",
                   [BASE])
        build(project, database_url, select=["mart.orders_by_load"])
        assert db.execute("SELECT max(id) AS m FROM mart.orders_by_load").fetchone()["m"] == 201
        slow.commit()
    build(project, database_url, select=["mart.orders_by_load"])
    assert db.execute("SELECT count(*) AS n FROM mart.orders_by_load WHERE id = 200").fetchone()["n"] == 1
    assert_equal_to_full_refresh(db, project, only="mart.orders_by_load")


def test_a_run_with_nothing_new_reads_only_the_window(project, db, database_url):
    # A volatile function in the SELECT counts the rows the model's query evaluates.
    db.execute("CREATE SEQUENCE src.evaluated")
    db.execute("CREATE FUNCTION src.counted(i int) RETURNS int LANGUAGE sql VOLATILE"
               " AS $$ SELECT nextval('src.evaluated')::int * 0 + i $$")
    db.execute("CREATE INDEX ON src.orders (updated_at)")
    write_models(project, {"mart/orders_counted.sql": """
        -- materialized: incremental
        -- unique_key: id
        -- watermark: updated_at
        SELECT src.counted(id) AS id, amount, updated_at FROM src.orders
    """})
    build(project, database_url, select=["mart.orders_counted"])
    before = db.execute("SELECT last_value AS n FROM src.evaluated").fetchone()["n"]
    again = build(project, database_url, select=["mart.orders_counted"])
    assert again.models["mart.orders_counted"].rows == 0
    # Only the row at the newest watermark was evaluated again, not all 100.
    assert db.execute("SELECT last_value AS n FROM src.evaluated").fetchone()["n"] - before == 1


def test_elt_check_flags_an_incremental_model_without_a_recent_full_refresh(project, db, database_url):
    store = PostgresStore(database_url, "test database")

    def overdue_full_refreshes(url, project_dir, now=None):
        return overdue(project_dir, store.model_refreshes, now)

    problems = overdue_full_refreshes(database_url, project)
    assert [p[0] for p in problems] == ["mart.orders_by_load"] and "never" in problems[0][1]
    build(project, database_url)
    assert overdue_full_refreshes(database_url, project) == []
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    problems = overdue_full_refreshes(database_url, project, now=later)
    assert [p[0] for p in problems] == ["mart.orders_by_load"]
    assert "elt transform --full-refresh --select mart.orders_by_load" in problems[0][1]
    # A merge is not a full refresh; --full-refresh is.
    build(project, database_url, select=["mart.orders_by_load"])
    assert len(overdue_full_refreshes(database_url, project, now=later)) == 1
    build(project, database_url, select=["mart.orders_by_load"], full_refresh=True)
    assert overdue_full_refreshes(database_url, project, now=later - dt.timedelta(hours=25)) == []


@pytest.mark.parametrize(("header", "message"), [
    ("-- materialized: table\n-- lookback: 2d\n", "apply to materialized: incremental only"),
    ("-- materialized: incremental\n-- unique_key: id\n-- watermark: id\n-- lookback: soon\n", "lookback 'soon'"),
])
def test_wrong_incremental_settings_name_the_file(tmp_path, header, message):
    write_models(tmp_path, {"mart/x.sql": header + "SELECT 1 AS id"})
    with pytest.raises(ConfigError, match=message):
        discover(tmp_path)
