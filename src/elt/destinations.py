"""Destinations: where a pipeline loads, resolved to a loader when a run starts.

``Postgres()`` with no URL means ``ELT_DATABASE_URL`` (environment or ``.env``)
and, when that is unset, the embedded default database.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from elt.config import DatabaseTarget, database_target
from elt.errors import ConfigError
from elt.loaders.base import Loader


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


Destination = Postgres


def resolve(destination: Destination | str | None) -> Destination:
    """Turn a pipeline's ``destination=`` argument into a destination object."""
    if destination is None or destination in ("postgres", "postgresql", "supabase"):
        return Postgres()
    if isinstance(destination, Postgres):
        return destination
    raise ConfigError(
        f"destination {destination!r} is not supported yet; use 'postgres' (or elt.Postgres(url_env=...))"
    )
