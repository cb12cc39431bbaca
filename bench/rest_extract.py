"""Benchmark: extracting from a paginated REST API on 127.0.0.1.

A fake API in a child process (so its work does not share this process's
GIL) answers ``--pages`` pages of ``--page-size`` order-like records. Measured
here, reading through :class:`elt.RestExtractor` exactly as a run does
(requests, JSON decoding, pagination, batching):

1. records/s with no rate limit;
2. the achieved request rate under a ``--limit`` requests/s rate limit
   (target: at least 95 % of the limit, never above it);
3. records/s through a fault-injecting proxy (tests/fixtures/fault_proxy.py, in the
   server's process) with no faults, and with 20 % of requests meeting a fault of
   every kind (429, 5xx, dropped connections, cut and invalid bodies, answers
   slower than the client's timeout), every record read exactly once;
4. the peak RSS of this process.

Prints a table and, as its last line, one JSON object with the figures.

    python bench/rest_extract.py [--pages 2000] [--page-size 100] [--limit 50] [--fault-rate 0.2]
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))  # the fault proxy lives with the tests

from elt import OffsetPaginator, RateLimit, RestExtractor  # noqa: E402
from elt.state import StreamState  # noqa: E402


def serve(pages: int, page_size: int, fault_rate: float, ready: Any, stop: Any) -> None:
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

    from tests.fixtures.fault_proxy import FaultProxy

    api = FakeApi()
    api.route("/orders", lambda request: Reply(body=page(int(request.params["offset"]))))
    with api, FaultProxy(api.url, rate=0.0) as clean, FaultProxy(api.url, rate=fault_rate, seed=13, slow=0.3) as faulty:
        ready.put((api.url, clean.url, faulty.url))
        stop.wait()


class Orders(RestExtractor):
    name = "orders"
    path = "/orders"
    records_path = "data"
    primary_key = "id"
    base_url = "http://127.0.0.1:9"


def extract(url: str, page_size: int, limit: float | None, pages: int) -> dict[str, Any]:
    # Short waits: the figures measure the client's handling of faults, not a real API's backoff.
    stream = Orders(base_url=url, paginator=OffsetPaginator(limit=page_size, total_path="total", max_pages=pages),
                    rate_limit=RateLimit(per_second=limit) if limit else None, timeout=0.25, backoff=0.01,
                    max_backoff=0.05, max_retries=8)
    started = time.perf_counter()
    records, seen = 0, set()
    for batch in stream.extract(StreamState("bench", "orders")):
        records += len(batch.records)
        seen.update(r["id"] for r in batch.records)
    seconds = time.perf_counter() - started
    return {"records": records, "distinct": len(seen), "requests": -(-records // page_size), "seconds": seconds,
            "retries": sum(stream.faults.retries.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=2000)
    parser.add_argument("--page-size", type=int, default=100)
    parser.add_argument("--limit", type=float, default=50.0, help="requests/s for the rate-limited run")
    parser.add_argument("--fault-rate", type=float, default=0.2, help="share of requests meeting a fault")
    args = parser.parse_args()

    context = multiprocessing.get_context("spawn")
    ready, stop = context.Queue(), context.Event()
    server = context.Process(target=serve, args=(args.pages, args.page_size, args.fault_rate, ready, stop), daemon=True)
    server.start()
    try:
        url, clean_url, faulty_url = ready.get(timeout=60)
        # Warm the server's page cache so both runs measure the client alone.
        extract(url, args.page_size, None, args.pages)
        free = extract(url, args.page_size, None, args.pages)
        limited = extract(url, args.page_size, args.limit, args.pages)
        clean = extract(clean_url, args.page_size, None, args.pages)
        faulty = extract(faulty_url, args.page_size, None, args.pages)
    finally:
        stop.set()
        server.join(timeout=10)
        if server.is_alive():
            server.kill()

    expected = args.pages * args.page_size
    for run in (free, limited, clean, faulty):
        if run["records"] != expected or run["distinct"] != expected:
            raise SystemExit(f"read {run['records']} records ({run['distinct']} distinct), expected {expected}")
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
        "records_per_s_proxy_no_faults": round(clean["records"] / clean["seconds"]),
        "fault_rate": args.fault_rate,
        "records_per_s_with_faults": round(faulty["records"] / faulty["seconds"]),
        "retries_with_faults": faulty["retries"],
        "with_faults_vs_none": round(clean["seconds"] / faulty["seconds"], 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "python": platform.python_version(),
        "cpus": multiprocessing.cpu_count(),
    }
    print(f"{'records, no rate limit':<32}{figures['records_per_s']:>12,} records/s"
          f"  ({figures['requests_per_s_unlimited']} requests/s)")
    print(f"{'requests, limit ' + format(args.limit, 'g') + '/s':<32}{figures['achieved_rps']:>12} requests/s"
          f"  ({figures['achieved_vs_limit']:.1%} of the limit)")
    print(f"{'records, proxy, no faults':<32}{figures['records_per_s_proxy_no_faults']:>12,} records/s")
    print(f"{'records, ' + format(args.fault_rate, '.0%') + ' faults':<32}{figures['records_per_s_with_faults']:>12,}"
          f" records/s  ({faulty['retries']} retries, every record read once)")
    print(f"{'peak RSS':<32}{figures['peak_rss_mb']:>12} MB")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
