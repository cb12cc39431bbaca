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


# --- issue 14: NULL cursors, time zones, values JSON cannot hold, odd names, index ranges ------------


def test_rows_with_a_null_cursor_are_read_in_their_own_pass(source_url, loader, db):
    with source(source_url) as src:
        src.execute("CREATE TABLE tasks (id int PRIMARY KEY, done_at timestamptz)")
        src.execute("INSERT INTO tasks SELECT i, CASE WHEN i %% 2 = 0 THEN NULL ELSE %s::timestamptz"
                    " + i * interval '1 minute' END FROM generate_series(1, 10) i", [T0])

    class Tasks(SqlExtractor):
        name = "tasks"
        table = "tasks"
        primary_key = "id"
        cursor = Cursor("done_at")
        page_size = 3  # short pages in both passes

    pipeline = Pipeline("src", streams=[Tasks(url=source_url)])
    first = run(pipeline, loader)
    assert first.status == "success" and first.streams["tasks"].extracted == 10
    assert sorted(r["id"] for r in payloads(db, "src_tasks")) == list(range(1, 11))
    state = db.execute("SELECT value FROM pipeline.state WHERE stream_name = 'tasks' AND key = 'watermark'").fetchone()
    assert state["value"]["value"] == (T0 + dt.timedelta(minutes=9)).isoformat()  # NULLs do not move it
    with source(source_url) as src:
        src.execute("INSERT INTO tasks VALUES (11, NULL)")
        src.execute("UPDATE tasks SET done_at = %s WHERE id = 2", [T0 + dt.timedelta(hours=1)])
    second = run(pipeline, loader)
    # The last watermark row, 2 (now timed) and the NULL rows 4, 6, 8, 10, 11 are read; 11 and 2's new version stored.
    assert second.streams["tasks"].extracted == 1 + 1 + 5 and second.streams["tasks"].inserted == 2
    latest = {r["id"]: r["done_at"] for r in payloads(db, "src_tasks")}
    assert latest[11] is None and latest[2] == "2026-04-01T13:00:00Z"


@pytest.fixture
def berlin_source(source_url):
    """The source database's sessions default to Europe/Berlin (UTC+2 in April)."""
    with source(source_url) as src:
        name = src.info.dbname
        src.execute(f'ALTER DATABASE "{name}" SET timezone = \'Europe/Berlin\'')
    with source(source_url) as src:
        assert src.execute("SHOW TimeZone").fetchone()[0] == "Europe/Berlin"
    return source_url


def test_a_timestamp_without_zone_cursor_round_trips_under_a_berlin_source_session(berlin_source, loader, db):
    with source(berlin_source) as src:
        src.execute("CREATE TABLE readings (id int PRIMARY KEY, taken timestamp NOT NULL)")
        src.execute("INSERT INTO readings SELECT i, timestamp '2026-04-01 12:00' + i * interval '1 minute'"
                    " FROM generate_series(1, 100) i")

    class Readings(SqlExtractor):
        name = "readings"
        table = "readings"
        primary_key = "id"
        cursor = Cursor("taken")
        page_size = 30

    pipeline = Pipeline("src", streams=[Readings(url=berlin_source)])
    assert run(pipeline, loader).streams["readings"].extracted == 100
    with source(berlin_source) as src:
        # Later than the watermark in the column's own terms, earlier once read as Berlin time.
        src.execute("INSERT INTO readings SELECT i, timestamp '2026-04-01 12:00' + i * interval '1 minute'"
                    " FROM generate_series(101, 150) i")
    second = run(pipeline, loader)
    assert second.status == "success" and second.streams["readings"].inserted == 50
    assert sorted(r["id"] for r in payloads(db, "src_readings")) == list(range(1, 151))


