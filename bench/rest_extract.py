"""Benchmark: extracting from a paginated REST API on 127.0.0.1.

A fake API in a child process (so its work does not share this process's
GIL) answers ``--pages`` pages of ``--page-size`` order-like records. Measured
here, reading through :class:`elt.RestExtractor` exactly as a run does
(requests, JSON decoding, pagination, batching):

1. records/s with no rate limit;
2. the achieved request rate under a ``--limit`` requests/s rate limit
   (target: at least 95 % of the limit, never above it);
3. the peak RSS of this process.

Prints a table and, as its last line, one JSON object with the figures.

    python bench/rest_extract.py [--pages 2000] [--page-size 100] [--limit 50]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from elt import OffsetPaginator, RateLimit, RestExtractor  # noqa: E402
from elt.state import StreamState  # noqa: E402


def serve(pages: int, page_size: int, ready: Any, stop: Any) -> None:
    """The fake API: every page pre-serialised, so the figures measure the client."""
    import orjson

    from elt.testing import FakeApi, Reply

    total = pages * page_size
    bodies: dict[int, bytes] = {}

    def page(offset: int) -> bytes:
        if offset not in bodies:
            rows = [{"id": i, "customer_id": i % 5000, "status": "paid", "amount": f"{i % 900}.{i % 100:02d}",
                     "currency": "AUD", "created_at": f"2026-01-01T00:{i % 60:02d}:00Z",
                     "note": "Café crème x2, sans sucre, merci beaucoup", "tags": {"channel": "web", "gift": i % 7 == 0}}
                    for i in range(offset + 1, min(offset + page_size, total) + 1)]
            bodies[offset] = orjson.dumps({"data": rows, "total": total})
        return bodies[offset]

    api = FakeApi()
    api.route("/orders", lambda request: Reply(body=page(int(request.params["offset"]))))
    with api:
        ready.put(api.url)
        stop.wait()


class Orders(RestExtractor):
    name = "orders"
    path = "/orders"
    records_path = "data"
    primary_key = "id"
    base_url = "http://127.0.0.1:9"


def extract(url: str, page_size: int, limit: float | None, pages: int) -> dict[str, Any]:
    stream = Orders(base_url=url, paginator=OffsetPaginator(limit=page_size, total_path="total", max_pages=pages),
                    rate_limit=RateLimit(per_second=limit) if limit else None)
    started = time.perf_counter()
    records = 0
    for batch in stream.extract(StreamState("bench", "orders")):
        records += len(batch.records)
    seconds = time.perf_counter() - started
    return {"records": records, "requests": -(-records // page_size), "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=2000)
    parser.add_argument("--page-size", type=int, default=100)
    parser.add_argument("--limit", type=float, default=50.0, help="requests/s for the rate-limited run")
    args = parser.parse_args()

    context = multiprocessing.get_context("spawn")
    ready, stop = context.Queue(), context.Event()
    server = context.Process(target=serve, args=(args.pages, args.page_size, ready, stop), daemon=True)
    server.start()
    try:
        url = ready.get(timeout=60)
        # Warm the server's page cache so both runs measure the client alone.
        extract(url, args.page_size, None, args.pages)
        free = extract(url, args.page_size, None, args.pages)
        limited = extract(url, args.page_size, args.limit, args.pages)
    finally:
        stop.set()
        server.join(timeout=10)
        if server.is_alive():
            server.kill()

    expected = args.pages * args.page_size
    for run in (free, limited):
        if run["records"] != expected:
            raise SystemExit(f"read {run['records']} records, expected {expected}")
    # Requests are evenly spaced: n requests span n - 1 intervals.
    achieved = (limited["requests"] - 1) / limited["seconds"]
    figures = {
        "pages": args.pages,
        "page_size": args.page_size,
        "records_per_s": round(free["records"] / free["seconds"]),
        "requests_per_s_unlimited": round(free["requests"] / free["seconds"], 1),
        "limit_rps": args.limit,
        "achieved_rps": round(achieved, 2),
        "achieved_vs_limit": round(achieved / args.limit, 4),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "python": platform.python_version(),
        "cpus": multiprocessing.cpu_count(),
    }
    print(f"{'records, no rate limit':<32}{figures['records_per_s']:>12,} records/s"
          f"  ({figures['requests_per_s_unlimited']} requests/s)")
    print(f"{'requests, limit ' + format(args.limit, 'g') + '/s':<32}{figures['achieved_rps']:>12} requests/s"
          f"  ({figures['achieved_vs_limit']:.1%} of the limit)")
    print(f"{'peak RSS':<32}{figures['peak_rss_mb']:>12} MB")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
