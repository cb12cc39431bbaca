"""The PostgreSQL (and Supabase) destination: a raw writer and a bookkeeping store in one database.

Every statement elt runs on a PostgreSQL destination lives in this package:
``raw.py`` (raw tables and the SQL of each strategy primitive), ``writer.py``
(batches, shadows, deletes), ``store.py`` (``pipeline.*``) and
``monitoring.py`` (the queries behind `elt check`), ``warehouse.py`` (building the
project's models, with ``elt.transforms.materialize``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from elt import secrets
from elt.loaders.base import Loader
from elt.loaders.postgres.store import PostgresStore
from elt.loaders.postgres.writer import PostgresWriter

if TYPE_CHECKING:
    from elt.loaders.postgres.warehouse import PostgresWarehouse


class PostgresLoader(Loader):
    """An opened PostgreSQL destination: ``writer`` on the data connection, ``store`` on the autocommit one."""

    def __init__(self, url: str, description: str | None = None) -> None:
        self.url = url
        description = description or secrets.redact(url)
        store = PostgresStore(url, description)
        super().__init__(PostgresWriter(url), store, description)

    def warehouse(self) -> PostgresWarehouse:
        from elt.loaders.postgres.warehouse import PostgresWarehouse

        return PostgresWarehouse(self.url)


__all__ = ["PostgresLoader", "PostgresStore", "PostgresWriter"]
