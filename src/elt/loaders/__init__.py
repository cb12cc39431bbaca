"""Destinations, found by name: each a raw writer plus a bookkeeping store (see ``base``).

``register(name, opener)`` adds one; ``open_loader(name, url, description)``
opens it. The PostgreSQL destination registers itself as ``postgres``
(``postgresql`` and ``supabase`` are its aliases), the BigQuery one as
``bigquery``.
"""

from __future__ import annotations

from collections.abc import Callable

from elt.errors import ConfigError
from elt.loaders.base import BookkeepingStore, Loader, LoadResult, RawWriter

#: name -> a function opening the destination from its URL (or settings) and a safe description.
_OPENERS: dict[str, Callable[[str, str], Loader]] = {}


def register(name: str, opener: Callable[[str, str], Loader]) -> None:
    _OPENERS[name] = opener


def _postgres(url: str, description: str) -> Loader:
    from elt.loaders.postgres import PostgresLoader

    return PostgresLoader(url, description)


for _name in ("postgres", "postgresql", "supabase"):
    register(_name, _postgres)


def _bigquery(url: str, description: str) -> Loader:
    # No URL: a BigQuery destination is its ELT_BIGQUERY_* settings (see elt.destinations.BigQuery).
    from elt.loaders.bigquery import BigQueryLoader, BigQuerySettings

    return BigQueryLoader(BigQuerySettings.from_env(), description or None)


register("bigquery", _bigquery)


def open_loader(name: str, url: str, description: str) -> Loader:
    """Open the destination registered as ``name``."""
    try:
        opener = _OPENERS[name]
    except KeyError:
        raise ConfigError(f"destination {name!r} is not one of {', '.join(sorted(_OPENERS))}") from None
    return opener(url, description)


__all__ = ["BookkeepingStore", "LoadResult", "Loader", "RawWriter", "open_loader", "register"]
