"""Materialisations: how a model's SELECT becomes a view, table, materialised view or incremental table.

Each model builds inside one transaction, so readers never see a half-built
relation and a failed build (or a failed data test) leaves the last good
version in place:

- a rebuild creates ``<name>__elt_new``, runs the data tests against it, then
  swaps it in with :func:`elt.loaders.postgres.swap.swap`, which carries over
  everything users added to the old relation (grants, policies, indexes,
  dependent views and functions, ...) or refuses by name -- all before COMMIT;
  ``swap: delete_insert`` replaces the rows in place instead;
- an ``incremental`` model merges its watermark window into the existing table
  by ``unique_key`` and removes rows that left it (:mod:`elt.transforms.incremental`;
  full rebuild with ``--full-refresh``);
- an unchanged ``materialized_view`` is refreshed (``CONCURRENTLY`` when it has
  a unique index, so readers are not blocked); an unchanged ``view`` is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from psycopg import sql

from elt.loaders.postgres.connection import ensure_schema
from elt.loaders.postgres.raw import short_identifier
from elt.loaders.postgres.swap import replace_rows, swap
from elt.transforms import incremental
from elt.transforms.datatests import DataTestResult
from elt.transforms.models import Model
from elt.transforms.warehouse import (  # noqa: F401 - MODEL_MARK, fingerprint: imported from here by users
    CREATE_KIND,
    MODEL_MARK,
    Built,
    ModelError,
    fingerprint,
    model_comment,
)

_KINDS = {"v": "VIEW", "r": "TABLE", "m": "MATERIALIZED VIEW", "p": "TABLE"}

Check = Callable[[str], list[DataTestResult]]
_comment = model_comment  # the name tests and older code import


def build(cur: Any, model: Model, *, full_refresh: bool, check: Check, recomputed: Collection[str] = ()) -> Built:
    """Build ``model`` with the cursor's connection (in a transaction the caller commits).

    The model's schema must exist (see :func:`create_schemas`). ``recomputed`` names materialised
    views that an upstream's swap already computed from the new data in this build.
    """
    # Two builds of one model (a cron run and `elt transform`) take turns.
    cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"elt:model:{model.relation}"])
    existing = _existing(cur, model.schema, model.name)
    kind = model.config.materialized
    unchanged = existing is not None and existing["comment"] == model_comment(model)
    if not full_refresh and existing is not None:
        if kind == "incremental" and existing["relkind"] in ("r", "p"):
            return _merge(cur, model, check)
        if kind == "materialized_view" and existing["relkind"] == "m" and unchanged:
            if model.relation in recomputed:
                # Computed once, beside the upstream's swap and outside its lock: not a second time.
                cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(model.schema, model.name)))
                return Built(int(cur.fetchone()[0]), check(model.relation), "kept (computed when its upstream was swapped)")
            return _refresh(cur, model, check)
        if kind == "view" and existing["relkind"] == "v" and unchanged:
            return Built(0, check(model.relation), "kept (unchanged)")
    return _rebuild(cur, model, existing, check)


def create_schemas(conn: Any, schemas: set[str]) -> None:
    """Create the layers' schemas once, before models build in parallel (concurrent CREATE SCHEMA races)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('elt:schemas'))")
        for schema in sorted(schemas):
            ensure_schema(conn, schema)


