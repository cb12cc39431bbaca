"""Benchmark: loading 1,000,000 order-like records into BigQuery (the local emulator).

The emulator (local-bigquery, DuckDB underneath, started as the tests start
it, on 127.0.0.1) is not BigQuery: its figures say nothing about BigQuery's
own speed. What they show is whether elt's side is the bottleneck: the CPU
time elt's own process spends per million rows (building NDJSON, sending
load jobs and scripts, waiting excluded) is printed apart from the wall time.

1. ``append``: 1M new records;
2. ``upsert``: the same 1M into an empty table, then a second million of
   which half update existing ids (the figure reported is the second load).

Each load runs in a child process, so its peak RSS and CPU time are its own.
Prints a table and, as its last line, one JSON object.

    python bench/load_bigquery.py [--rows 1000000] [--batch-size 50000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from load_postgres import orders, run_child, second_batch  # noqa: E402 - the same records as the PostgreSQL bench


def child(endpoint: str, prefix: str, strategy: str, which: str, rows: int, batch_size: int) -> dict[str, Any]:
    from elt import Pipeline, extractor
    from elt.loaders.bigquery import BigQueryLoader, BigQuerySettings
    from elt.progress import LogProgress
    from elt.runner import Runner

    source = (lambda: orders(rows)) if which == "first" else (lambda: second_batch(rows))
    stream = extractor(lambda: source(), name="orders", primary_key="id", write_strategy=strategy, batch_size=batch_size)
    loader = BigQueryLoader(BigQuerySettings(project="test", dataset_prefix=prefix, endpoint=endpoint))
    cpu = time.process_time()
    started = time.perf_counter()
    result = Runner(Pipeline(f"bench_{strategy}", streams=[stream]), loader=loader,
                    progress=LogProgress(interval=3600)).run()
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu
    loader.close()
    assert result.status == "success", result.summary.error_message
    f = result.streams["orders"]
    return {"seconds": seconds, "cpu_seconds": cpu, "rows": f.extracted, "inserted": f.inserted, "updated": f.updated,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=50_000)
    parser.add_argument("--child", nargs="*")
    args = parser.parse_args()
    if args.child:
        endpoint, prefix, strategy, which = args.child
        print(json.dumps(child(endpoint, prefix, strategy, which, args.rows, args.batch_size)))
        return

    from tests.fixtures.bigquery import start

    emulator = start()
    try:
        prefix = f"bench{uuid.uuid4().hex[:6]}_"
        sizes = [f"--rows={args.rows}", f"--batch-size={args.batch_size}"]
        append = run_child(emulator.endpoint, prefix, "append", "first", *sizes, script=__file__)
        upsert_first = run_child(emulator.endpoint, prefix, "upsert", "first", *sizes, script=__file__)
        upsert = run_child(emulator.endpoint, prefix, "upsert", "second", *sizes, script=__file__)
    finally:
        emulator.stop()

    def figures(r: dict[str, Any]) -> dict[str, Any]:
        per_million = 1_000_000 / max(r["rows"], 1)
        return {"rows": r["rows"], "rows_per_s": round(r["rows"] / r["seconds"]), "seconds": round(r["seconds"], 1),
                "elt_cpu_s_per_million": round(r["cpu_seconds"] * per_million, 1),
                "wall_s_per_million": round(r["seconds"] * per_million, 1),
                "elt_cpu_share": round(r["cpu_seconds"] / r["seconds"], 3), "peak_rss_mb": round(r["peak_rss_mb"])}

    results = {"append": figures(append), "upsert_first": figures(upsert_first), "upsert": figures(upsert)}
    print(f"{'load':<14}{'rows':>10}{'rows/s':>9}{'wall s/M':>10}{'elt CPU s/M':>13}{'CPU share':>11}{'peak RSS MB':>13}")
    for name, r in results.items():
        print(f"{name:<14}{r['rows']:>10,}{r['rows_per_s']:>9,}{r['wall_s_per_million']:>10}"
              f"{r['elt_cpu_s_per_million']:>13}{r['elt_cpu_share']:>11.1%}{r['peak_rss_mb']:>13}")
    print("emulator figures (local-bigquery on DuckDB), not BigQuery's; elt CPU = time spent in elt's own process")
    print(json.dumps({"benchmark": "load_bigquery", "rows": args.rows, "batch_size": args.batch_size,
                      "machine": platform.machine(), "cpus": os.cpu_count(), **results}))


if __name__ == "__main__":
    main()
