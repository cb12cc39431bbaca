"""The BigQuery destination: load jobs into day-partitioned raw tables, bookkeeping in the ``pipeline`` dataset."""

from elt.loaders.bigquery.connection import BigQueryConnection, BigQuerySettings

__all__ = ["BigQueryConnection", "BigQuerySettings"]
