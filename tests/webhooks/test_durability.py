"""None is ever lost: a burst with the database stopped part-way, and SIGKILL of the server during a burst."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from elt.testing.webhook_sender import send_all
from elt.webhooks.source import WebhookSource
from tests.fixtures.webhooks import OwnPostgres, deliveries, free_port, running_server, wait_healthy

SECRET = "whsec_burst_0123456789"


@pytest.fixture
def own_postgres() -> Iterator[OwnPostgres]:
    server = OwnPostgres()
    try:
        yield server
    finally:
        server.close()


def _stored(url: str, table: str) -> tuple[int, int]:
    with psycopg.connect(url) as conn:
        row = conn.execute(f"SELECT count(*), count(DISTINCT event_id) FROM raw.{table}").fetchone()
        assert row is not None
        return int(row[0]), int(row[1])


@pytest.mark.slow
def test_burst_of_10000_with_the_database_stopped_part_way_loses_none(tmp_path: Path, own_postgres: OwnPostgres) -> None:
    source = WebhookSource("stripe", "/hooks/stripe", secret=SECRET, signature="stripe")
    burst = deliveries(source, 10_000)
    burst += burst[:500]  # senders' retries of events already delivered: acknowledged, stored once
    acked = [0]
    outage: dict[str, float] = {}

    def control() -> None:
        # Stop the database once 2,000 events are acknowledged; start it again once 3,000 more are (all spooled).
        deadline = time.monotonic() + 300
        while acked[0] < 2_000 and time.monotonic() < deadline:
            time.sleep(0.01)
        own_postgres.stop()
        outage["stopped_at"] = acked[0]
        while acked[0] < 5_000 and time.monotonic() < deadline:
            time.sleep(0.01)
        own_postgres.start()
        outage["started_at"] = acked[0]

    with running_server(tmp_path, [source], own_postgres.url, spool_dir=tmp_path / "spool") as (base, server):
        controller = threading.Thread(target=control)
        controller.start()
        report = asyncio.run(send_all("127.0.0.1", server.port, source.path, burst, senders=50,
                                      on_ack=lambda n: acked.__setitem__(0, n)))
        controller.join(timeout=300)
        assert not report.failed, f"{len(report.failed)} deliveries never acknowledged"
        assert len(report.acked) == 10_000
        assert outage["stopped_at"] >= 2_000 and outage["started_at"] >= 5_000
        # While the database was down the events were spooled; the spool drains once it is back.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            health = httpx.get(f"{base}/healthz").json()
            if health["spool_bytes"] == 0 and health["database"] == "up":
                break
            time.sleep(0.2)
        assert health["spool_bytes"] == 0, health
    assert _stored(own_postgres.url, "stripe_events") == (10_000, 10_000)
    assert list((tmp_path / "spool").glob("*.jsonl")) == []
    with psycopg.connect(own_postgres.url) as conn:
        row = conn.execute("SELECT events, duplicates FROM pipeline.webhook_sources WHERE source = 'stripe'").fetchone()
    assert row is not None and row[0] == 10_000 and row[1] >= 500


def _project(folder: Path, database_url: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "pipelines.py").write_text(
        "from elt import WebhookSource, from_env\n"
        "WebhookSource('stripe', '/hooks/stripe', secret=from_env('STRIPE_WEBHOOK_SECRET'), signature='stripe')\n")
    (folder / ".env").write_text(f"ELT_DATABASE_URL={database_url}\nSTRIPE_WEBHOOK_SECRET={SECRET}\n")
    return folder


def _elt_webhooks(project: Path, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "ELT_DATABASE_URL"}
    return subprocess.Popen([sys.executable, "-m", "elt", "--project", str(project), "webhooks", "--port", str(port)],
                            cwd=project, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


@pytest.mark.slow
def test_sigkill_during_a_burst_loses_no_acknowledged_event(tmp_path: Path, database_url: str) -> None:
    project = _project(tmp_path / "project", database_url)
    source = WebhookSource("stripe", "/hooks/stripe", secret=SECRET, signature="stripe")
    port = free_port()
    child = _elt_webhooks(project, port)
    killed = threading.Event()
    try:
        wait_healthy(f"http://127.0.0.1:{port}")

        def kill_when(n: int) -> None:
            if n >= 1_500 and not killed.is_set():
                killed.set()
                child.send_signal(signal.SIGKILL)

        report = asyncio.run(send_all("127.0.0.1", port, source.path, deliveries(source, 5_000), senders=50,
                                      on_ack=kill_when, stop=killed.is_set))
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=30)
    assert killed.is_set() and child.returncode == -signal.SIGKILL
    assert len(report.acked) >= 1_500
    with psycopg.connect(database_url) as conn:
        stored = {r[0] for r in conn.execute("SELECT event_id FROM raw.stripe_events")}
    assert report.acked <= stored, f"{len(report.acked - stored)} acknowledged events are not stored"


@pytest.mark.slow
def test_sigterm_drains_the_queue_and_exits(tmp_path: Path, database_url: str) -> None:
    project = _project(tmp_path / "project", database_url)
    source = WebhookSource("stripe", "/hooks/stripe", secret=SECRET, signature="stripe")
    port = free_port()
    child = _elt_webhooks(project, port)
    try:
        wait_healthy(f"http://127.0.0.1:{port}")
        termed = threading.Event()

        def term_when(n: int) -> None:
            if n >= 500 and not termed.is_set():
                termed.set()
                child.send_signal(signal.SIGTERM)

        report = asyncio.run(send_all("127.0.0.1", port, source.path, deliveries(source, 2_000), senders=20,
                                      on_ack=term_when, stop=lambda: termed.is_set() and child.poll() is not None))
        code = child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)
    assert code == 0, child.stderr.read().decode() if child.stderr else ""
    with psycopg.connect(database_url) as conn:
        stored = {r[0] for r in conn.execute("SELECT event_id FROM raw.stripe_events")}
    assert len(report.acked) >= 500 and report.acked <= stored
