"""Attack 8, least privilege: elt with a role that owns only its five schemas, sources read with SELECT only,
and Supabase's API roles kept out of ``pipeline``.

Every role here is a real PostgreSQL role made by the test (unique names, dropped
afterwards); the grants are the ones the README's "Database roles and grants"
section prints, run from this file's ``LOADER_GRANTS`` and ``READER_GRANTS``.
"""

from __future__ import annotations

import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from tests.fixtures.projects import run_elt, write_project
from tests.reliability.conftest import Attack, AttackReport

# What an administrator runs once for elt's own role (the README shows this SQL).
LOADER_GRANTS = """
CREATE ROLE {role} LOGIN PASSWORD {password};
REVOKE ALL ON DATABASE {db} FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE {db} TO {role};
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
CREATE SCHEMA raw AUTHORIZATION {role};
CREATE SCHEMA stg AUTHORIZATION {role};
CREATE SCHEMA mart AUTHORIZATION {role};
CREATE SCHEMA rpt AUTHORIZATION {role};
CREATE SCHEMA pipeline AUTHORIZATION {role};
"""

# And on a source database, for the role elt reads it with.
READER_GRANTS = """
CREATE ROLE {role} LOGIN PASSWORD {password};
REVOKE ALL ON DATABASE {db} FROM PUBLIC;
GRANT CONNECT ON DATABASE {db} TO {role};
GRANT USAGE ON SCHEMA shop TO {role};
GRANT SELECT ON ALL TABLES IN SCHEMA shop TO {role};
"""

PROJECT = """
    import os

    from elt import Pipeline, SqlExtractor


    class Orders(SqlExtractor):
        name = "orders"
        table = "shop.orders"
        primary_key = "id"
        cursor = "updated_at"


    Pipeline("shop", streams=[Orders(url=os.environ["SOURCE_URL"])])
"""

MART = """
    -- materialized: table
    -- tests: unique(id), not_null(id)
    SELECT (_raw_payload ->> 'id')::int AS id, (_raw_payload ->> 'amount')::numeric AS amount
    FROM stg.shop_orders
"""


def as_role(url: str, role: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]  # empty for a Unix socket (then ?host= names its folder)
    return urlunsplit(parts._replace(netloc=f"{role}:{password}@{host}"))


class Roles:
    """Roles made for one test; each is dropped (with what it owns) afterwards."""

    def __init__(self, admin_urls: list[str]) -> None:
        self.admin_urls = admin_urls
        self.made: list[str] = []

    def name(self, prefix: str) -> str:
        role = f"{prefix}_{uuid.uuid4().hex[:8]}"
        self.made.append(role)
        return role

    def drop(self) -> None:
        for url in self.admin_urls:  # what each role owns in each database goes first
            with psycopg.connect(url, autocommit=True) as conn:
                for role in self.made:
                    exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
                    if exists:
                        conn.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(sql.Identifier(role)))
        with psycopg.connect(self.admin_urls[0], autocommit=True) as conn:
            for role in self.made:
                conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.fixture
def roles(database_url: str, source_url: str) -> Iterator[Roles]:
    made = Roles([database_url, source_url])
    try:
        yield made
    finally:
        made.drop()


def run_script(url: str, script: str, **names: str) -> None:
    values = {k: sql.Identifier(v) for k, v in names.items() if k != "password"}
    if "password" in names:
        values["password"] = sql.Literal(names["password"])  # type: ignore[assignment]
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in filter(str.strip, script.split(";")):
            conn.execute(sql.SQL(statement.strip()).format(**values))


