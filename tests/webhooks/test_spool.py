"""The local spool: events acknowledged while the database is away are kept on disk and stored later, in order."""

from __future__ import annotations

import datetime as dt
import hashlib
import time
from pathlib import Path

import httpx
import orjson
import psycopg

from elt.loaders.postgres.webhooks import StoredEvent
from elt.webhooks.source import WebhookSource
from elt.webhooks.spool import Spool
from tests.fixtures.webhooks import free_port, running_server, signed

SECRET = "whsec_spool_0123456789"


def _event(n: int) -> StoredEvent:
    body = orjson.dumps({"id": f"evt_{n}", "n": n}).decode()
    return StoredEvent("stripe", "stripe_events", f"evt_{n}", body, {"content-type": "application/json"},
                       dt.datetime.now(dt.UTC), hashlib.sha256(body.encode()).hexdigest())


def test_a_spool_left_by_a_killed_server_is_stored_in_order_at_the_next_start(tmp_path: Path, database_url: str) -> None:
    folder = tmp_path / "spool"
    spool = Spool(folder)
    spool.append([_event(n) for n in range(3)])
    spool.append([_event(n) for n in range(3, 5)])
    spool.close()
    with (folder / "000000000002.jsonl").open("ab") as f:
        f.write(orjson.dumps({"source": "stripe", "id": "evt_torn"})[:20])  # a write cut short by the kill: never acked
    source = WebhookSource("stripe", "/hooks/stripe", secret=SECRET, signature="stripe")
    with running_server(tmp_path, [source], database_url, spool_dir=folder) as (base, _):
        deadline = time.monotonic() + 30
        while httpx.get(f"{base}/healthz").json()["spool_bytes"] and time.monotonic() < deadline:
            time.sleep(0.1)
    with psycopg.connect(database_url) as conn:
        ids = [r[0] for r in conn.execute("SELECT event_id FROM raw.stripe_events ORDER BY _row_seq")]
    assert ids == [f"evt_{n}" for n in range(5)]
    assert not list(folder.glob("*.jsonl"))


def test_past_the_spool_limit_senders_get_503_with_retry_after_and_nothing_acknowledged_is_lost(tmp_path: Path) -> None:
    # Nothing listens on this port: the database is unreachable for the whole test.
    unreachable = f"postgresql://elt@127.0.0.1:{free_port()}/elt?connect_timeout=1"
    source = WebhookSource("stripe", "/hooks/stripe", secret=SECRET, signature="stripe")
    folder = tmp_path / "spool"
    acked: list[str] = []
    with running_server(tmp_path, [source], unreachable, database=False, spool_dir=folder, spool_limit=2_000) as (base, _):
        for n in range(100):
            body = orjson.dumps({"id": f"evt_{n}", "pad": "x" * 100})
            answer = httpx.post(f"{base}/hooks/stripe", content=body, headers=signed(source, body))
            if answer.status_code == 503:
                break
            assert answer.status_code == 200 and answer.json()["status"] == "spooled"
            acked.append(f"evt_{n}")
        assert answer.status_code == 503
        assert answer.headers["retry-after"] == "30" and "spool" in answer.json()["error"]
        health = httpx.get(f"{base}/healthz")
        assert health.status_code == 503 and health.json()["status"] == "unavailable"
    assert 5 <= len(acked) < 100
    spooled = [e.event_id for path in Spool(folder).segments() for e in Spool.read(path)]
    assert spooled == acked


def test_rejected_events_beside_the_spool_are_not_taken_for_segments(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append_rejected(_event(1), "the database refused it")
    spool.append([_event(2)])
    spool.close()
    assert [p.name for p in Spool(tmp_path).segments()] == ["000000000001.jsonl"]
    assert [e.event_id for e in Spool.read(tmp_path / "000000000001.jsonl")] == ["evt_2"]
    assert orjson.loads((tmp_path / "rejected.jsonl").read_bytes())["reason"] == "the database refused it"
