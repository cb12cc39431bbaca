"""A shop project with ten models across stg, mart and rpt, over raw data loaded by a real run."""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path
from typing import Any

import pytest

from elt import Cursor, Pipeline
from tests.helpers import list_stream

START = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)

MODELS = {
    "stg/shop_orders.sql": """
        -- materialized: view
        -- unique_key: id
        -- tests: unique(id), not_null(id, customer_id)
        SELECT DISTINCT ON (_raw_payload->>'id')
            (_raw_payload->>'id')::int AS id,
            (_raw_payload->>'customer_id')::int AS customer_id,
            _raw_payload->>'status' AS status,
            (_raw_payload->>'amount')::numeric(12, 2) AS amount,
            (_raw_payload->>'updated_at')::timestamptz AS updated_at
        FROM raw.shop_orders
        ORDER BY _raw_payload->>'id', (_raw_payload->>'updated_at')::timestamptz DESC, _row_seq DESC
    """,
    "stg/shop_customers.sql": """
        -- tests: unique(id)
        SELECT (_raw_payload->>'id')::int AS id, _raw_payload->>'name' AS name, _raw_payload->>'tier' AS tier
        FROM raw.shop_customers
    """,
    "mart/customers.sql": """
        -- materialized: table
        -- unique_key: id
        -- tests: unique(id), not_null(id), accepted_values(tier: gold, silver, bronze)
        SELECT id, name, tier FROM stg.shop_customers
    """,
    "mart/orders.sql": """
        -- materialized: table
        -- unique_key: id
        -- tests: relationships(customer_id: mart.customers.id),
        -- tests: accepted_values(status: paid, refunded, pending), row_count > 0
        SELECT o.id, o.customer_id, o.status, o.amount, o.updated_at
        FROM stg.shop_orders AS o
    """,
    "mart/orders_incremental.sql": """
        -- materialized: incremental
        -- unique_key: id
        -- watermark: updated_at
        SELECT id, customer_id, status, amount, updated_at FROM stg.shop_orders
    """,
    "mart/daily_revenue.sql": """
        -- unique_key: day
        -- tests: unique(day), freshness(last_update: 3650d)
        WITH paid AS (SELECT * FROM mart.orders WHERE status = 'paid')
        SELECT date_trunc('day', updated_at) AS day, sum(amount) AS revenue, count(*) AS orders,
               max(updated_at) AS last_update
        FROM paid GROUP BY 1
    """,
    "rpt/revenue_by_month.sql": """
        SELECT date_trunc('month', day) AS month, sum(revenue) AS revenue FROM mart.daily_revenue GROUP BY 1
    """,
    "rpt/client_health.sql": """
        -- materialized: materialized_view
        -- unique_key: customer_id
        SELECT c.id AS customer_id, c.name, count(o.id) AS orders, coalesce(sum(o.amount), 0) AS spent
        FROM mart.customers AS c LEFT JOIN mart.orders AS o ON o.customer_id = c.id
        GROUP BY c.id, c.name
    """,
    "rpt/top_customers.sql": """
        SELECT * FROM rpt.client_health ORDER BY spent DESC LIMIT 3
    """,
    "rpt/status_mix.sql": """
        SELECT status, count(*) AS orders FROM mart.orders GROUP BY status
    """,
}


def write_models(project: Path, models: dict[str, str]) -> Path:
    for relative, text in models.items():
        path = project / "sql" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).strip() + "\n", encoding="utf-8")
    return project


def make_orders(count: int, *, version: int = 0) -> list[dict[str, Any]]:
    statuses = ["paid", "paid", "refunded", "pending"]
    return [
        {"id": i, "customer_id": 1 + i % 5, "status": statuses[(i + version) % 4], "amount": f"{10 + i % 90}.{version:02d}",
         "updated_at": (START + dt.timedelta(hours=i + version * 1000)).isoformat()}
        for i in range(1, count + 1)
    ]


CUSTOMERS = [{"id": i, "name": f"Customer {i}", "tier": ["gold", "silver", "bronze"][i % 3]} for i in range(1, 6)]


class Shop:
    """Source data the shop pipeline reads (mutable between runs) and the pipeline itself."""

    def __init__(self) -> None:
        self.orders = make_orders(40)
        self.customers = [dict(c) for c in CUSTOMERS]
        self.pipeline = Pipeline("shop", streams=[
            list_stream(self.orders, name="orders", primary_key="id", cursor=Cursor("updated_at")),
            list_stream(self.customers, name="customers", primary_key="id"),
        ])


@pytest.fixture
def shop(tmp_path: Path) -> tuple[Shop, Path]:
    project = write_models(tmp_path / "shop", MODELS)
    return Shop(), project
