"""SqlExtractor and CdcExtractor against a real PostgreSQL source (and SQLite), into a real PostgreSQL."""

from __future__ import annotations

import base64
import datetime as dt
import sqlite3

import psycopg
import pytest

from elt import CdcExtractor, Cursor, Pipeline, SqlExtractor
from elt.extractors.cdc import install_sql, remove_sql
from elt.runner import Runner
from tests.helpers import run

T0 = dt.datetime(2026, 4, 1, 12, 0, tzinfo=dt.UTC)


def source(url):
    return psycopg.connect(url, autocommit=True)


def payloads(db, table):
    return [r["p"] for r in db.execute(f"SELECT _raw_payload AS p FROM raw.{table} ORDER BY _row_seq").fetchall()]


def test_postgres_types_are_preserved_into_raw(source_url, loader, db):
    with source(source_url) as src:
        src.execute("CREATE TABLE items (id int PRIMARY KEY, at timestamptz, amount numeric(20, 6), doc jsonb,"
                    " blob bytea, day date, note text)")
        src.execute("INSERT INTO items VALUES (1, '2026-04-01 14:00+02', 12345678901234.123456,"
                    " '{\"a\": [1, {\"b\": null}]}', '\\x00ff10', '2026-04-01', 'Ünïcode ✓')")

    class Items(SqlExtractor):
        name = "items"
        table = "public.items"
        primary_key = "id"

    assert run(Pipeline("src", streams=[Items(url=source_url)]), loader).status == "success"
    [row] = payloads(db, "src_items")
    assert row["at"] == "2026-04-01T12:00:00Z"  # the instant, in UTC
    assert row["amount"] == "12345678901234.123456"  # exact: not squeezed through a float
    assert row["doc"] == {"a": [1, {"b": None}]}  # JSON stays JSON
    assert base64.b64decode(row["blob"]) == b"\x00\xff\x10"
    assert row["day"] == "2026-04-01" and row["note"] == "Ünïcode ✓"


def test_sqlite_table_and_query(tmp_path, loader, db):
    path = tmp_path / "shop.db"
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT, total REAL, updated TEXT)")
        con.executemany("INSERT INTO orders VALUES (?, ?, ?, ?)",
                        [(i, f"c{i % 3}", i * 1.5, f"2026-04-{1 + i % 9:02d} 10:00:00") for i in range(1, 101)])

    class Orders(SqlExtractor):
        name = "orders"
        url = f"sqlite:///{path}"
        table = "orders"
        primary_key = "id"
        cursor = "updated"
        page_size = 17

    class BigSpenders(SqlExtractor):
        name = "big_spenders"
        url = f"sqlite:///{path}"
        query = "SELECT customer, sum(total) AS spent FROM orders GROUP BY customer HAVING sum(total) > 2000;"
        primary_key = "customer"

    result = run(Pipeline("sq", streams=[Orders(), BigSpenders()]), loader)
    assert result.status == "success"
    assert sorted(r["id"] for r in payloads(db, "sq_orders")) == list(range(1, 101))
    assert {r["customer"] for r in payloads(db, "sq_big_spenders")} == {"c0", "c1", "c2"}
    state = db.execute("SELECT value FROM pipeline.state WHERE stream_name = 'orders' AND key = 'watermark'").fetchone()
    assert state["value"]["value"] == "2026-04-09T10:00:00+00:00"  # SQLite text read as a UTC timestamp


def test_50000_rows_sharing_3_timestamps_page_exactly_once(source_url, loader, db):
    with source(source_url) as src:
        src.execute("CREATE TABLE events (id int PRIMARY KEY, at timestamptz NOT NULL)")
        src.execute("INSERT INTO events SELECT i, %s::timestamptz + (i %% 3) * interval '1 minute'"
                    " FROM generate_series(1, 50000) i", [T0])

    class Events(SqlExtractor):
        name = "events"
        table = "events"
        primary_key = "id"
        cursor = Cursor("at")
        page_size = 7_000  # pages end in the middle of a run of equal timestamps
        batch_size = 5_000

    result = run(Pipeline("src", streams=[Events(url=source_url)]), loader)
    assert result.status == "success" and result.streams["events"].extracted == 50_000
    counts = db.execute("SELECT count(*) AS n, count(DISTINCT id) AS d FROM raw.src_events").fetchone()
    assert counts == {"n": 50_000, "d": 50_000}
    again = run(Pipeline("src", streams=[Events(url=source_url)]), loader)
    # Only the rows at the last timestamp are read again (inclusive bound), and none is stored twice.
    assert again.streams["events"].extracted == 50_000 // 3 + 1 and again.streams["events"].inserted == 0


def test_a_late_commit_inside_the_lookback_is_caught(source_url, loader, db):
    with source(source_url) as src:
        src.execute("CREATE TABLE orders (id int PRIMARY KEY, updated_at timestamptz NOT NULL, status text)")
        src.execute("INSERT INTO orders SELECT i, %s::timestamptz + i * interval '1 minute', 'new'"
                    " FROM generate_series(1, 30) i", [T0])

    class Orders(SqlExtractor):
        name = "orders"
        table = "orders"
        primary_key = "id"
        cursor = Cursor("updated_at", lookback=dt.timedelta(minutes=10))

    class OrdersNoLookback(Orders):
        name = "orders_no_lookback"
        cursor = Cursor("updated_at")

    pipeline = Pipeline("src", streams=[Orders(url=source_url), OrdersNoLookback(url=source_url)])
    run(pipeline, loader)
    with source(source_url) as src:
        # A transaction that started earlier commits now, with a timestamp below the watermark.
        src.execute("INSERT INTO orders VALUES (31, %s, 'late')", [T0 + dt.timedelta(minutes=25)])
    run(pipeline, loader)
    assert 31 in [r["id"] for r in payloads(db, "src_orders")]
    assert 31 not in [r["id"] for r in payloads(db, "src_orders_no_lookback")]  # why the lookback exists


