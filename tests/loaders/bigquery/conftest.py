"""A BigQuery loader on the session's emulator, under a dataset prefix of its own per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from elt.loaders.bigquery import BigQueryLoader, BigQuerySettings
from tests.fixtures.bigquery import BigQueryEmulator


@pytest.fixture
def bq_settings(bq_emulator: BigQueryEmulator, bq_prefix: str) -> BigQuerySettings:
    return BigQuerySettings(project=bq_emulator.project, dataset_prefix=bq_prefix, endpoint=bq_emulator.endpoint)


@pytest.fixture
def bq_loader(bq_settings: BigQuerySettings) -> Iterator[BigQueryLoader]:
    loader = BigQueryLoader(bq_settings)
    loader.store.migrate()
    try:
        yield loader
    finally:
        loader.close()


@pytest.fixture
def bq(bq_loader: BigQueryLoader):  # type: ignore[no-untyped-def]
    """Run a query on the test's datasets: ``bq("SELECT ... FROM {raw}.t")`` ({raw}, {pipeline}, {stg} quoted)."""
    settings = bq_loader.settings

    def query(sql: str, **params: object) -> list[dict[str, object]]:
        names = {layer: f"`{settings.project}.{settings.dataset(layer)}`" for layer in ("raw", "pipeline", "stg")}
        return bq_loader.connection.query(sql.format(**names), params or None)

    return query
