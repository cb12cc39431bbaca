"""A rebuild keeps what users added to a model's table: checked by real roles reading before and after."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from elt.loaders.postgres.swap import replace_rows, retarget, swap
from elt.pipeline import registered
from elt.transforms import Builder, project_graph
from tests.helpers import run
from tests.transforms.conftest import write_models


def build(project, database_url, select=("mart.orders",)):
    graph = project_graph(project, registered().values())
    return Builder(database_url, graph, threads=2).run(graph.select(select)).models[select[0]]


@pytest.fixture
def roles(database_url: str) -> Iterator[dict[str, str]]:
    """Four login-less roles (roles are server-wide: unique names, dropped after the test)."""
    suffix = uuid.uuid4().hex[:8]
    names = {kind: f"elt_{kind}_{suffix}" for kind in ("limited", "columns", "admin", "other")}
    with psycopg.connect(database_url, autocommit=True) as conn:
        for name in names.values():
            conn.execute(f"CREATE ROLE {name}")
    try:
        yield names
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {', '.join(names.values())}")
            for name in names.values():
                conn.execute(f"DROP ROLE {name}")


def as_role(database_url: str, role: str, query: str) -> Any:
    """Run ``query`` as ``role``; return the first value, or the error's message."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"SET ROLE {role}")
        try:
            row = conn.execute(query).fetchone()
            return None if row is None else row[0]
        except psycopg.Error as exc:
            return str(exc).splitlines()[0]


def usage(db: Any, roles: dict[str, str], *schemas: str) -> None:
    db.execute(f"GRANT USAGE ON SCHEMA {', '.join(schemas)} TO {', '.join(roles.values())}")


@pytest.fixture
def shop_built(shop, loader):
    source, project = shop
    assert run(source.pipeline, loader, project_dir=project).status == "success"
    return source, project


def test_row_level_security_and_its_policies_survive_a_rebuild(shop_built, db, database_url, roles):
    _, project = shop_built
    limited = roles["limited"]
    usage(db, roles, "mart")
    db.execute("ALTER TABLE mart.orders ENABLE ROW LEVEL SECURITY")
    db.execute(f"CREATE POLICY only_customer_1 ON mart.orders FOR SELECT TO {limited} USING (customer_id = 1)")
    db.execute(f"GRANT SELECT ON mart.orders TO {limited}")
    before = as_role(database_url, limited, "SELECT count(*) FROM mart.orders")
    assert before == 8  # 40 orders over 5 customers

    result = build(project, database_url)
    assert result.status == "success", result.error
    assert "1 policy" in result.action
    assert as_role(database_url, limited, "SELECT count(*) FROM mart.orders") == 8
    assert db.execute("SELECT relrowsecurity FROM pg_class WHERE oid = 'mart.orders'::regclass").fetchone()["relrowsecurity"]


def test_column_grants_grant_option_and_only_the_old_grants_survive(shop_built, db, database_url, roles):
    _, project = shop_built
    usage(db, roles, "mart")
    db.execute(f"GRANT SELECT (id, status) ON mart.orders TO {roles['columns']}")
    db.execute(f"GRANT SELECT ON mart.orders TO {roles['admin']} WITH GRANT OPTION")
    # Default privileges would give the new table a grant the old one did not have.
    db.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA mart GRANT SELECT ON TABLES TO {roles['other']}")

    assert build(project, database_url).status == "success"
    assert as_role(database_url, roles["columns"], "SELECT count(status) FROM mart.orders") == 40
    assert "permission denied" in as_role(database_url, roles["columns"], "SELECT count(amount) FROM mart.orders")
    # The grant option survived: the admin role can pass the privilege on.
    assert as_role(database_url, roles["admin"], f"GRANT SELECT ON mart.orders TO {roles['limited']}") is not None
    assert as_role(database_url, roles["limited"], "SELECT count(*) FROM mart.orders") == 40
    assert "permission denied" in as_role(database_url, roles["other"], "SELECT count(*) FROM mart.orders")


