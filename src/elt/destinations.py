"""Destinations: where a pipeline loads, resolved to a loader when a run starts.

``Postgres()`` with no URL means ``ELT_DATABASE_URL`` (environment or ``.env``)
and, when that is unset, the embedded default database. ``BigQuery(...)``
means a BigQuery project; what it leaves out comes from ``ELT_BIGQUERY_*``.
A pipeline that names no destination loads where ``ELT_DESTINATION``
(``postgres``, the default, or ``bigquery``) says, read when the run starts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from elt.config import DatabaseTarget, database_target, load_dotenv_once
from elt.errors import ConfigError
from elt.loaders.base import Loader

if TYPE_CHECKING:
    from elt.loaders.bigquery.connection import BigQuerySettings
    from elt.transforms.warehouse import Warehouse

_POSTGRES_NAMES = ("postgres", "postgresql", "supabase")


@dataclass(frozen=True)
class Postgres:
    """A PostgreSQL or Supabase database. ``url_env`` names the variable holding its URL."""

    url_env: str = "ELT_DATABASE_URL"

    def target(self, project_dir: Path | None = None) -> DatabaseTarget:
        return database_target(project_dir, self.url_env)

    def loader(self, project_dir: Path | None = None) -> Loader:
        from elt.loaders import open_loader

        target = self.target(project_dir)
        return open_loader("postgres", target.url, target.description)

    def statement_warehouse(self, project_dir: Path | None = None) -> Warehouse:
        """A warehouse that writes the statements a build would run and opens nothing (``--dry-run``)."""
        from elt.loaders.postgres.warehouse import PostgresWarehouse

        # No URL: finding it could start the embedded database, and writing SQL needs none.
        return PostgresWarehouse("")


@dataclass(frozen=True)
class BigQuery:
    """A BigQuery project: datasets ``<dataset_prefix><layer>``, created on first use.

    Arguments left out come from ``ELT_BIGQUERY_PROJECT``, ``ELT_BIGQUERY_DATASET_PREFIX``,
    ``ELT_BIGQUERY_LOCATION`` and ``ELT_BIGQUERY_MAXIMUM_BYTES_BILLED`` (environment or ``.env``).
    ``maximum_bytes_billed`` fails any query that would bill more (0: no limit). Credentials are
    the client library's own (``GOOGLE_APPLICATION_CREDENTIALS`` or the environment's default).
    """

    project: str | None = None
    dataset_prefix: str | None = None
    location: str | None = None
    maximum_bytes_billed: int | None = None
    #: Another address for the BigQuery API, with anonymous credentials (a local emulator).
    endpoint: str | None = None

    def settings(self, project_dir: Path | None = None) -> BigQuerySettings:
        from elt.loaders.bigquery.connection import BigQuerySettings

        load_dotenv_once(project_dir)
        settings = BigQuerySettings.from_env(project=self.project, dataset_prefix=self.dataset_prefix,
                                             location=self.location, endpoint=self.endpoint)
        if self.maximum_bytes_billed is not None:
            from dataclasses import replace

            settings = replace(settings, maximum_bytes_billed=self.maximum_bytes_billed or None)
        return settings

    def loader(self, project_dir: Path | None = None) -> Loader:
        from elt.loaders.bigquery import BigQueryLoader

        return BigQueryLoader(self.settings(project_dir))

    def statement_warehouse(self, project_dir: Path | None = None) -> Warehouse:
        """A warehouse that writes the statements a build would run and opens nothing (``--dry-run``)."""
        from elt.loaders.bigquery.connection import BigQueryConnection
        from elt.loaders.bigquery.warehouse import bigquery_warehouse

        # The connection's client is made on first use, and writing SQL never uses it.
        return bigquery_warehouse(BigQueryConnection(self.settings(project_dir)))

    def target(self, project_dir: Path | None = None) -> DatabaseTarget:
        raise ConfigError("this part of elt (webhook sources, `elt cdc`) loads into PostgreSQL only, and the"
                          " destination is BigQuery; give it destination=elt.Postgres()")


@dataclass(frozen=True)
class FromEnvironment:
    """The destination ``ELT_DESTINATION`` names (environment or ``.env``), read when a loader is opened."""

    def chosen(self, project_dir: Path | None = None) -> Postgres | BigQuery:
        load_dotenv_once(project_dir)
        name = os.environ.get("ELT_DESTINATION", "").strip().lower() or "postgres"
        if name in _POSTGRES_NAMES:
            return Postgres()
        if name == "bigquery":
            return BigQuery()
        raise ConfigError(f"ELT_DESTINATION={name!r} is not one of postgres, supabase, bigquery")

    def loader(self, project_dir: Path | None = None) -> Loader:
        return self.chosen(project_dir).loader(project_dir)

    def statement_warehouse(self, project_dir: Path | None = None) -> Warehouse:
        return self.chosen(project_dir).statement_warehouse(project_dir)

    def target(self, project_dir: Path | None = None) -> DatabaseTarget:
        return self.chosen(project_dir).target(project_dir)


Destination = Postgres | BigQuery | FromEnvironment


def resolve(destination: Destination | str | None) -> Destination:
    """Turn a pipeline's ``destination=`` argument into a destination object."""
    if destination is None:
        return FromEnvironment()
    if isinstance(destination, (Postgres, BigQuery, FromEnvironment)):
        return destination
    if destination in _POSTGRES_NAMES:
        return Postgres()
    if destination == "bigquery":
        return BigQuery()
    raise ConfigError(
        f"destination {destination!r} is not supported; use 'postgres', 'bigquery', elt.Postgres(url_env=...)"
        " or elt.BigQuery(project=...)"
    )
