"""The PostgreSQL loader's table layout and connection, against a real server."""

from __future__ import annotations

import socket
from pathlib import Path

from elt import Pipeline
from elt.progress import LogProgress
from elt.runner import Runner
from tests.helpers import list_stream, run, table_rows


def column_collations(db, table: str) -> dict[str, str | None]:
    rows = db.execute(
        "SELECT column_name, collation_name FROM information_schema.columns"
        " WHERE table_schema = 'raw' AND table_name = %s", (table,)).fetchall()
    return {r["column_name"]: r["collation_name"] for r in rows}


def test_key_and_hash_columns_compare_bytewise(loader, db):
    records = [{"id": f"k{i}", "sku": f"S{i}", "status": "new"} for i in range(20)]
    pipeline = Pipeline("shop", streams=[list_stream(records, primary_key=["id", "sku"], write_strategy="upsert")])
    assert run(pipeline, loader).status == "success"

    collations = column_collations(db, "shop_items")
    assert collations["id"] == collations["sku"] == "C"
    assert collations["_batch_id"] is None  # other text columns keep the database's default
    # The md5 record hash is a uuid: 16 bytes compared with memcmp, half the index of its hex text.
    hash_type = db.execute("SELECT data_type FROM information_schema.columns WHERE table_schema = 'raw'"
                           " AND table_name = 'shop_items' AND column_name = '_record_hash'").fetchone()
    assert hash_type["data_type"] == "uuid"


def test_a_table_created_with_the_default_collation_keeps_loading(loader, db):
    # Raw tables made by elt before keys were C-collated: the C-collated stage must still merge into them.
    db.execute("CREATE SCHEMA IF NOT EXISTS raw")
    db.execute(
        "CREATE TABLE raw.shop_items (id text NOT NULL, _raw_payload jsonb NOT NULL,"
        " _loaded_at timestamptz NOT NULL DEFAULT now(), _batch_id text NOT NULL, _run_id bigint NOT NULL,"
        " _record_hash text NOT NULL, _row_seq bigint GENERATED ALWAYS AS IDENTITY, _deleted_at timestamptz)")
    records = [{"id": i, "status": "new"} for i in range(1, 31)]
    pipeline = Pipeline("shop", streams=[list_stream(records, primary_key="id", write_strategy="upsert")])
    assert run(pipeline, loader).status == "success"
    for r in records[:5]:
        r["status"] = "paid"
    result = run(pipeline, loader)

    assert result.status == "success"
    assert (result.streams["items"].updated, result.streams["items"].unchanged) == (5, 25)
    assert column_collations(db, "shop_items")["id"] is None  # left as it was
    assert column_collations(db, "shop_items")["_record_hash"] is None  # still text, still merging
    assert len(table_rows(db, "raw.shop_items", "id")) == 30


def test_the_last_version_of_a_key_repeated_within_one_batch_wins(loader, db):
    records = [{"id": 1, "v": "first"}, {"id": 2, "v": "only"}, {"id": 1, "v": "second"}, {"id": 1, "v": "third"}]
    pipeline = Pipeline("shop", streams=[list_stream(records, primary_key="id", write_strategy="upsert")])
    result = run(pipeline, loader)

    assert result.status == "success"
    stored = {r["id"]: r["_raw_payload"]["v"] for r in table_rows(db, "raw.shop_items", "id, _raw_payload")}
    assert stored == {"1": "third", "2": "only"}


def test_the_data_connection_asks_for_a_larger_send_buffer(loader):
    # Linux reports twice what was granted; the grant is capped by net.core.wmem_max.
    cap = int(Path("/proc/sys/net/core/wmem_max").read_text())
    with socket.socket(fileno=loader.writer.data.fileno()) as sock:
        granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        sock.detach()  # the fd belongs to the connection
    assert granted >= 2 * min(cap, 4 * 1024 * 1024)


