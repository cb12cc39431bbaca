"""The example's source system: a shop database, and a script that changes it.

Without ``SOURCE_DATABASE_URL`` the source is schema ``shop_source`` inside the
destination database itself (so the example needs nothing but the embedded
default); ``pipelines.py`` creates it on first use. Run this file to play a few
hours of business (some orders refunded, new orders, a customer deleted)::

    python examples/postgres_to_postgres/source_db.py
"""

from __future__ import annotations

import os
from pathlib import Path

import psycopg

from elt import Postgres

SCHEMA = """
CREATE SCHEMA shop_source;
CREATE TABLE shop_source.customers (
    id          int PRIMARY KEY,
    email       text NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE shop_source.orders (
    id          bigint PRIMARY KEY,
    customer_id int NOT NULL,
    status      text NOT NULL,
    total       numeric(12, 2) NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
-- The extractor pages on (updated_at, id): this index makes each page an index range scan.
CREATE INDEX ON shop_source.orders (updated_at, id);
INSERT INTO shop_source.customers (id, email)
    SELECT i, 'customer' || i || '@example.com' FROM generate_series(1, 200) i;
INSERT INTO shop_source.orders (id, customer_id, status, total, updated_at)
    SELECT i, 1 + i % 200, (ARRAY['paid', 'shipped', 'delivered'])[1 + i % 3], round((5 + i % 95)::numeric * 1.1, 2),
           now() - (5000 - i) * interval '1 minute'
    FROM generate_series(1, 5000) i;
"""

CHURN = """
UPDATE shop_source.orders SET status = 'refunded', updated_at = now()
    WHERE id IN (SELECT id FROM shop_source.orders WHERE status = 'delivered' ORDER BY random() LIMIT 5);
INSERT INTO shop_source.orders (id, customer_id, status, total)
    SELECT max_id + i, 1 + (max_id + i) % 200, 'paid', 19.90 FROM generate_series(1, 20) i,
           (SELECT max(id) AS max_id FROM shop_source.orders) m;
DELETE FROM shop_source.customers WHERE id = (SELECT min(id) FROM shop_source.customers);
"""


def source_url() -> str:
    return os.environ.get("SOURCE_DATABASE_URL") or Postgres().target(Path(__file__).parent).url


def prepare(url: str) -> None:
    """Create the sample source unless it exists."""
    with psycopg.connect(url, autocommit=True) as conn:
        if not conn.execute("SELECT to_regclass('shop_source.orders') IS NOT NULL").fetchone()[0]:
            conn.execute(SCHEMA)


def churn(url: str) -> None:
    prepare(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(CHURN)


if __name__ == "__main__":
    churn(source_url())
    print("the source changed: 5 orders refunded, 20 new orders, 1 customer deleted")