def test_dependent_views_keep_security_invoker_and_security_barrier(shop_built, db, database_url, roles):
    _, project = shop_built
    limited = roles["limited"]
    db.execute("CREATE SCHEMA bi")
    usage(db, roles, "mart", "bi")
    db.execute("ALTER TABLE mart.orders ENABLE ROW LEVEL SECURITY")
    db.execute(f"CREATE POLICY only_customer_2 ON mart.orders FOR SELECT TO {limited} USING (customer_id = 2)")
    db.execute(f"GRANT SELECT ON mart.orders TO {limited}")
    db.execute("CREATE VIEW bi.invoker WITH (security_invoker = true) AS SELECT id FROM mart.orders")
    db.execute("CREATE VIEW bi.barrier WITH (security_barrier = true) AS SELECT id FROM mart.orders WHERE status = 'paid'")
    db.execute(f"GRANT SELECT ON bi.invoker, bi.barrier TO {limited}")
    # Through the invoker view, the reader's own policy applies.
    assert as_role(database_url, limited, "SELECT count(*) FROM bi.invoker") == 8

    result = build(project, database_url)
    assert result.status == "success", result.error
    assert "5 dependent views kept" in result.action  # bi.invoker, bi.barrier, three rpt models
    options = {r["relname"]: r["reloptions"] for r in db.execute(
        "SELECT relname, reloptions FROM pg_class WHERE relname IN ('invoker', 'barrier')")}
    assert options == {"invoker": ["security_invoker=true"], "barrier": ["security_barrier=true"]}
    assert as_role(database_url, limited, "SELECT count(*) FROM bi.invoker") == 8