def test_a_role_without_temporary_on_the_database_is_told_which_grant_to_add(database_url, db, tmp_path):
    import uuid
    from urllib.parse import urlsplit, urlunsplit

    import psycopg
    from psycopg import sql

    from elt import Pipeline, extractor
    from elt.loaders.postgres import PostgresLoader
    from tests.helpers import run

    role, password = f"elt_notemp_{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    name = urlsplit(database_url).path.lstrip("/")
    ident = sql.Identifier(role)
    with psycopg.connect(database_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(ident, sql.Literal(password)))
        admin.execute(sql.SQL("REVOKE TEMPORARY ON DATABASE {} FROM PUBLIC").format(sql.Identifier(name)))
        admin.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(name), ident))
        for schema in ("raw", "stg", "mart", "rpt", "pipeline"):
            admin.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
            admin.execute(sql.SQL("ALTER SCHEMA {} OWNER TO {}").format(sql.Identifier(schema), ident))
    parts = urlsplit(database_url)
    url = urlunsplit(parts._replace(netloc=f"{role}:{password}@{parts.netloc.rpartition('@')[2]}"))
    loader = PostgresLoader(url)
    try:
        items = extractor(lambda: iter([{"id": i} for i in range(4)]), name="items", primary_key="id",
                          write_strategy="upsert")
        # The first load into an empty table goes straight in by COPY; the second stages its batch.
        assert run(Pipeline("shop", streams=[items]), loader).status == "success"
        result = run(Pipeline("shop", streams=[items]), loader)
        message = result.summary.error_message or ""
        assert result.status == "failed"
        assert "GRANT TEMPORARY ON DATABASE" in message and "Database roles and grants" in message, message
        figures = result.streams["items"]
        assert (figures.extracted, figures.loaded) == (4, 0)  # read, not written: the figures say both
    finally:
        loader.close()
        with psycopg.connect(database_url, autocommit=True) as admin:
            admin.execute(sql.SQL("GRANT TEMPORARY ON DATABASE {} TO PUBLIC").format(sql.Identifier(name)))
            for schema in ("raw", "stg", "mart", "rpt", "pipeline"):
                admin.execute(sql.SQL("ALTER SCHEMA {} OWNER TO postgres").format(sql.Identifier(schema)))
            admin.execute(sql.SQL("REASSIGN OWNED BY {} TO postgres").format(ident))
            admin.execute(sql.SQL("DROP OWNED BY {}").format(ident))
            admin.execute(sql.SQL("DROP ROLE {}").format(ident))


def test_every_table_elt_keeps_in_the_pipeline_schema_is_private_to_the_public_api(loader, db, database_url):
    # Migration 0011 turns on row-level security (and its policy) for the tables there when it runs;
    # a table added later, by a migration or by code at run time, needs it too. So: use the
    # paths that write bookkeeping (a run with a dead letter, a replay, a webhook source) and
    # then ask the catalog about every table of the schema, whatever its name.
    from elt.loaders.postgres.webhooks import PgWebhookStore

    pipeline = Pipeline("shop", streams=[list_stream([{"id": 1}, {"name": "no id"}], primary_key="id",
                                                     max_bad_ratio=1)])
    run(pipeline, loader)
    Runner(pipeline, loader=loader, progress=LogProgress(interval=3600)).replay()
    webhooks = PgWebhookStore(database_url)
    try:
        webhooks.prepare([("github", "github_events")])
    finally:
        webhooks.close()

    # Views count too: one would read the tables as its owner, past their row security.
    tables = db.execute(
        "SELECT c.relname, c.relrowsecurity,"
        "       EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid AND p.polname = 'elt_not_public_api') AS policy"
        "  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'pipeline' AND c.relkind IN ('r', 'p', 'v', 'm', 'f')").fetchall()
    assert {"execution_log", "dead_letter", "state", "model_state", "webhook_sources", "schema_migrations"} <= {
        t["relname"] for t in tables}
    exposed = [t["relname"] for t in tables if not (t["relrowsecurity"] and t["policy"])]
    assert exposed == [], f"pipeline tables without row-level security (add them to a migration like 0011): {exposed}"