def test_a_timestamptz_key_reads_the_same_text_whatever_the_session_zone(berlin_source, loader, db):
    with source(berlin_source) as src:
        src.execute("CREATE TABLE ticks (at timestamptz PRIMARY KEY, v int)")
        src.execute("INSERT INTO ticks SELECT %s::timestamptz + i * interval '1 hour', i FROM generate_series(1, 20) i",
                    [T0])

    class Ticks(SqlExtractor):
        name = "ticks"
        table = "ticks"
        primary_key = "at"
        detect_deletes = True

    pipeline = Pipeline("src", streams=[Ticks(url=berlin_source)])
    run(pipeline, loader)
    keys = [r["at"] for r in db.execute("SELECT at FROM raw.src_ticks ORDER BY at").fetchall()]
    assert keys[0] == "2026-04-01T13:00:00+00:00"  # UTC text, not the Berlin session's +02:00
    result = Runner(pipeline, loader=loader).reconcile()
    assert result.streams["ticks"].deleted == 0
    again = run(Pipeline("src", streams=[Ticks(url=berlin_source)]), loader, full_refresh=True)
    assert again.status == "success"
    assert db.execute("SELECT count(*) AS n FROM raw.src_ticks").fetchone()["n"] == 20  # no key stored twice


def test_nan_infinity_floats_and_infinite_timestamps_are_kept_as_data(source_url, loader, db):
    with source(source_url) as src:
        src.execute("CREATE TABLE odd (id int PRIMARY KEY, f float8, n numeric, at timestamptz, ts timestamp, d date)")
        src.execute("INSERT INTO odd VALUES (1, 'NaN', 'NaN', 'infinity', '-infinity', 'infinity'),"
                    " (2, 'Infinity', 'Infinity', '-infinity', 'infinity', '-infinity'),"
                    " (3, '-Infinity', 1.5, '2026-04-01 12:00+00', '2026-04-01 12:00', '2026-04-01')")

    class Odd(SqlExtractor):
        name = "odd"
        table = "odd"
        primary_key = "id"

    assert run(Pipeline("src", streams=[Odd(url=source_url)]), loader).status == "success"
    rows = {r["id"]: r for r in payloads(db, "src_odd")}
    assert [rows[i]["f"] for i in (1, 2, 3)] == ["NaN", "Infinity", "-Infinity"]
    assert [rows[i]["n"] for i in (1, 2, 3)] == ["NaN", "Infinity", "1.5"]
    assert (rows[1]["at"], rows[1]["ts"], rows[1]["d"]) == ("infinity", "-infinity", "infinity")
    assert (rows[2]["at"], rows[2]["ts"], rows[2]["d"]) == ("-infinity", "infinity", "-infinity")
    assert (rows[3]["at"], rows[3]["ts"], rows[3]["d"]) == ("2026-04-01T12:00:00Z", "2026-04-01T12:00:00", "2026-04-01")


def test_an_infinite_cursor_value_goes_to_dead_letters_and_the_rest_loads(source_url, loader, db):
    with source(source_url) as src:
        src.execute("CREATE TABLE subs (id int PRIMARY KEY, ends timestamptz NOT NULL)")
        src.execute("INSERT INTO subs SELECT i, %s::timestamptz + i * interval '1 day' FROM generate_series(1, 5) i", [T0])
        src.execute("INSERT INTO subs VALUES (6, 'infinity'), (7, 'infinity')")

    class Subs(SqlExtractor):
        name = "subs"
        table = "subs"
        primary_key = "id"
        cursor = Cursor("ends")
        page_size = 6  # the page boundary falls on an infinite value

    result = run(Pipeline("src", streams=[Subs(url=source_url)]), loader)
    assert result.status != "success" and result.streams["subs"].extracted == 7
    assert sorted(r["id"] for r in payloads(db, "src_subs")) == [1, 2, 3, 4, 5]
    letters = db.execute("SELECT error_message AS reason, source_record FROM pipeline.dead_letter ORDER BY id").fetchall()
    assert [(x["source_record"]["id"], x["source_record"]["ends"]) for x in letters] == [(6, "infinity"), (7, "infinity")]
    assert "cursor field 'ends'" in letters[0]["reason"]


def test_a_table_whose_name_has_a_dot_and_quotes(source_url, loader, db):
    with source(source_url) as src:
        src.execute('CREATE SCHEMA "sales.eu"')
        src.execute('CREATE TABLE "sales.eu"."orders ""2026"".v2" (id int PRIMARY KEY, total int)')
        src.execute('INSERT INTO "sales.eu"."orders ""2026"".v2" SELECT i, i * 10 FROM generate_series(1, 12) i')

    class Orders(SqlExtractor):
        name = "orders"
        table = ("sales.eu", 'orders "2026".v2')
        primary_key = "id"
        page_size = 5

    result = run(Pipeline("src", streams=[Orders(url=source_url)]), loader)
    assert result.status == "success" and result.streams["orders"].extracted == 12
    assert sum(r["total"] for r in payloads(db, "src_orders")) == 780