def test_updates_between_runs_and_deletes_found_by_reconcile(source_url, loader, db):
    with source(source_url) as src:
        src.execute("CREATE TABLE customers (id int PRIMARY KEY, name text, updated_at timestamptz NOT NULL)")
        src.execute("INSERT INTO customers SELECT i, 'c' || i, %s FROM generate_series(1, 20) i", [T0])

    class Customers(SqlExtractor):
        name = "customers"
        table = "customers"
        primary_key = "id"
        cursor = Cursor("updated_at")
        write_strategy = "upsert"
        detect_deletes = True

    pipeline = Pipeline("src", streams=[Customers(url=source_url)])
    run(pipeline, loader)
    with source(source_url) as src:
        src.execute("UPDATE customers SET name = 'renamed', updated_at = %s WHERE id IN (2, 3)", [T0 + dt.timedelta(hours=1)])
        src.execute("DELETE FROM customers WHERE id IN (5, 6, 7)")
    second = run(pipeline, loader)
    assert second.streams["customers"].updated == 2
    assert {r["id"]: r["name"] for r in payloads(db, "src_customers")}[2] == "renamed"

    result = Runner(pipeline, loader=loader).reconcile()
    assert result.status == "success" and result.streams["customers"].deleted == 3
    deleted = db.execute("SELECT id FROM raw.src_customers WHERE _deleted_at IS NOT NULL ORDER BY id::int").fetchall()
    assert [r["id"] for r in deleted] == ["5", "6", "7"]
    log = db.execute("SELECT trigger, streams FROM pipeline.execution_log ORDER BY id DESC LIMIT 1").fetchone()
    assert log["trigger"] == "reconcile" and log["streams"]["customers"]["deleted"] == 3

    with source(source_url) as src:
        src.execute("INSERT INTO customers VALUES (6, 'back', %s)", [T0 + dt.timedelta(hours=2)])
        src.execute("DELETE FROM customers")  # and then everything vanishes: more likely a mistake than the truth
    refused = Runner(pipeline, loader=loader).reconcile()
    assert refused.status == "failed" and "the source returned no keys at all" in refused.summary.error_message
    assert db.execute("SELECT count(*) AS n FROM raw.src_customers WHERE _deleted_at IS NULL").fetchone()["n"] == 17


def test_cdc_captures_an_update_then_a_delete_of_the_same_row(source_url, loader, db):
    with source(source_url) as src:
        src.execute("CREATE TABLE accounts (id int PRIMARY KEY, balance numeric)")
        src.execute("INSERT INTO accounts VALUES (1, 100), (2, 50)")
        src.execute(install_sql("public.accounts"))
        src.execute(install_sql("public.accounts"))  # idempotent
        src.execute("UPDATE accounts SET balance = 75 WHERE id = 1")
        src.execute("DELETE FROM accounts WHERE id = 1")

    class AccountChanges(CdcExtractor):
        name = "account_changes"
        source_table = "public.accounts"

    pipeline = Pipeline("bank", streams=[AccountChanges(url=source_url)])
    assert run(pipeline, loader).status == "success"
    changes = sorted(payloads(db, "bank_account_changes"), key=lambda c: c["seq"])
    assert [(c["op"], (c["before"] or {}).get("balance"), (c["after"] or {}).get("balance")) for c in changes] == [
        ("update", 100, 75), ("delete", 75, None)]

    with source(source_url) as src:
        src.execute("INSERT INTO accounts VALUES (3, 10)")
        src.execute(remove_sql("public.accounts"))
        src.execute("UPDATE accounts SET balance = 0")  # not captured any more
    second = run(pipeline, loader)
    assert second.streams["account_changes"].inserted == 1
    assert [c["op"] for c in sorted(payloads(db, "bank_account_changes"), key=lambda c: c["seq"])] == [
        "update", "delete", "insert"]


def test_a_source_error_names_the_stream_and_hides_the_password(loader):
    class Missing(SqlExtractor):
        name = "missing"
        table = "nope"
        primary_key = "id"

    url = "postgresql://reader:s3cret-pass@127.0.0.1:1/shop"
    result = run(Pipeline("src", streams=[Missing(url=url)]), loader)
    assert result.status == "failed"
    assert "stream 'missing': reading nope failed" in result.summary.error_message
    assert "s3cret-pass" not in result.summary.error_message


@pytest.mark.parametrize("settings, message", [
    ({}, "set url"),
    ({"url": "sqlite://", "table": "t", "query": "SELECT 1"}, "set exactly one of table or query"),
    ({"url": "sqlite://", "table": "t", "detect_deletes": True, "primary_key": ()}, "detect_deletes needs a primary_key"),
])
def test_configuration_errors(settings, message):
    from elt.errors import ConfigError

    class Bad(SqlExtractor):
        name = "bad"

    with pytest.raises(ConfigError, match=message):
        Bad(**settings)
