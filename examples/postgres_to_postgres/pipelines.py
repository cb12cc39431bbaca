"""PostgreSQL to PostgreSQL: incremental by updated_at, and deletes found by key reconciliation.

    elt --project examples/postgres_to_postgres run          # incremental load (+ models)
    python examples/postgres_to_postgres/source_db.py         # the source changes
    elt --project examples/postgres_to_postgres run          # only the changes are read
    elt --project examples/postgres_to_postgres reconcile    # mark customers deleted at the source

Set ``SOURCE_DATABASE_URL`` to read a real database; without it the example
creates a ``shop_source`` schema inside the destination database, so it runs
on the embedded default with nothing else.
"""

import datetime as dt
import os

import source_db  # the example's stand-in source system

from elt import Cursor, Pipeline, SqlExtractor

SOURCE_URL = source_db.source_url()
if not os.environ.get("SOURCE_DATABASE_URL"):
    source_db.prepare(SOURCE_URL)


class Orders(SqlExtractor):
    name = "orders"
    url = SOURCE_URL
    table = "shop_source.orders"
    primary_key = "id"
    # Orders change after creation: incremental on updated_at, with a lookback for late commits.
    cursor = Cursor("updated_at", lookback=dt.timedelta(minutes=15))
    write_strategy = "upsert"


class Customers(SqlExtractor):
    name = "customers"
    url = SOURCE_URL
    table = "shop_source.customers"
    primary_key = "id"
    cursor = Cursor("updated_at", lookback=dt.timedelta(minutes=15))
    write_strategy = "upsert"
    # Deleted customers never show up in an incremental read: `elt reconcile` compares keys.
    detect_deletes = True


Pipeline("shop", streams=[Orders(), Customers()], description="The shop database, mirrored incrementally")