def _plan(source_url, extractor, last):
    from sqlalchemy.dialects import postgresql

    statement = extractor._page(extractor.order_columns(), None, last)
    sql = str(statement.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))
    with source(source_url) as src:
        src.execute("SET enable_seqscan = off")  # a tiny table: ask what the index can do
        return "\n".join(r[0] for r in src.execute("EXPLAIN " + sql).fetchall())


def test_keyset_pages_are_an_index_range_on_postgresql_and_sqlite(source_url, tmp_path):
    with source(source_url) as src:
        src.execute("CREATE TABLE events (id int PRIMARY KEY, at timestamptz)")
        src.execute("CREATE INDEX events_at_id ON events (at, id)")

    class Events(SqlExtractor):
        name = "events"
        table = "events"
        primary_key = "id"
        cursor = Cursor("at")

    plan = _plan(source_url, Events(url=source_url), (T0, 42))
    # The row value is the index condition itself, not a filter over every row before it.
    assert "Index Cond: ((at IS NOT NULL) AND (ROW(at, id) > ROW(" in plan, plan

    path = tmp_path / "events.db"
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, at TEXT)")
        con.execute("CREATE INDEX events_at_id ON events (at, id)")
    sqlite_events = Events(url=f"sqlite:///{path}")
    from sqlalchemy.dialects import sqlite

    compiled = sqlite_events._page(["at", "id"], None, ("2026-04-01", 42)).compile(dialect=sqlite.dialect())
    with sqlite3.connect(path) as con:
        params = [compiled.params[name] for name in compiled.positiontup]
        plan = " ".join(str(r[-1]) for r in con.execute("EXPLAIN QUERY PLAN " + str(compiled), params))
    assert "SEARCH events USING COVERING INDEX events_at_id (at>?)" in plan, plan  # a range from the page boundary


def test_a_sqlite_source_rereads_rows_at_exactly_the_watermark(tmp_path, loader, db):
    # SQLite compares timestamps as text: a bound '...+00:00' would sort after '... 10:31:00' and skip
    # the rows of the watermark's own second (late rows included), with status success.
    import sqlite3

    from elt import Pipeline, SqlExtractor

    path = tmp_path / "src.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE events (id integer PRIMARY KEY, ts text)")
        conn.executemany("INSERT INTO events VALUES (?, ?)", [(i, f"2026-03-01 10:{i:02d}:00") for i in range(1, 32)])

    class Events(SqlExtractor):
        name = "events"
        url = f"sqlite:///{path}"
        table = "events"
        primary_key = "id"
        cursor = "ts"
        write_strategy = "upsert"

    pipeline = Pipeline("shop", streams=[Events()])
    assert run(pipeline, loader).summary.rows_loaded == 31
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO events VALUES (0, '2026-03-01 10:31:00')")  # late, at the watermark's second
    second = run(pipeline, loader)
    assert second.summary.rows_extracted == 2  # row 31 again (harmless) and the late row 0
    assert db.execute("SELECT count(*) AS n FROM raw.shop_events").fetchone()["n"] == 32


def test_a_libpq_keyword_string_reads_a_postgres_source(source_url, loader, db):
    # Found by the reliability suite (attack 7): `host=... password=... dbname=...` failed with
    # SQLAlchemy's "Could not parse SQLAlchemy URL", though ELT_DATABASE_URL accepts that form.
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    with source(source_url) as src:
        src.execute("CREATE TABLE items (id int PRIMARY KEY, note text)")
        src.execute("INSERT INTO items VALUES (1, 'a'), (2, 'b')")
    keywords = make_conninfo(**conninfo_to_dict(source_url))
    assert "://" not in keywords

    class Items(SqlExtractor):
        name = "items"
        table = "public.items"
        primary_key = "id"

    assert run(Pipeline("src", streams=[Items(url=keywords)]), loader).status == "success"
    assert db.execute("SELECT count(*) AS n FROM raw.src_items").fetchone()["n"] == 2
