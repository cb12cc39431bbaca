"""``elt demo``: write a small, runnable sample project (a coffee shop's orders and customers)."""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

from elt.errors import ConfigError

PIPELINES = '''\
"""The elt demo: a coffee shop's customers and orders, read from files that stand in for its API.

Run it with `elt run`; look at it with `elt status`. Running it again changes
nothing: orders are re-read from the watermark minus the lookback, and
records already stored byte for byte are not stored again.
"""

import datetime as dt
import gzip
import json
from pathlib import Path

from elt import Cursor, Pipeline, extractor

DATA = Path(__file__).parent / "data"


def read(name):
    with gzip.open(DATA / f"{name}.ndjson.gz", "rt", encoding="utf-8") as fh:
        for line in fh:
            yield json.loads(line)


@extractor(primary_key="id")
def customers():
    """A small reference list, read whole each run and upserted."""
    yield from read("customers")


@extractor(primary_key="id", cursor=Cursor("updated_at", lookback=dt.timedelta(hours=1)))
def orders(since):
    """Orders changed since the watermark (minus one hour of lookback), oldest first."""
    for order in read("orders"):
        if since is None or dt.datetime.fromisoformat(order["updated_at"]) >= since:
            yield order


Pipeline(name="shop", streams=[customers, orders])
'''

# The transform layer: typed staging views, a mart table, a reporting materialised view.
MODELS = {
    "stg/shop_orders.sql": """\
-- The latest version of each order, typed (replaces the view elt generates for the stream).
-- materialized: view
-- unique_key: id
-- tests: unique(id), not_null(customer_id), accepted_values(status: pending, paid, shipped, delivered, refunded, cancelled)
SELECT DISTINCT ON (_raw_payload ->> 'id')
    (_raw_payload ->> 'id')::bigint AS id,
    (_raw_payload ->> 'customer_id')::bigint AS customer_id,
    _raw_payload ->> 'status' AS status,
    (_raw_payload ->> 'amount')::numeric(12, 2) AS amount,
    _raw_payload ->> 'currency' AS currency,
    jsonb_array_length(_raw_payload -> 'lines') AS line_count,
    (_raw_payload ->> 'created_at')::timestamptz AS created_at,
    (_raw_payload ->> 'updated_at')::timestamptz AS updated_at
FROM raw.shop_orders
ORDER BY _raw_payload ->> 'id', (_raw_payload ->> 'updated_at')::timestamptz DESC, _row_seq DESC
""",
    "stg/shop_customers.sql": """\
-- materialized: view
-- unique_key: id
-- tests: unique(id), not_null(email)
SELECT
    (_raw_payload ->> 'id')::bigint AS id,
    _raw_payload ->> 'name' AS name,
    _raw_payload ->> 'email' AS email,
    _raw_payload ->> 'city' AS city,
    _raw_payload ->> 'segment' AS segment
FROM raw.shop_customers
""",
    "mart/daily_revenue.sql": """\
-- Revenue per day and currency; refunded and cancelled orders are not revenue.
-- materialized: table
-- unique_key: day, currency
-- tests: unique(day, currency), row_count > 0
SELECT created_at::date AS day, currency, sum(amount) AS revenue, count(*) AS orders
FROM stg.shop_orders
WHERE status NOT IN ('refunded', 'cancelled')
GROUP BY 1, 2
""",
    "rpt/customer_value.sql": """\
-- Per customer: orders, spend and last order, for the weekly review.
-- materialized: materialized_view
-- unique_key: customer_id
-- tests: unique(customer_id), relationships(customer_id: stg.shop_customers.id)
SELECT c.id AS customer_id, c.name, c.segment,
       count(o.id) AS orders,
       coalesce(sum(o.amount) FILTER (WHERE o.status NOT IN ('refunded', 'cancelled')), 0) AS spent,
       max(o.created_at) AS last_order_at
FROM stg.shop_customers AS c
LEFT JOIN stg.shop_orders AS o ON o.customer_id = c.id
GROUP BY c.id, c.name, c.segment
""",
}

README = """\
# elt demo

A coffee shop's customers and orders, loaded into PostgreSQL by `elt`.

    elt run          # load (again: nothing changes)
    elt status       # recent runs
    elt state show   # watermarks

    elt transform    # rebuild the models in sql/ (a run does it after loading)

Tables: `raw.shop_customers`, `raw.shop_orders` (every record as received in
`_raw_payload`); models from `sql/`: `stg.shop_orders` (latest version of
each order, typed), `stg.shop_customers`, `mart.daily_revenue`,
`rpt.customer_value`; and `pipeline.execution_log`.
"""


def create_demo(directory: Path) -> Path:
    """Create the demo project in ``directory`` (which must not exist or be empty)."""
    directory = directory.expanduser().resolve()
    if directory.exists() and any(directory.iterdir()):
        raise ConfigError(
            f"{directory} already exists and is not empty: run `elt run` inside it, or remove it to start over"
        )
    (directory / "data").mkdir(parents=True, exist_ok=True)
    (directory / "pipelines.py").write_text(PIPELINES, encoding="utf-8")
    (directory / "README.md").write_text(README, encoding="utf-8")
    (directory / ".gitignore").write_text(".elt/\n.env\n", encoding="utf-8")
    for relative, text in MODELS.items():
        (directory / "sql" / relative).parent.mkdir(parents=True, exist_ok=True)
        (directory / "sql" / relative).write_text(text, encoding="utf-8")
    data = resources.files("elt.demo") / "data"
    for name in ("customers.ndjson.gz", "orders.ndjson.gz"):
        with resources.as_file(data / name) as source:
            shutil.copyfile(source, directory / "data" / name)
    return directory
