"""A load generator for webhook endpoints: many concurrent senders over keep-alive HTTP/1.1 on asyncio streams.

Used by the tests and ``bench/webhooks.py``; also handy to check a deployed
endpoint. It behaves like a real sender: 503 is retried after a short pause,
a dropped connection is reopened and the delivery sent again, and only a
2xx counts as acknowledged. Plain asyncio streams, not an HTTP client library,
so the senders cost little CPU beside the server on a small machine.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field


@dataclass
class Delivery:
    event_id: str
    body: bytes
    headers: dict[str, str]


@dataclass
class SendReport:
    """What the senders saw: the event ids acknowledged (2xx), each delivery's latency, every status."""

    acked: set[str] = field(default_factory=set)
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    failed: list[str] = field(default_factory=list)
    seconds: float = 0.0


def _request(host: str, port: int, path: str, delivery: Delivery) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(delivery.body)}"]
    lines += [f"{k}: {v}" for k, v in delivery.headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + delivery.body


async def _response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name:
            headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    if length:
        await reader.readexactly(length)
    return status, headers


async def _sender(host: str, port: int, path: str, pending: list[Delivery], report: SendReport,
                  stop: Callable[[], bool], give_up_after: float, on_ack: Callable[[int], None] | None) -> None:
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    while pending and not stop():
        delivery = pending.pop()
        first_try = time.monotonic()
        while True:
            if stop() or time.monotonic() - first_try > give_up_after:
                report.failed.append(delivery.event_id)
                break
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                assert reader is not None
                started = time.perf_counter()
                writer.write(_request(host, port, path, delivery))
                await writer.drain()
                status, headers = await _response(reader)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError):
                if writer is not None:
                    writer.close()
                reader = writer = None
                await asyncio.sleep(0.05)  # the server is restarting or gone: retry like a sender would
                continue
            report.statuses[status] += 1
            if headers.get("connection", "").lower() == "close":
                writer.close()
                reader = writer = None
            if 200 <= status < 300:
                report.acked.add(delivery.event_id)
                report.latencies.append(time.perf_counter() - started)
                if on_ack is not None:
                    on_ack(len(report.acked))
                break
            if status == 503 or status >= 500:
                await asyncio.sleep(min(float(headers.get("retry-after", "1") or 1), 0.2))
                continue
            report.failed.append(delivery.event_id)  # 4xx: a sender would not retry either
            break
    if writer is not None:
        writer.close()


async def send_all(host: str, port: int, path: str, deliveries: Sequence[Delivery], *, senders: int = 50,
                   stop: Callable[[], bool] = lambda: False, give_up_after: float = 120.0,
                   on_ack: Callable[[int], None] | None = None) -> SendReport:
    """Send ``deliveries`` from ``senders`` concurrent connections; returns what was acknowledged."""
    report = SendReport()
    queues: list[list[Delivery]] = [list(reversed(deliveries[i::senders])) for i in range(senders)]
    started = time.perf_counter()
    await asyncio.gather(*(_sender(host, port, path, q, report, stop, give_up_after, on_ack) for q in queues))
    report.seconds = time.perf_counter() - started
    return report
