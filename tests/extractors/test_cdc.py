"""CdcExtractor and `elt cdc` against a real PostgreSQL source: horizon reads, a writer role, pruning, status."""

from __future__ import annotations

import datetime as dt
import uuid

import psycopg
import pytest
from psycopg.rows import dict_row

from elt import CdcExtractor, Pipeline
from elt.extractors.cdc import cdc_status, install_sql, missing_install_privileges
from tests.fixtures.projects import run_elt
from tests.helpers import run


def source(url, **kwargs):
    return psycopg.connect(url, autocommit=True, **kwargs)


def changes(db, table):
    return db.execute(f"SELECT _raw_payload AS p FROM raw.{table}").fetchall()


class AccountChanges(CdcExtractor):
    name = "account_changes"
    source_table = "public.accounts"


@pytest.fixture
def accounts(source_url):
    with source(source_url) as src:
        src.execute("CREATE TABLE accounts (id int PRIMARY KEY, balance int NOT NULL)")
        src.execute(install_sql("public.accounts"))
        src.execute("INSERT INTO accounts SELECT i, 0 FROM generate_series(1, 40) i")
    return source_url


def test_a_change_of_a_transaction_held_open_while_others_commit_is_not_lost(accounts, loader, db):
    pipeline = Pipeline("bank", streams=[AccountChanges(url=accounts)])
    with psycopg.connect(accounts) as slow:  # not autocommit: one open transaction
        slow.execute("UPDATE accounts SET balance = -1 WHERE id = 1")  # takes a sequence id now, commits later
        with source(accounts) as app:
            for _ in range(30):  # 1,170 later sequence ids, committed first: more than the old lookback of 1,000
                app.execute("UPDATE accounts SET balance = balance + 1 WHERE id > 1")
        held = run(pipeline, loader)
        assert held.status == "success"
        # Only the 40 inserts, committed before the open transaction began, are below the horizon.
        assert held.streams["account_changes"].inserted == 40
        with source(accounts, row_factory=dict_row) as src:
            [status], oldest = cdc_status(src)
        # Held back: the 1,170 committed after the open transaction began. The backlog counts from the last
        # transaction read (its 40 inserts: a transaction may span batches, so it counts until the next read).
        assert status["held_back"] == 1170 and status["backlog"] == 40 + 1170
        assert oldest is not None and oldest["pid"] == slow.info.backend_pid
        slow.commit()
    done = run(pipeline, loader)
    assert done.status == "success"
    stored = changes(db, "bank_account_changes")
    assert len(stored) == 40 + 1170 + 1
    assert {(c["p"]["op"], c["p"]["after"]["id"], c["p"]["after"]["balance"]) for c in stored} >= {("update", 1, -1)}
    with source(accounts) as src:
        assert src.execute("SELECT count(*) FROM elt_cdc.changes").fetchone()[0] == len(stored)  # retention 1 day


@pytest.fixture
def writer_role(source_url):
    role = f"app_writer_{uuid.uuid4().hex[:8]}"
    with source(source_url) as src:
        src.execute(f"CREATE ROLE {role} NOLOGIN")
    try:
        yield role
    finally:
        with source(source_url) as src:
            src.execute(f"DROP OWNED BY {role}")
            src.execute(f"DROP ROLE {role}")


def test_a_writer_role_with_no_rights_on_elt_cdc_keeps_working(accounts, writer_role, loader, db):
    with source(accounts) as src:
        src.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON accounts TO {writer_role}")
        assert src.execute("SELECT has_schema_privilege(%s, 'elt_cdc', 'USAGE')", [writer_role]).fetchone()[0] is False
        src.execute(f"SET ROLE {writer_role}")
        src.execute("UPDATE accounts SET balance = 7 WHERE id = 3")
        src.execute("DELETE FROM accounts WHERE id = 4")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            src.execute("SELECT count(*) FROM elt_cdc.changes")  # the writer still cannot read the changes
        src.execute("RESET ROLE")
    assert run(Pipeline("bank", streams=[AccountChanges(url=accounts)]), loader).status == "success"
    ops = sorted((c["p"]["op"], (c["p"]["after"] or c["p"]["before"])["id"]) for c in changes(db, "bank_account_changes")
                 if c["p"]["op"] != "insert")
    assert ops == [("delete", 4), ("update", 3)]


