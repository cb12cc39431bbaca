"""Session-wide fixtures: one real PostgreSQL server, a fresh database per test."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from elt.loaders.postgres import PostgresLoader
from elt.logs import configure_logging
from elt.pipeline import clear_registry
from elt.testing import FakeApi
from tests.fixtures.bigquery import BigQueryEmulator, iter_emulator
from tests.fixtures.postgres import TestServer, embedded_default_dir, iter_server


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--reliability-full",
        action="store_true",
        help="run the reliability suite (tests/reliability) at its full size instead of CI's",
    )


@pytest.fixture(scope="session")
def pg_server() -> Iterator[TestServer]:
    yield from iter_server()


@pytest.fixture
def database_url(pg_server: TestServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A new, empty database on the test server; also set as ELT_DATABASE_URL."""
    url = pg_server.create_database()
    monkeypatch.setenv("ELT_DATABASE_URL", url)
    try:
        yield url
    finally:
        pg_server.drop_database(url)


@pytest.fixture
def embedded_dir() -> Iterator[Any]:
    """A data folder for elt's own embedded default database, stopped and deleted after the test."""
    yield from embedded_default_dir()


@pytest.fixture
def source_url(pg_server: TestServer) -> Iterator[str]:
    """A second new database on the test server, standing in for a source system."""
    url = pg_server.create_database()
    try:
        yield url
    finally:
        pg_server.drop_database(url)


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to the test database returning dict rows."""
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        yield conn


@pytest.fixture
def loader(database_url: str) -> Iterator[PostgresLoader]:
    loader = PostgresLoader(database_url)
    loader.store.migrate()
    try:
        yield loader
    finally:
        loader.close()


@pytest.fixture(scope="session")
def bq_emulator() -> Iterator[BigQueryEmulator]:
    """A local BigQuery emulator on 127.0.0.1 for the session (the stock client reaches it)."""
    yield from iter_emulator()


@pytest.fixture
def bq_prefix(bq_emulator: BigQueryEmulator) -> Iterator[str]:
    """A dataset prefix no other test uses; the datasets made under it are deleted afterwards."""
    import uuid

    prefix = f"t{uuid.uuid4().hex[:10]}_"
    yield prefix
    client = bq_emulator.client()
    for dataset in list(client.list_datasets()):
        if dataset.dataset_id.startswith(prefix):
            client.delete_dataset(dataset.dataset_id, delete_contents=True, not_found_ok=True)


@pytest.fixture
def fake_api() -> Iterator[FakeApi]:
    """A real HTTP server on 127.0.0.1 with no routes yet; stopped after the test."""
    with FakeApi() as api:
        yield api


@pytest.fixture(autouse=True)
def _fresh_registry() -> Iterator[None]:
    clear_registry()
    configure_logging(fmt="console", force=True)
    yield
    clear_registry()
