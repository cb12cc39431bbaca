"""The BigQuery destination: load jobs into day-partitioned raw tables, bookkeeping in the ``pipeline`` dataset.

Every statement elt runs on a BigQuery destination lives in this package:
``raw.py`` (raw tables and the SQL of each strategy primitive), ``writer.py``
(batches: a load job, then one transaction), ``store.py`` (``pipeline.*``)
and ``connection.py`` (the client, the byte guard, bytes processed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from elt.loaders.base import Loader
from elt.loaders.bigquery.connection import BigQueryConnection, BigQuerySettings
from elt.loaders.bigquery.store import BigQueryStore
from elt.loaders.bigquery.writer import BigQueryWriter

if TYPE_CHECKING:
    from elt.loaders.bigquery.warehouse import BigQueryWarehouse


class BigQueryLoader(Loader):
    """An opened BigQuery destination: writer and store share one connection (and its bytes processed)."""

    def __init__(self, settings: BigQuerySettings, description: str | None = None) -> None:
        self.settings = settings
        self.connection = BigQueryConnection(settings)
        description = description or settings.describe()
        super().__init__(BigQueryWriter(self.connection), BigQueryStore(self.connection, description), description)

    def warehouse(self) -> BigQueryWarehouse:
        from elt.loaders.bigquery.warehouse import bigquery_warehouse

        return bigquery_warehouse(self.connection)

    def close(self) -> None:
        super().close()
        self.connection.close()


__all__ = ["BigQueryConnection", "BigQueryLoader", "BigQuerySettings", "BigQueryStore", "BigQueryWriter"]
