"""Benchmark: how long readers of a table model wait while it is rebuilt, by swap mode and table size.

A reader polls ``SELECT id FROM mart.big LIMIT 1`` (about 0.1 ms) in a loop while the
model is rebuilt; the figure is the longest single read during the rebuild, which is
the time the reader was blocked. Compared:

1. ``swap: rename`` (the default): build beside, then a short locked rename;
2. ``swap: delete_insert``: DELETE + INSERT in one transaction (MVCC-safe; readers
   are not blocked at all, they read the old rows until COMMIT);
3. reference: ``TRUNCATE`` + ``INSERT`` in one transaction (how a ``replace`` stream
   wrote before the swap), which holds ACCESS EXCLUSIVE for the whole copy.

Prints a table and, as its last line, one JSON object with the figures.

    python bench/swap_lock.py [--rows 200000 --rows 20000]

The server is ``ELT_BENCH_DATABASE_URL`` when set, else an embedded PostgreSQL.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from load_postgres import bench_server  # noqa: E402  (shared with the load benchmark)

from elt.transforms import Builder  # noqa: E402
from elt.transforms.graph import Graph  # noqa: E402
from elt.transforms.models import discover  # noqa: E402

MODEL = """-- materialized: table
-- unique_key: id
-- swap: {mode}
SELECT id, customer_id, status, amount, note FROM raw.big
"""


def longest_read_during(url: str, action) -> float:
    """Run ``action`` while a reader polls; return the longest read in seconds."""
    stop = threading.Event()
    longest = [0.0]

    def reader() -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            for _ in range(1_000_000):  # bounded; stops long before
                if stop.is_set():
                    return
                started = time.perf_counter()
                conn.execute("SELECT id FROM mart.big LIMIT 1").fetchone()
                longest[0] = max(longest[0], time.perf_counter() - started)
                time.sleep(0.001)

    thread = threading.Thread(target=reader)
    thread.start()
    time.sleep(0.05)
    try:
        action()
    finally:
        stop.set()
        thread.join(timeout=60)
    return longest[0]


def bench(url: str, tmp: Path, rows: int) -> dict[str, float]:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS raw CASCADE; DROP SCHEMA IF EXISTS mart CASCADE; CREATE SCHEMA raw")
        conn.execute("CREATE TABLE raw.big AS SELECT g AS id, g % 997 AS customer_id, (ARRAY['paid', 'refunded'])[1 + g % 2]"
                     " AS status, (g % 10000) / 100.0 AS amount, repeat('x', 40) AS note"
                     f" FROM generate_series(1, {int(rows)}) AS g")
    figures: dict[str, float] = {}
    for mode in ("rename", "delete_insert"):
        model = tmp / "sql" / "mart" / "big.sql"
        model.parent.mkdir(parents=True, exist_ok=True)
        model.write_text(MODEL.format(mode=mode), encoding="utf-8")
        graph = Graph.build(discover(tmp), external=set(), sources={"raw.big"})
        builder = Builder(url, graph, threads=1)
        builder.run(["mart.big"])  # the live table the reader reads

        def rebuild(builder: Builder = builder, mode: str = mode) -> None:
            started = time.perf_counter()
            result = builder.run(["mart.big"]).models["mart.big"]
            assert result.status == "success", result.error
            figures[f"{mode}_build_s"] = round(time.perf_counter() - started, 3)

        figures[f"{mode}_reader_blocked_ms"] = round(longest_read_during(url, rebuild) * 1000, 1)

    def truncate_insert() -> None:
        with psycopg.connect(url) as conn:
            conn.execute("TRUNCATE mart.big")
            conn.execute("INSERT INTO mart.big SELECT id, customer_id, status, amount, note FROM raw.big")

    figures["truncate_insert_reader_blocked_ms"] = round(longest_read_during(url, truncate_insert) * 1000, 1)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, action="append")
    args = parser.parse_args()
    results = {}
    with bench_server("elt-bench-swap-") as (url, tmp):
        for rows in args.rows or [20_000, 200_000]:
            results[rows] = bench(url, tmp, rows)
    print(f"{'rows':>8}  {'rename: blocked ms':>18}  {'delete+insert: blocked ms':>25}  {'truncate+insert: blocked ms':>27}")
    for rows, f in results.items():
        print(f"{rows:>8}  {f['rename_reader_blocked_ms']:>18}  {f['delete_insert_reader_blocked_ms']:>25}"
              f"  {f['truncate_insert_reader_blocked_ms']:>27}")
    print(json.dumps({"bench": "swap_lock", "results": {str(k): v for k, v in results.items()}}))


if __name__ == "__main__":
    main()
