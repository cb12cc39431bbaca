"""Benchmark: what an incremental model run with nothing new costs, against a full refresh.

A source of N orders (index on ``updated_at``) and two incremental models over it:

1. ``direct``: ``SELECT ... FROM src.orders WHERE status <> 'cancelled'``: the window
   filter is pushed into the scan (index range on the newest rows);
2. ``dedup``: the same over a ``DISTINCT ON (id) ... ORDER BY id, updated_at DESC``
   view, where PostgreSQL cannot push the filter below the DISTINCT ON (the whole
   view is evaluated: the documented limit).

Figures: seconds for a full refresh, for a no-op incremental run (nothing new), and
for an incremental run after 1% of the rows changed. Prints a table and, as its
last line, one JSON object.

    python bench/incremental_noop.py [--rows 200000]

The server is ``ELT_BENCH_DATABASE_URL`` when set, else an embedded PostgreSQL.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_postgres import bench_server  # noqa: E402  (shared with the load benchmark)

from elt.loaders.postgres import PostgresLoader  # noqa: E402
from elt.transforms import Builder  # noqa: E402
from elt.transforms.graph import Graph  # noqa: E402
from elt.transforms.models import discover  # noqa: E402

MODELS = {
    "direct": """-- materialized: incremental
-- unique_key: id
-- watermark: updated_at
-- lookback: 1h
SELECT id, customer_id, status, amount, updated_at FROM src.orders WHERE status <> 'cancelled'
""",
    "dedup": """-- materialized: incremental
-- unique_key: id
-- watermark: updated_at
-- lookback: 1h
SELECT id, customer_id, status, amount, updated_at FROM src.latest_orders WHERE status <> 'cancelled'
""",
}


def timed(builder: Builder, model: str) -> float:
    started = time.perf_counter()
    result = builder.run([model]).models[model]
    assert result.status == "success", result.error
    return round(time.perf_counter() - started, 3)


def bench(url: str, tmp: Path, rows: int) -> dict[str, dict[str, float]]:
    PostgresLoader(url).store.migrate()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS src CASCADE; DROP SCHEMA IF EXISTS mart CASCADE; CREATE SCHEMA src")
        conn.execute("CREATE TABLE src.orders AS SELECT g AS id, g % 997 AS customer_id, 'paid'::text AS status,"
                     " (g % 10000) / 100.0 AS amount, timestamptz '2026-01-01' + g * interval '1 minute' AS updated_at"
                     f" FROM generate_series(1, {int(rows)}) AS g")
        conn.execute("ALTER TABLE src.orders ADD PRIMARY KEY (id)")
        conn.execute("CREATE INDEX ON src.orders (updated_at)")
        conn.execute("CREATE VIEW src.latest_orders AS SELECT DISTINCT ON (id) * FROM src.orders ORDER BY id, updated_at DESC")
        conn.execute("ANALYZE src.orders")
    for name, text in MODELS.items():
        path = tmp / "sql" / "mart" / f"{name}.sql"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    graph = Graph.build(discover(tmp), external={"src.orders", "src.latest_orders"})
    figures: dict[str, dict[str, float]] = {}
    for name in MODELS:
        model = f"mart.{name}"
        full = min(timed(Builder(url, graph, threads=1, full_refresh=True), model) for _ in range(3))
        incremental = Builder(url, graph, threads=1)
        noop = min(timed(incremental, model) for _ in range(3))
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("UPDATE src.orders SET amount = amount + 1, updated_at = updated_at + interval '1 year'"
                         f" WHERE id % 100 = 0 AND id <= {int(rows)}")
        changed = timed(incremental, model)
        figures[name] = {"full_refresh_s": full, "noop_s": noop, "one_percent_changed_s": changed}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    args = parser.parse_args()
    with bench_server("elt-bench-incremental-") as (url, tmp):
        figures = bench(url, tmp, args.rows)
    print(f"{'model':>8}  {'full refresh s':>14}  {'no-op run s':>11}  {'1% changed s':>12}")
    for name, f in figures.items():
        print(f"{name:>8}  {f['full_refresh_s']:>14}  {f['noop_s']:>11}  {f['one_percent_changed_s']:>12}")
    print(json.dumps({"bench": "incremental_noop", "rows": args.rows, "results": figures}))


if __name__ == "__main__":
    main()