def test_elt_runs_with_a_role_owning_only_its_schemas_and_a_select_only_reader(
        tmp_path: Path, database_url: str, source_url: str, roles: Roles, attack_report: AttackReport) -> None:
    loader, reader = roles.name("elt_loader"), roles.name("elt_reader")
    password = uuid.uuid4().hex
    db_name = urlsplit(database_url).path.lstrip("/")
    run_script(database_url, LOADER_GRANTS, role=loader, password=password, db=db_name)
    with psycopg.connect(source_url, autocommit=True) as src:
        src.execute("CREATE SCHEMA shop; CREATE TABLE shop.orders (id int PRIMARY KEY, amount numeric,"
                    " updated_at timestamptz NOT NULL DEFAULT now())")
        src.execute("INSERT INTO shop.orders (id, amount) SELECT n, n * 1.5 FROM generate_series(1, 50) n")
    run_script(source_url, READER_GRANTS, role=reader, password=password, db=urlsplit(source_url).path.lstrip("/"))

    project = write_project(tmp_path / "p", PROJECT)
    (project / "sql" / "mart").mkdir(parents=True)
    (project / "sql" / "mart" / "order_amounts.sql").write_text(textwrap.dedent(MART))
    elt_url = as_role(database_url, loader, password)
    env = {"SOURCE_URL": as_role(source_url, reader, password)}
    outputs: list[str] = []
    commands = (["migrate"], ["run"], ["transform"], ["status"], ["run"])
    for args in commands:
        result = run_elt(args, cwd=project, database_url=elt_url, **env)
        outputs.append(result.stdout + result.stderr)
        assert result.returncode == 0, (args, result.stdout[-2000:], result.stderr[-3000:])

    with psycopg.connect(database_url) as admin:
        assert admin.execute("SELECT count(*) FROM raw.shop_orders").fetchone() == (50,)
        assert admin.execute("SELECT count(*), sum(amount) FROM mart.order_amounts").fetchone() == (50, 1912.5)
        statuses = admin.execute("SELECT status FROM pipeline.execution_log ORDER BY id").fetchall()
        assert {s for (s,) in statuses} == {"success"}, statuses
        # Everything elt made belongs to its role, and it made nothing outside its five schemas.
        outside = admin.execute(
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE pg_get_userbyid(c.relowner) = %s AND n.nspname NOT IN ('raw', 'stg', 'mart', 'rpt', 'pipeline')"
            " AND n.nspname NOT LIKE 'pg_temp%%' AND n.nspname NOT LIKE 'pg_toast%%'", (loader,)).fetchall()
        assert outside == []
    # The role really is that small: it cannot make a schema or write to public.
    with psycopg.connect(elt_url, autocommit=True) as conn:
        for statement in ("CREATE SCHEMA elsewhere", "CREATE TABLE public.t (x int)"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
    # And the reader can only read.
    with psycopg.connect(as_role(source_url, reader, password), autocommit=True) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("UPDATE shop.orders SET amount = 0")
    # A role without the grants gets one clear line pointing at them, not a driver traceback.
    bare = roles.name("elt_bare")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(bare)))
        conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(db_name), sql.Identifier(bare)))
    refused = run_elt(["migrate"], cwd=project, database_url=as_role(database_url, bare, password), **env)
    assert refused.returncode == 2 and "Database roles and grants" in refused.stderr, refused.stderr[-2000:]
    assert "Traceback" not in refused.stderr and "╭" not in refused.stderr
    # And the password in elt's URL never reached a line it printed.
    outputs.append(refused.stdout + refused.stderr)
    assert not [text for text in outputs if password in text]
    attack_report.record(Attack(
        attack="least privilege", runs=len(outputs), compared=50, lost=0,
        notes="migrate, run, transform, status and a second run as a role owning only raw/stg/mart/rpt/pipeline;"
              " source read by a SELECT-only role; the role cannot create schemas or write to public",
        extra={"commands": [" ".join(args) for args in commands] + ["migrate (role without grants)"]},
    ))


