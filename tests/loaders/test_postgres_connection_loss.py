"""A destination connection lost in the middle of a run (server restart, failover): ridden out, or failed clearly.

The loss is real: the server ends elt's sessions (``pg_terminate_backend``,
what a restart or a failover does to them) while a run loads batches. The
reliability suite (tests/reliability/test_outage.py) stops the whole server.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest

from elt import Pipeline, extractor
from elt.errors import LoadError
from elt.loaders.postgres import PostgresStore, PostgresWriter
from elt.loaders.postgres.connection import LOCK_SPACE
from tests.fixtures.postgres import with_database
from tests.helpers import run, table_rows


def end_elt_sessions(url: str, hold_lock_of: str | None = None) -> psycopg.Connection[Any] | None:
    """End every session elt has open on the database; optionally take a pipeline's lock right after."""
    conn = psycopg.connect(url, autocommit=True)
    conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                 " WHERE datname = current_database() AND application_name = 'elt'")
    if hold_lock_of is None:
        conn.close()
        return None
    conn.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (LOCK_SPACE, f"pipeline:{hold_lock_of}"))
    return conn


def records(version: int, count: int = 200) -> list[dict[str, Any]]:
    return [{"id": i, "v": version} for i in range(count)]


def stream(url: str, version: int, strategy: str, cut_at: int | None, holder: list[Any] | None = None) -> Any:
    def read(since: Any) -> Iterator[dict[str, Any]]:
        for i, record in enumerate(records(version)):
            if i == cut_at:
                conn = end_elt_sessions(url, hold_lock_of="shop" if holder is not None else None)
                if holder is not None:
                    holder.append(conn)
            yield record
    return extractor(read, name="items", primary_key="id", write_strategy=strategy, batch_size=20)


def test_a_batch_whose_connection_was_lost_loads_again_once_reconnected(loader, db, database_url):
    data_pid = loader.writer.data.info.backend_pid
    result = run(Pipeline("shop", streams=[stream(database_url, 1, "upsert", cut_at=90)]), loader)

    assert result.status == "success", result.summary.error_message
    assert loader.writer.data.info.backend_pid != data_pid  # a new session carried on
    stored = {r["id"]: r["p"] for r in table_rows(db, "raw.shop_items", "id, _raw_payload AS p")}
    assert stored == {str(r["id"]): r for r in records(1)}
    log = db.execute("SELECT status, rows_loaded FROM pipeline.execution_log WHERE id = %s",
                     (result.run_id,)).fetchone()
    assert log["status"] == "success"
    # The pipeline's lock was taken again on the new session, and released at the end.
    assert db.execute("SELECT count(*) AS n FROM pg_locks WHERE locktype = 'advisory'").fetchone()["n"] == 0


def test_a_replace_read_whose_connection_was_lost_fails_clearly_and_keeps_the_table(loader, db, database_url):
    assert run(Pipeline("shop", streams=[stream(database_url, 1, "replace", None)]), loader).status == "success"

    result = run(Pipeline("shop", streams=[stream(database_url, 2, "replace", cut_at=90)]), loader)

    assert result.status == "failed"
    message = result.summary.error_message or ""
    assert "lost the connection to the database" in message and urlsplit(database_url).path.lstrip("/") in message
    assert "the read in flight was not applied" in message
    assert {r["p"]["v"] for r in table_rows(db, "raw.shop_items", "_raw_payload AS p")} == {1}  # whole, old version
    log = db.execute("SELECT status, error_message FROM pipeline.execution_log WHERE id = %s",
                     (result.run_id,)).fetchone()
    assert log["status"] == "failed" and "lost the connection" in log["error_message"]

    again = run(Pipeline("shop", streams=[stream(database_url, 2, "replace", None)]), loader)
    assert again.status == "success"
    assert {r["p"]["v"] for r in table_rows(db, "raw.shop_items", "_raw_payload AS p")} == {2}
    tables = {r["t"] for r in db.execute(
        "SELECT table_name AS t FROM information_schema.tables WHERE table_schema = 'raw'").fetchall()}
    assert tables == {"shop_items"}  # no shadow left behind


def test_a_lock_taken_by_another_run_during_the_outage_stops_this_run(loader, db, database_url):
    holder: list[Any] = []
    try:
        result = run(Pipeline("shop", streams=[stream(database_url, 1, "upsert", cut_at=90, holder=holder)]), loader)
    finally:
        for conn in holder:
            conn.close()

    assert result.status == "failed"
    assert "another run holds it now" in (result.summary.error_message or "")
    log = db.execute("SELECT status FROM pipeline.execution_log WHERE id = %s", (result.run_id,)).fetchone()
    assert log["status"] == "failed"  # closed, not left 'running'


def test_a_database_gone_longer_than_the_reconnect_window_fails_clearly_and_the_next_run_closes_the_row(
        loader, db, database_url, monkeypatch):
    monkeypatch.setattr(PostgresWriter, "reconnect_seconds", 1.0)
    monkeypatch.setattr(PostgresStore, "reconnect_seconds", 1.0)
    name = urlsplit(database_url).path.lstrip("/")
    admin = psycopg.connect(with_database(database_url, "postgres"), autocommit=True)

    def read(since: Any) -> Iterator[dict[str, Any]]:
        for i, record in enumerate(records(1)):
            if i == 90:  # the database stops taking connections, and elt's are ended
                admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
                admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                              " WHERE datname = %s AND application_name = 'elt'", (name,))
            yield record

    items = extractor(read, name="items", primary_key="id", write_strategy="upsert", batch_size=20)
    try:
        with pytest.raises(LoadError) as failure:
            run(Pipeline("shop", streams=[items]), loader)
    finally:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        admin.close()
    message = str(failure.value)
    assert "lost the connection to the database during" in message and "within 1 s" in message
    assert name in message

    again = run(Pipeline("shop", streams=[stream(database_url, 1, "upsert", None)]), loader)
    assert again.status == "success"
    statuses = [r["status"] for r in db.execute("SELECT status FROM pipeline.execution_log ORDER BY id").fetchall()]
    assert statuses == ["failed", "success"]  # the interrupted run's row closed (abandoned) by the next one


def test_sessions_ended_between_two_runs_are_opened_again_when_the_next_run_starts(loader, db, database_url):
    """A long-lived loader (``elt serve``'s scheduler) keeps its connections between runs; a server restart in
    between ends them. The next run must start on new sessions, not fail on the first statement."""
    first = run(Pipeline("shop", streams=[stream(database_url, 1, "upsert", None)]), loader)
    assert first.status == "success", first.summary.error_message
    data_pid = loader.writer.data.info.backend_pid

    end_elt_sessions(database_url)  # the writer's and the store's sessions are both gone, unnoticed so far
    again = run(Pipeline("shop", streams=[stream(database_url, 2, "upsert", None)]), loader)

    assert again.status == "success", again.summary.error_message
    assert loader.writer.data.info.backend_pid != data_pid
    stored = {r["id"]: r["p"] for r in table_rows(db, "raw.shop_items", "id, _raw_payload AS p")}
    assert stored == {str(r["id"]): r for r in records(2)}
