"""Benchmark: webhook events accepted per second on loopback, and the time from request to row committed.

An ``elt webhooks`` server runs in a child process (its own GIL) against a
PostgreSQL (``ELT_BENCH_DATABASE_URL`` when set, else an embedded one). This
process sends ``--events`` Stripe-signed events from ``--senders`` concurrent
keep-alive connections (elt.testing.webhook_sender, plain asyncio streams).
A 2xx is sent only after the event's group commit, so each request's latency
is an upper bound of request-to-commit. Measured:

1. sustained events/s acknowledged (target: >= 2,000 on a 2-core machine);
2. p50 / p99 request-to-commit latency (target: p99 < 250 ms);
3. the rows stored (must equal the events sent: nothing lost, nothing doubled);
4. CPU milliseconds per event of the server process, the senders and PostgreSQL (its processes), and the
   ceiling they imply for this machine's cores (cores x 1000 / total ms per event). The machine is shared,
   so the wall-clock rate moves with other people's load (the 1-minute load average is printed); the CPU
   cost per event does not.

Prints a table and, as its last line, one JSON object with the figures.

    python bench/webhooks.py [--events 20000] [--senders 50]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import httpx  # noqa: E402
import orjson  # noqa: E402
import psycopg  # noqa: E402
from load_postgres import bench_server  # noqa: E402  (shared with the load benchmark)

from elt.testing.webhook_sender import Delivery, send_all  # noqa: E402
from elt.webhooks.signatures import Stripe, sign  # noqa: E402

SECRET = "whsec_bench_0123456789abcdef"


def cpu_seconds(pids: list[int]) -> float:
    import psutil

    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def database_pids(url: str) -> list[int]:
    """The PostgreSQL server's processes (postmaster and its children), when it runs on this machine."""
    import psutil

    with psycopg.connect(url) as conn:  # asked while this backend lives: its parent is the postmaster
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        try:
            postmaster = psutil.Process(backend).parent()
        except psutil.Error:
            return []
        if postmaster is None:
            return []
        return [postmaster.pid, *(c.pid for c in postmaster.children(recursive=True) if c.pid != backend)]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def events(count: int, prefix: str) -> list[Delivery]:
    style = Stripe()
    out = []
    for n in range(count):
        body = orjson.dumps({"id": f"{prefix}_{n}", "object": "event", "type": "invoice.paid", "created": 1764500000 + n,
                             "data": {"object": {"id": f"in_{n}", "amount_paid": n * 7 % 10_000, "currency": "aud",
                                                 "customer": f"cus_{n % 5000}", "status": "paid"}}})
        out.append(Delivery(f"{prefix}_{n}", body, {"Content-Type": "application/json", **sign(style, body, SECRET)}))
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--senders", type=int, default=50)
    args = parser.parse_args()
    with bench_server("elt-bench-webhooks-") as (url, tmp):
        project = tmp / "project"
        project.mkdir()
        (project / "pipelines.py").write_text(
            "from elt import WebhookSource, from_env\n"
            "WebhookSource('stripe', '/hooks/stripe', secret=from_env('STRIPE_WEBHOOK_SECRET'), signature='stripe')\n")
        (project / ".env").write_text(f"ELT_DATABASE_URL={url}\nSTRIPE_WEBHOOK_SECRET={SECRET}\n")
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k != "ELT_DATABASE_URL"}
        child = subprocess.Popen([sys.executable, "-m", "elt", "--project", str(project), "webhooks", "--port", str(port)],
                                 cwd=project, env=env, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).json()["database"] == "up":
                        break
                except (httpx.HTTPError, ValueError, KeyError):
                    pass
                time.sleep(0.1)
            warm = asyncio.run(send_all("127.0.0.1", port, "/hooks/stripe", events(2_000, "warm"), senders=args.senders))
            burst = events(args.events, "evt")
            db_pids = database_pids(url)
            before = (cpu_seconds([child.pid]), cpu_seconds(db_pids), time.process_time())
            report = asyncio.run(send_all("127.0.0.1", port, "/hooks/stripe", burst, senders=args.senders))
            after = (cpu_seconds([child.pid]), cpu_seconds(db_pids), time.process_time())
        finally:
            child.terminate()
            child.wait(timeout=60)
        with psycopg.connect(url) as conn:
            stored = conn.execute("SELECT count(*) FROM raw.stripe_events WHERE event_id LIKE 'evt\\_%'").fetchone()[0]
            version = conn.execute("SHOW server_version").fetchone()[0]
    latencies_ms = [x * 1000 for x in report.latencies]
    per_event = [round((b - a) * 1000 / args.events, 3) for a, b in zip(before, after, strict=True)]
    cores = os.cpu_count() or 1
    figures = {
        "bench": "webhooks",
        "events": args.events,
        "senders": args.senders,
        "acknowledged": len(report.acked),
        "stored": int(stored),
        "failed": len(report.failed),
        "seconds": round(report.seconds, 2),
        "events_per_s": round(len(report.acked) / report.seconds, 1),
        "p50_ms": round(statistics.median(latencies_ms), 1),
        "p99_ms": round(percentile(latencies_ms, 0.99), 1),
        "max_ms": round(max(latencies_ms), 1),
        "warmup_events": len(warm.acked),
        "cpu_ms_per_event": {"server": per_event[0], "database": per_event[1], "senders": per_event[2]},
        "cpu_ceiling_events_per_s": round(cores * 1000 / sum(per_event)) if sum(per_event) else None,
        "load_average_1m": round(os.getloadavg()[0], 2),
        "statuses": {str(k): v for k, v in sorted(report.statuses.items())},
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "server": f"PostgreSQL {version}",
        "targets": {"events_per_s": 2000, "p99_ms": 250},
    }
    print(f"{'events/s':>12} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'stored':>8} {'failed':>7}"
          f" {'cpu ms/event (server, db, senders)':>36} {'cpu ceiling':>12}")
    print(f"{figures['events_per_s']:>12,.0f} {figures['p50_ms']:>8} {figures['p99_ms']:>8} {figures['max_ms']:>8}"
          f" {figures['stored']:>8,} {figures['failed']:>7} {str(tuple(per_event)):>36}"
          f" {figures['cpu_ceiling_events_per_s'] or 0:>12,}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