def test_user_indexes_triggers_and_comments_are_carried_without_doubling_the_key(shop_built, db, database_url):
    _, project = shop_built
    db.execute("CREATE INDEX orders_paid_by_customer ON mart.orders (customer_id) WHERE status = 'paid'")
    db.execute("COMMENT ON COLUMN mart.orders.amount IS 'in EUR'")
    db.execute("CREATE TABLE public.audit (n int)")
    db.execute("CREATE FUNCTION public.audit_it() RETURNS trigger LANGUAGE plpgsql AS"
               " $$ BEGIN INSERT INTO public.audit VALUES (1); RETURN NEW; END $$")
    db.execute("CREATE TRIGGER orders_audit AFTER INSERT ON mart.orders FOR EACH ROW EXECUTE FUNCTION public.audit_it()")

    assert build(project, database_url).status == "success"
    indexes = {r["indexname"]: r["indexdef"] for r in db.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'mart' AND tablename = 'orders'")}
    assert len(indexes) == 2  # the model's key index and the user's, not a copy of the key index
    assert "WHERE (status = 'paid'::text)" in indexes["orders_paid_by_customer"]
    assert db.execute("SELECT col_description('mart.orders'::regclass, 4) AS c").fetchone()["c"] == "in EUR"
    db.execute("INSERT INTO mart.orders (id, customer_id) VALUES (1000, 1)")
    assert db.execute("SELECT count(*) AS n FROM public.audit").fetchone()["n"] == 1


def test_sql_functions_depending_on_the_table_survive_with_their_grants(shop_built, db, database_url, roles):
    _, project = shop_built
    api = roles["admin"]
    db.execute("CREATE FUNCTION mart.paid_count() RETURNS bigint LANGUAGE sql"
               " BEGIN ATOMIC SELECT count(*) FROM mart.orders WHERE status = 'paid'; END")
    db.execute("CREATE FUNCTION mart.orders_of(c int) RETURNS SETOF mart.orders LANGUAGE sql STABLE"
               " AS $$ SELECT * FROM mart.orders WHERE customer_id = c $$")
    for function in ("mart.paid_count()", "mart.orders_of(int)"):
        db.execute(f"REVOKE ALL ON FUNCTION {function} FROM PUBLIC")
        db.execute(f"GRANT EXECUTE ON FUNCTION {function} TO {api}")
    db.execute(f"GRANT USAGE ON SCHEMA mart TO {api}, {roles['other']}")
    db.execute(f"GRANT SELECT ON mart.orders TO {api}, {roles['other']}")
    paid = db.execute("SELECT mart.paid_count() AS n").fetchone()["n"]

    result = build(project, database_url)
    assert result.status == "success", result.error
    assert "2 functions" in result.action
    assert as_role(database_url, api, "SELECT mart.paid_count()") == paid
    assert as_role(database_url, api, "SELECT count(*) FROM mart.orders_of(1)") == 8
    assert "permission denied" in as_role(database_url, roles["other"], "SELECT mart.paid_count()")


def test_a_dependent_materialized_view_is_computed_from_the_new_data_and_keeps_its_index(shop_built, db, database_url):
    source, project = shop_built
    db.execute("CREATE SCHEMA bi")
    db.execute("CREATE MATERIALIZED VIEW bi.per_customer AS"
               " SELECT customer_id, count(*) AS n FROM mart.orders GROUP BY customer_id")
    db.execute("CREATE UNIQUE INDEX per_customer_key ON bi.per_customer (customer_id)")
    write_models(project, {"mart/orders.sql": "SELECT o.id, o.customer_id, o.status, o.amount, o.updated_at"
                                              " FROM stg.shop_orders AS o WHERE o.id <= 20"})
    assert build(project, database_url).status == "success"
    assert db.execute("SELECT sum(n) AS n FROM bi.per_customer").fetchone()["n"] == 20
    assert db.execute("SELECT count(*) AS n FROM pg_indexes WHERE indexname = 'per_customer_key'").fetchone()["n"] == 1


def test_a_foreign_key_into_the_table_refuses_the_rebuild_and_keeps_everything(shop_built, db, database_url):
    _, project = shop_built
    db.execute("CREATE SCHEMA app")
    db.execute("CREATE TABLE app.notes (order_id int REFERENCES mart.orders (id), note text)")
    db.execute("INSERT INTO app.notes VALUES (1, 'call back')")
    old = db.execute("SELECT 'mart.orders'::regclass::oid AS o").fetchone()["o"]

    result = build(project, database_url)
    assert result.status == "failed"
    assert "foreign key notes_order_id_fkey on app.notes references mart.orders" in result.error
    assert "ALTER TABLE app.notes DROP CONSTRAINT notes_order_id_fkey" in result.error
    assert "swap: delete_insert" in result.error
    assert db.execute("SELECT 'mart.orders'::regclass::oid AS o").fetchone()["o"] == old
    assert db.execute("SELECT count(*) AS n FROM pg_constraint WHERE conname = 'notes_order_id_fkey'").fetchone()["n"] == 1


def test_what_cannot_be_carried_is_refused_by_name(shop_built, db, database_url, roles):
    _, project = shop_built
    db.execute("CREATE PUBLICATION realtime FOR TABLE mart.orders")
    result = build(project, database_url)
    assert result.status == "failed" and "publication realtime" in result.error
    db.execute("DROP PUBLICATION realtime")

    # A column grant on a column the new SELECT no longer has.
    usage(db, roles, "mart")
    db.execute(f"GRANT SELECT (amount) ON mart.orders TO {roles['columns']}")
    write_models(project, {"mart/orders.sql": "SELECT o.id, o.customer_id, o.status, o.updated_at FROM stg.shop_orders AS o"})
    result = build(project, database_url)
    assert result.status == "failed"
    assert f"grant SELECT (amount) on mart.orders to {roles['columns']}: the new mart.orders has no column amount" in result.error
    assert as_role(database_url, roles["columns"], "SELECT count(amount) FROM mart.orders") == 40


def test_swap_works_on_a_raw_table_by_schema_name_and_shadow(db, database_url, roles):
    # The signature the `replace` write strategy uses: schema, live name, shadow name.
    db.execute("CREATE SCHEMA raw")
    usage(db, roles, "raw")
    db.execute("CREATE TABLE raw.rates (code text PRIMARY KEY, rate numeric)")
    db.execute("INSERT INTO raw.rates VALUES ('EUR', 1), ('USD', 1.1)")
    db.execute(f"GRANT SELECT ON raw.rates TO {roles['other']}")
    with psycopg.connect(database_url) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE raw.rates__shadow (code text PRIMARY KEY, rate numeric)")
        cur.execute("INSERT INTO raw.rates__shadow VALUES ('EUR', 1), ('USD', 1.2), ('GBP', 0.9)")
        report = swap(cur, "raw", "rates", "rates__shadow")
        conn.commit()
    assert report.replaced
    assert as_role(database_url, roles["other"], "SELECT count(*) FROM raw.rates") == 3
    # The shadow's own primary key is the same definition: not doubled.
    primary_keys = "SELECT count(*) AS n FROM pg_constraint WHERE conrelid = 'raw.rates'::regclass AND contype = 'p'"
    assert db.execute(primary_keys).fetchone()["n"] == 1


def test_delete_insert_mode_keeps_the_relation_and_what_a_snapshot_reader_sees(shop_built, db, database_url):
    _, project = shop_built
    write_models(project, {"mart/orders.sql": "-- swap: delete_insert\n"
                                              "SELECT o.id, o.customer_id, o.status, o.amount, o.updated_at"
                                              " FROM stg.shop_orders AS o WHERE o.id <= 30"})
    old = db.execute("SELECT 'mart.orders'::regclass::oid AS o").fetchone()["o"]
    with psycopg.connect(database_url) as reader:
        reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        reader.execute("SELECT 1")  # the snapshot is taken here, before the rebuild
        result = build(project, database_url)
        assert result.status == "success", result.error
        assert result.action.startswith("replaced rows")
        # First touch after the rebuild: the old rows, as the snapshot promised.
        assert reader.execute("SELECT count(*) FROM mart.orders").fetchone()[0] == 40
        reader.rollback()
    assert db.execute("SELECT 'mart.orders'::regclass::oid AS o").fetchone()["o"] == old
    assert db.execute("SELECT count(*) AS n FROM mart.orders").fetchone()["n"] == 30


def test_rename_swap_shows_a_snapshot_reader_the_new_table_empty(shop_built, database_url):
    # The documented limit of the rename swap (see elt.loaders.postgres.swap): no rows, not the old ones.
    _, project = shop_built
    with psycopg.connect(database_url) as reader:
        reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        reader.execute("SELECT 1")
        assert build(project, database_url).status == "success"
        assert reader.execute("SELECT count(*) FROM mart.orders").fetchone()[0] == 0
        reader.rollback()


def test_replace_rows_refuses_when_the_columns_differ(db, database_url):
    db.execute("CREATE TABLE public.t (a int)")
    db.execute("CREATE TABLE public.t_new (a int, b int)")
    with psycopg.connect(database_url) as conn, conn.cursor() as cur:
        assert replace_rows(cur, "public", "t", "t_new") is False


@pytest.mark.parametrize(("text", "expected"), [
    ("SELECT orders.id FROM mart.orders WHERE (orders.id > 1)",
     'SELECT orders.id FROM "mart"."orders_new" AS "orders" WHERE (orders.id > 1)'),
    ("SELECT o.id FROM mart.orders o", 'SELECT o.id FROM "mart"."orders_new" o'),
    ("SELECT 'mart.orders' AS s, x.y FROM mart.orders_archive x", "SELECT 'mart.orders' AS s, x.y FROM mart.orders_archive x"),
    ("SELECT n FROM (SELECT count(*) AS n FROM mart.orders) s",
     'SELECT n FROM (SELECT count(*) AS n FROM "mart"."orders_new" AS "orders") s'),
])
def test_retarget_points_deparsed_sql_at_the_shadow(text, expected):
    assert retarget(text, {"mart.orders": ("mart", "orders_new")}) == expected


def test_a_policy_that_no_longer_fits_the_new_columns_stops_the_rebuild_by_name(shop_built, db, database_url):
    _, project = shop_built
    db.execute("ALTER TABLE mart.orders ENABLE ROW LEVEL SECURITY")
    db.execute("CREATE POLICY small_only ON mart.orders USING (amount < 50)")
    write_models(project, {"mart/orders.sql": "SELECT o.id, o.customer_id, o.status, o.updated_at FROM stg.shop_orders AS o"})
    result = build(project, database_url)
    assert result.status == "failed"
    assert "policy small_only on mart.orders cannot be carried over" in result.error
    assert 'column "amount" does not exist' in result.error
    assert db.execute("SELECT count(*) AS n FROM pg_policy WHERE polname = 'small_only'").fetchone()["n"] == 1


def test_an_instead_of_trigger_on_a_dependent_view_is_carried(shop_built, db, database_url):
    _, project = shop_built
    db.execute("CREATE SCHEMA app")
    db.execute("CREATE TABLE app.requests (order_id int)")
    db.execute("CREATE VIEW app.order_requests AS SELECT id FROM mart.orders")
    db.execute("CREATE FUNCTION app.request() RETURNS trigger LANGUAGE plpgsql AS"
               " $$ BEGIN INSERT INTO app.requests VALUES (NEW.id); RETURN NEW; END $$")
    db.execute("CREATE TRIGGER on_insert INSTEAD OF INSERT ON app.order_requests FOR EACH ROW EXECUTE FUNCTION app.request()")
    assert build(project, database_url).status == "success"
    db.execute("INSERT INTO app.order_requests VALUES (7)")
    assert db.execute("SELECT order_id FROM app.requests").fetchone()["order_id"] == 7


def test_a_dependent_view_keeps_its_owner_and_the_table_its_replica_identity(shop_built, db, database_url, roles):
    # A view runs with its owner's privileges: a re-created view owned by the builder would read more.
    _, project = shop_built
    owner = roles["admin"]
    usage(db, roles, "mart")
    db.execute("CREATE SCHEMA bi")
    db.execute(f"GRANT USAGE, CREATE ON SCHEMA bi TO {owner}")
    db.execute(f"GRANT SELECT ON mart.orders TO {owner}")
    db.execute("CREATE VIEW bi.orders_seen AS SELECT id FROM mart.orders")
    db.execute(f"ALTER VIEW bi.orders_seen OWNER TO {owner}")
    db.execute("ALTER TABLE mart.orders REPLICA IDENTITY FULL")
    assert build(project, database_url).status == "success"
    row = db.execute("SELECT pg_get_userbyid(relowner) AS owner FROM pg_class WHERE oid = 'bi.orders_seen'::regclass").fetchone()
    assert row["owner"] == owner
    assert db.execute("SELECT relreplident FROM pg_class WHERE oid = 'mart.orders'::regclass").fetchone()["relreplident"] == "f"


def test_a_long_reader_makes_the_swap_give_up_after_bounded_waits(shop_built, db, database_url, monkeypatch):
    import time

    from elt.loaders.postgres import swap as swap_module

    monkeypatch.setattr(swap_module, "LOCK_TIMEOUT", "200ms")
    monkeypatch.setattr(swap_module, "LOCK_ATTEMPTS", 2)
    monkeypatch.setattr(swap_module, "LOCK_PAUSE_S", 0.1)
    _, project = shop_built
    with psycopg.connect(database_url) as reader:
        reader.execute("SELECT count(*) FROM mart.orders").fetchone()  # holds its lock until the transaction ends
        started = time.monotonic()
        result = build(project, database_url)
        assert time.monotonic() - started < 5
        assert result.status == "failed"
        assert "mart.orders stayed in use by another transaction (2 waits of 200ms)" in result.error
        # Meanwhile other readers were never blocked for long, and still read the old table.
        assert db.execute("SELECT count(*) AS n FROM mart.orders").fetchone()["n"] == 40
        reader.rollback()
    assert build(project, database_url).status == "success"


def test_a_view_over_pipeline_keeps_security_invoker_across_rebuilds_so_rls_keeps_api_roles_out(
        shop_built, db, database_url, roles):
    # README (least privilege): a model reading pipeline.* reads it with its owner's rights unless the
    # view is security_invoker; elt must keep that setting when the model changes and is rebuilt.
    _, project = shop_built
    api = roles["limited"]
    db.execute("ALTER TABLE pipeline.execution_log ENABLE ROW LEVEL SECURITY")
    db.execute(f"CREATE POLICY not_api ON pipeline.execution_log AS RESTRICTIVE USING (current_user <> '{api}')")
    usage(db, roles, "rpt", "pipeline")
    db.execute(f"GRANT SELECT ON pipeline.execution_log TO {api}")
    write_models(project, {"rpt/runs.sql": "-- materialized: view\nSELECT pipeline_name, status FROM pipeline.execution_log"})
    assert build(project, database_url, select=("rpt.runs",)).status == "success"
    db.execute(f"GRANT SELECT ON rpt.runs TO {api}")
    assert as_role(database_url, api, "SELECT count(*) FROM rpt.runs") >= 1  # the owner's rights: the wall is passed
    db.execute("ALTER VIEW rpt.runs SET (security_invoker = true)")
    assert as_role(database_url, api, "SELECT count(*) FROM rpt.runs") == 0

    write_models(project, {"rpt/runs.sql": "-- materialized: view\nSELECT pipeline_name, status, started_at"
                                           " FROM pipeline.execution_log"})
    result = build(project, database_url, select=("rpt.runs",))
    assert result.status == "success", result.error
    options = db.execute("SELECT reloptions FROM pg_class WHERE oid = 'rpt.runs'::regclass").fetchone()["reloptions"]
    assert options == ["security_invoker=true"]
    assert as_role(database_url, api, "SELECT count(*) FROM rpt.runs") == 0