@pytest.fixture
def supabase_roles(database_url: str) -> Iterator[tuple[str, str]]:
    """Supabase's ``anon`` and ``authenticated`` (by those names: elt's migration 0011 names them)."""
    made = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        for role in ("anon", "authenticated"):
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is None:
                # As Supabase creates them: PostgREST switches to one of these for every request.
                conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN NOINHERIT").format(sql.Identifier(role)))
                made.append(role)
        conn.execute("GRANT USAGE ON SCHEMA public TO anon, authenticated")
    try:
        yield "anon", "authenticated"
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            for role in made:
                conn.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(sql.Identifier(role)))
                conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_supabase_api_roles_cannot_read_the_pipeline_schema(database_url: str, supabase_roles: tuple[str, str],
                                                            roles: Roles) -> None:
    anon, authenticated = supabase_roles
    from elt.loaders.postgres import PostgresLoader

    loader = PostgresLoader(database_url)
    try:
        loader.store.migrate()
    finally:
        loader.close()
    monitor = roles.name("monitor")
    with psycopg.connect(database_url, autocommit=True) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'pipeline' AND c.relkind IN ('r', 'p')")]
        assert "execution_log" in tables and "dead_letter" in tables
        # Row-level security is on for every table of the schema (migration 0011).
        rls = dict(conn.execute(
            "SELECT c.relname, c.relrowsecurity FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'pipeline' AND c.relkind IN ('r', 'p')").fetchall())
        assert all(rls.values()), rls
        conn.execute("INSERT INTO pipeline.execution_log (pipeline_name, status) VALUES ('shop', 'success')")
        conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(monitor)))
        # Even a careless grant (as Supabase's dashboard makes easy) shows the API roles no row,
        # while a monitoring role granted SELECT reads every row (not an empty answer).
        for grantee in (anon, authenticated, monitor):
            conn.execute(sql.SQL("GRANT USAGE ON SCHEMA pipeline TO {}").format(sql.Identifier(grantee)))
            conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA pipeline TO {}").format(sql.Identifier(grantee)))
        for role, expected in ((anon, 0), (authenticated, 0), (monitor, 1)):
            conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
            assert conn.execute("SELECT count(*) FROM pipeline.execution_log").fetchone() == (expected,), role
            for table in tables:
                rows = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("pipeline", table)))
                assert rows.fetchone() is not None
            conn.execute("RESET ROLE")
        # Without a grant, the API roles cannot even look: PUBLIC has nothing on the schema.
        conn.execute(sql.SQL("REVOKE ALL ON SCHEMA pipeline FROM {}").format(sql.Identifier(anon)))
        conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(anon)))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT count(*) FROM pipeline.execution_log")
        conn.execute("RESET ROLE")
        assert conn.execute("SELECT count(*) FROM pipeline.execution_log").fetchone() == (1,)


def test_supabase_api_roles_cannot_truncate_the_pipeline_schema_even_when_granted_all(
        database_url: str, supabase_roles: tuple[str, str]) -> None:
    # Row-level security does not apply to TRUNCATE: migration 0013's trigger refuses it to the API roles.
    from elt.loaders.postgres import PostgresLoader

    loader = PostgresLoader(database_url)
    try:
        loader.store.migrate()
    finally:
        loader.close()
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO pipeline.execution_log (pipeline_name, status) VALUES ('shop', 'success')")
        tables = [r[0] for r in conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'pipeline' AND c.relkind IN ('r', 'p')")]
        for role in supabase_roles:
            conn.execute(sql.SQL("GRANT USAGE ON SCHEMA pipeline TO {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("GRANT ALL ON ALL TABLES IN SCHEMA pipeline TO {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
            for table in tables:
                with pytest.raises(psycopg.errors.InsufficientPrivilege, match="elt's bookkeeping"):
                    conn.execute(sql.SQL("TRUNCATE {} CASCADE").format(sql.Identifier("pipeline", table)))
            conn.execute("RESET ROLE")
        assert conn.execute("SELECT count(*) FROM pipeline.execution_log").fetchone() == (1,)
        conn.execute("TRUNCATE pipeline.alerts")  # an admin still may
