"""Benchmark: a 2,000,000-row PostgreSQL source table into PostgreSQL with ``upsert``.

Measured against one server (the source is a second database on it):

1. the full load through ``SqlExtractor`` (keyset pages, server-side cursor):
   rows/s and the peak RSS of the loading process (target: under 300 MB);
2. an incremental run after 1 % of the rows changed (target: under 5 % of the
   full run's time);
3. the cost of one 500-row keyset page as its offset into the table grows, with
   the row-value predicate SqlExtractor sends (flat: an index range) and the
   spelled-out ``a > x OR (a = x AND b > y)`` form for comparison (grows with
   the offset: every page rescans the rows before it).

Each load runs in a child process, so its peak RSS is its own. Prints a table
and, as its last line, one JSON object with the figures.

    python bench/sql_extract.py [--rows 2000000]

The server is ``ELT_BENCH_DATABASE_URL`` when set, else an embedded
PostgreSQL in a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_postgres import bench_server, run_child, timed_run  # noqa: E402  (shared with the load benchmark)


def child(url: str, source: str) -> dict[str, Any]:
    from elt import Cursor, Pipeline, SqlExtractor

    class Orders(SqlExtractor):
        name = "orders"
        table = "public.orders"
        primary_key = "id"
        cursor = Cursor("updated_at")
        write_strategy = "upsert"

    return timed_run(Pipeline("bench_sql", streams=[Orders(url=source)], transforms=False), url)


def page_costs(source: str, n: int, page: int = 500, repeats: int = 5) -> dict[str, dict[str, float]]:
    """Milliseconds per keyset page at several offsets, row-value form against the OR form."""
    import time

    import sqlalchemy as sa

    from elt import Cursor, SqlExtractor

    class Orders(SqlExtractor):
        name = "orders"
        table = "public.orders"
        primary_key = "id"
        cursor = Cursor("updated_at")
        page_size = page

    extractor = Orders(url=source)
    order = extractor.order_columns()
    engine = extractor.engine()
    costs: dict[str, dict[str, float]] = {"row_value": {}, "or_form": {}}
    try:
        with engine.connect() as conn:
            for fraction in (0.0, 0.1, 0.5, 0.9):
                offset = int(n * fraction)
                boundary = conn.execute(sa.text(
                    "SELECT updated_at, id FROM orders ORDER BY updated_at, id OFFSET :o LIMIT 1"), {"o": offset}).one()
                for form, row_values in (("row_value", True), ("or_form", False)):
                    statement = extractor._page(order, None, tuple(boundary), row_values)
                    best = float("inf")
                    for _ in range(repeats):
                        started = time.perf_counter()
                        rows = conn.execute(statement).fetchall()
                        best = min(best, time.perf_counter() - started)
                    assert len(rows) == min(page, n - offset - 1), (form, offset, len(rows))
                    costs[form][str(offset)] = round(best * 1000, 2)
    finally:
        engine.dispose()
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--child", nargs=2)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return

    import psycopg

    with bench_server("elt-bench-sql-") as (url, _):
        with psycopg.connect(url, autocommit=True) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]
            for schema in ("raw", "pipeline", "stg"):
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            conn.execute("DROP DATABASE IF EXISTS bench_source")
            conn.execute("CREATE DATABASE bench_source")
        source = url.replace("/postgres?", "/bench_source?") if "/postgres?" in url else url.rsplit("/", 1)[0] + "/bench_source"
        n = args.rows
        with psycopg.connect(source, autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE orders (id bigint PRIMARY KEY, customer_id int, status text, amount numeric(12, 2),"
                " currency text, note text, created_at timestamptz, updated_at timestamptz)")
            conn.execute(
                "INSERT INTO orders SELECT i, i %% 50000, (ARRAY['paid','shipped','delivered','refunded'])[1 + i %% 4],"
                " (i %% 90000) / 100.0, 'AUD', 'Café crème x2, sans sucre, merci beaucoup',"
                " timestamptz '2026-01-01' + i * interval '1 second', timestamptz '2026-01-01' + i * interval '1 second'"
                " FROM generate_series(1, %s) i", [n])
            # What a real source has for an incremental extractor: an index on (updated_at, id).
            conn.execute("CREATE INDEX ON orders (updated_at, id)")
            conn.execute("ANALYZE orders")

        pages = page_costs(source, n)
        full = run_child(url, source, script=__file__)
        assert full["rows"] == n and full["inserted"] == n, full
        changed = n // 100
        with psycopg.connect(source, autocommit=True) as conn:
            conn.execute("UPDATE orders SET status = 'refunded', updated_at = now() WHERE id % 100 = 7")
        incremental = run_child(url, source, script=__file__)
        # The row at the old watermark is read again (inclusive bound), unchanged.
        assert incremental["updated"] == changed, incremental

        figures = {
            "rows": n,
            "full_rows_per_s": round(n / full["seconds"]),
            "full_seconds": round(full["seconds"], 2),
            "incremental_changed_rows": changed,
            "incremental_seconds": round(incremental["seconds"], 2),
            "incremental_vs_full": round(incremental["seconds"] / full["seconds"], 4),
            "peak_rss_mb": round(max(full["peak_rss_mb"], incremental["peak_rss_mb"]), 1),
            "page_ms_by_offset": pages["row_value"],
            "or_form_page_ms_by_offset": pages["or_form"],
            "postgres": version,
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        }
        print(f"{'full load (upsert)':<34}{figures['full_seconds']:>9} s {figures['full_rows_per_s']:>12,} rows/s")
        print(f"{'incremental, 1% changed':<34}{figures['incremental_seconds']:>9} s"
              f"   ({figures['incremental_vs_full']:.1%} of the full run)")
        print(f"{'peak RSS (loading process)':<34}{figures['peak_rss_mb']:>9} MB")
        for offset, ms in pages["row_value"].items():
            print(f"{'500-row page at offset ' + format(int(offset), ','):<34}{ms:>9} ms"
                  f"   (OR form: {pages['or_form'][offset]} ms)")
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