def _rebuild(cur: Any, model: Model, existing: dict[str, Any] | None, check: Check) -> Built:
    kind = model.config.materialized
    # Taken before the SELECT runs (see incremental.read_horizon).
    horizon = incremental.read_horizon(cur) if kind == "incremental" else None
    temp = f"{model.name}__elt_new"
    if len(temp.encode()) > 63:
        temp = short_identifier(model.relation, "new")
    target = sql.Identifier(model.schema, temp)
    cur.execute(sql.SQL("CREATE {kind} {t} AS {body}").format(
        kind=sql.SQL(CREATE_KIND[kind]), t=target, body=sql.SQL(model.sql)))  # type: ignore[arg-type]
    rows = max(cur.rowcount, 0) if kind != "view" else 0
    # Tested before it replaces anything: a failing test keeps the last good version.
    tests = check(f"{model.schema}.{temp}")
    key_index = short_identifier(model.relation, "key")
    if model.config.unique_key and kind != "view":
        cur.execute("SAVEPOINT elt_key")
        try:
            cur.execute(sql.SQL("CREATE UNIQUE INDEX {i} ON {t} ({cols})").format(
                i=sql.Identifier(key_index + "_new"), t=target,
                cols=sql.SQL(", ").join(map(sql.Identifier, model.config.unique_key))))
        except Exception as exc:
            cur.execute("ROLLBACK TO SAVEPOINT elt_key")
            raise ModelError(
                f"{model.path}: unique_key ({', '.join(model.config.unique_key)}) is not unique in the new"
                f" {model.relation}: {str(exc).splitlines()[0]}. Deduplicate in the SELECT, or fix unique_key"
            ) from None
    relation = sql.Identifier(model.schema, model.name)
    if (model.config.swap == "delete_insert" and existing is not None and existing["relkind"] in ("r", "p")
            and kind in ("table", "incremental") and replace_rows(cur, model.schema, model.name, temp)):
        cur.execute(sql.SQL("COMMENT ON TABLE {t} IS {c}").format(t=relation, c=sql.Literal(model_comment(model))))
        if horizon is not None:
            incremental.record(cur, model, horizon, full_refresh=True)
        return Built(rows, tests, "replaced rows in place (delete + insert)")
    report = swap(cur, model.schema, model.name, temp, where=model.path, own_indexes={key_index})
    if model.config.unique_key and kind != "view":
        cur.execute(sql.SQL("ALTER INDEX {i} RENAME TO {n}").format(
            i=sql.Identifier(model.schema, key_index + "_new"), n=sql.Identifier(key_index)))
    cur.execute(sql.SQL("COMMENT ON {kind} {t} IS {c}").format(
        kind=sql.SQL(CREATE_KIND[kind]), t=relation, c=sql.Literal(model_comment(model))))
    if horizon is not None:
        incremental.record(cur, model, horizon, full_refresh=True)
    action = "created" if existing is None else report.describe()
    return Built(rows, tests, action, recomputed=report.recomputed)


def _merge(cur: Any, model: Model, check: Check) -> Built:
    try:
        merged = incremental.merge(cur, model)
    except incremental.IncrementalError as exc:
        raise ModelError(str(exc)) from None
    action = f"merged ({merged.deleted} rows no longer in the model removed)" if merged.deleted else "merged"
    return Built(merged.rows + merged.deleted, check(model.relation), action)


def _refresh(cur: Any, model: Model, check: Check) -> Built:
    target = sql.Identifier(model.schema, model.name)
    cur.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_index WHERE indrelid = %s::regclass AND indisunique AND indpred IS NULL)",
        [f'"{model.schema}"."{model.name}"'])
    concurrently = bool(cur.fetchone()[0])
    # CONCURRENTLY needs a unique index and lets readers keep reading during the refresh.
    cur.execute(sql.SQL("REFRESH MATERIALIZED VIEW {c} {t}").format(
        c=sql.SQL("CONCURRENTLY" if concurrently else ""), t=target))
    cur.execute(sql.SQL("SELECT count(*) FROM {}").format(target))
    rows = int(cur.fetchone()[0])
    return Built(rows, check(model.relation), "refreshed concurrently" if concurrently else "refreshed")


def _existing(cur: Any, schema: str, name: str) -> dict[str, Any] | None:
    cur.execute(
        "SELECT c.oid, c.relkind, obj_description(c.oid, 'pg_class') FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s"
        " AND c.relkind IN ('r', 'p', 'v', 'm')", [schema, name])
    row = cur.fetchone()
    return None if row is None else {"oid": row[0], "relkind": row[1], "comment": row[2]}
