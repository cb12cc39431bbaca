"""Models built in PostgreSQL: each in its own transaction, tested, then swapped in (see ``elt.transforms.materialize``)."""

from __future__ import annotations

from collections.abc import Collection
from typing import ClassVar

import psycopg

from elt.transforms.datatests import run_checks
from elt.transforms.materialize import build, create_schemas
from elt.transforms.models import Model
from elt.transforms.warehouse import CREATE_KIND, Built, Judge, Warehouse


class PostgresWarehouse(Warehouse):
    """The database at ``url``: one connection per model build, so models build in parallel."""

    name = "postgres"
    errors: ClassVar[tuple[type[BaseException], ...]] = (psycopg.Error,)

    def __init__(self, url: str) -> None:
        self.url = url

    def prepare(self, schemas: Collection[str]) -> set[str]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            create_schemas(conn, set(schemas))
            return {r[0] for r in conn.execute(
                "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')")}

    def statement(self, model: Model) -> str:
        return f"CREATE {CREATE_KIND[model.config.materialized]} {model.relation} AS\n{model.sql}"

    def build(self, model: Model, *, full_refresh: bool, judge: Judge, recomputed: Collection[str] = ()) -> Built:
        with psycopg.connect(self.url, autocommit=False, application_name=f"elt-transform {model.relation}") as conn:
            with conn.cursor() as cur:
                built = build(cur, model, full_refresh=full_refresh, recomputed=recomputed,
                              check=lambda relation: judge(run_checks(cur, model.config.tests, relation)))
            conn.commit()
        return built