def test_install_states_missing_privileges_before_changing_anything(source_url, writer_role, tmp_path):
    with source(source_url) as src:
        src.execute("CREATE TABLE orders (id int PRIMARY KEY)")
        src.execute(f"GRANT SELECT ON orders TO {writer_role}")
        src.execute(f"SET ROLE {writer_role}")
        missing = missing_install_privileges(src, "public.orders")
        src.execute("RESET ROLE")
        assert any("does not own public.orders" in m for m in missing)
        assert any("cannot create schema elt_cdc" in m for m in missing)
        assert missing_install_privileges(src, "public.orders") == []  # the owner may
    printed = run_elt(["cdc", "install", source_url, "public.orders"], cwd=tmp_path, database_url=None)
    assert "SECURITY DEFINER" in printed.stdout and "GRANT SELECT, DELETE ON elt_cdc.changes TO reader" in printed.stdout
    applied = run_elt(["cdc", "install", "SRC_URL", "public.orders", "--apply"], cwd=tmp_path, database_url=None,
                      SRC_URL=source_url)
    assert applied.returncode == 0, applied.stderr
    with source(source_url) as src:
        assert src.execute("SELECT prosecdef FROM pg_proc WHERE oid = 'elt_cdc.capture'::regproc").fetchone()[0] is True
    refused = run_elt(["cdc", "install", "SRC_URL", "public.nope", "--apply"], cwd=tmp_path, database_url=None,
                      SRC_URL=source_url)
    assert refused.returncode != 0 and "nothing was changed" in refused.stderr and "public.nope does not exist" in refused.stderr


def test_loaded_changes_are_pruned_and_status_shows_no_backlog(accounts, loader, db, tmp_path):
    class Pruned(AccountChanges):
        retention = dt.timedelta(0)

    with source(accounts) as src:
        src.execute("UPDATE accounts SET balance = 1")
    pipeline = Pipeline("bank", streams=[Pruned(url=accounts)])
    assert run(pipeline, loader).status == "success"
    assert len(changes(db, "bank_account_changes")) == 80
    with source(accounts, row_factory=dict_row) as src:
        # All but the last transaction's changes (read again next time, by the inclusive bound) are gone.
        assert src.execute("SELECT count(*) AS n FROM elt_cdc.changes").fetchone()["n"] == 40
        [status], _ = cdc_status(src)
    assert status["backlog"] == 40 and status["held_back"] == 0  # the last transaction, until the next read
    again = run(pipeline, loader)
    assert again.streams["account_changes"].inserted == 0
    shown = run_elt(["cdc", "status", accounts], cwd=tmp_path, database_url=None)
    assert shown.returncode == 0 and "public.accounts" in shown.stdout and "backlog" in shown.stdout


def test_a_watermark_kept_by_the_sequence_id_reader_is_not_taken_for_a_transaction_id(accounts, loader, db):
    pipeline = Pipeline("bank", streams=[AccountChanges(url=accounts)])
    assert run(pipeline, loader).streams["account_changes"].inserted == 40
    # What an older elt left behind: a watermark counting sequence ids, and no note of the cursor.
    db.execute("DELETE FROM pipeline.state WHERE key = 'cdc_cursor'")
    db.execute("""UPDATE pipeline.state SET value = '{"kind": "integer", "value": 999999999}' WHERE key = 'watermark'""")
    with source(accounts) as src:
        src.execute("UPDATE accounts SET balance = 5 WHERE id = 9")
    again = run(pipeline, loader)
    # The change table is read from its start once (identical changes stored once): the new change arrives.
    assert again.status == "success" and again.streams["account_changes"].inserted == 1
    note = db.execute("SELECT value FROM pipeline.state WHERE key = 'cdc_cursor'").fetchone()
    assert note["value"] == "txid"


def test_cdc_status_before_install_says_to_install(source_url, tmp_path):
    shown = run_elt(["cdc", "status", source_url], cwd=tmp_path, database_url=None)
    assert shown.returncode == 2
    assert "not installed" in shown.stderr and "elt cdc install" in shown.stderr, shown.stderr
