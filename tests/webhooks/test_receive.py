"""Receiving webhooks on a real server on 127.0.0.1 into a real PostgreSQL: signatures, refusals, duplicates."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import pytest

from elt.webhooks.signatures import GitHub, HeaderHmac, Shopify, Stripe, sign
from elt.webhooks.source import WebhookSource
from tests.fixtures.webhooks import running_server, signed

SECRET = "whsec_test_0123456789"


def _sources() -> list[WebhookSource]:
    return [
        WebhookSource("stripe", "/hooks/stripe", secret=SECRET, signature="stripe"),
        WebhookSource("github", "/hooks/github", secret=SECRET, signature="github"),
        WebhookSource("shopify", "/hooks/shopify", secret=SECRET, signature="shopify"),
        WebhookSource("crm", "/hooks/crm", secret=SECRET, signature=HeaderHmac(header="X-Crm-Signature"),
                      max_bytes=2_000),
    ]


def _rows(url: str, table: str) -> list[dict[str, Any]]:
    with psycopg.connect(url) as conn:
        cur = conn.execute(f"SELECT event_id, _raw_payload, _headers, _received_at FROM raw.{table} ORDER BY _row_seq")
        return [dict(zip([d.name for d in cur.description], r, strict=True)) for r in cur.fetchall()]


def _counters(url: str, source: str) -> dict[str, Any]:
    with psycopg.connect(url) as conn:
        cur = conn.execute("SELECT * FROM pipeline.webhook_sources WHERE source = %s", (source,))
        row = cur.fetchone()
        assert row is not None
        return dict(zip([d.name for d in cur.description], row, strict=True))


@pytest.fixture
def served(tmp_path: Path, database_url: str) -> Any:
    sources = _sources()
    with running_server(tmp_path, sources, database_url) as (base, server):
        yield base, {s.name: s for s in sources}, server


@pytest.mark.parametrize("name", ["stripe", "github", "shopify", "crm"])
def test_a_valid_signature_is_stored_before_the_200(served: Any, database_url: str, name: str) -> None:
    base, sources, _ = served
    source = sources[name]
    body = orjson.dumps({"id": f"evt_{name}_1", "type": "thing.created", "data": {"n": 1}})
    extra = {"X-GitHub-Delivery": "delivery-1", "X-GitHub-Event": "push"} if name == "github" else {}
    if name == "shopify":
        extra = {"X-Shopify-Webhook-Id": "shop-hook-1", "X-Shopify-Topic": "orders/create"}
    response = httpx.post(f"{base}{source.path}", content=body, headers=signed(source, body, **extra))
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "stored"
    # The 200 came after the commit: the row is there at once, read over another connection.
    rows = _rows(database_url, source.table)
    expected_id = {"github": "delivery-1", "shopify": "shop-hook-1"}.get(name, f"evt_{name}_1")
    assert [r["event_id"] for r in rows] == [expected_id]
    assert rows[0]["_raw_payload"] == orjson.loads(body)
    assert rows[0]["_headers"]["content-type"] == "application/json"
    assert source.style is not None and source.style.header.lower() not in rows[0]["_headers"]
    if name == "github":
        assert rows[0]["_headers"]["x-github-event"] == "push"
    assert _counters(database_url, name)["events"] == 1


@pytest.mark.parametrize("name", ["stripe", "github", "shopify", "crm"])
def test_a_wrong_or_missing_signature_gets_401_is_counted_and_never_stored(served: Any, database_url: str,
                                                                           name: str) -> None:
    base, sources, _ = served
    source = sources[name]
    body = orjson.dumps({"id": "evt_forged"})
    forged = {"content-type": "application/json", **sign(source.style, body, "not-the-secret")}
    tampered = signed(source, body)
    assert httpx.post(f"{base}{source.path}", content=body, headers=forged).status_code == 401
    assert httpx.post(f"{base}{source.path}", content=body + b" ", headers=tampered).status_code == 401
    missing = httpx.post(f"{base}{source.path}", content=body, headers={"content-type": "application/json"})
    assert missing.status_code == 401
    assert "missing signature header" in missing.json()["error"]
    assert _rows(database_url, source.table) == []
    deadline = time.monotonic() + 5
    while _counters(database_url, name)["rejected_signature"] < 3 and time.monotonic() < deadline:
        time.sleep(0.1)  # refusals are counted with the writer's next commit
    assert _counters(database_url, name)["rejected_signature"] == 3


def test_a_stripe_request_replayed_after_the_tolerance_gets_401(served: Any, database_url: str) -> None:
    base, sources, _ = served
    source = sources["stripe"]
    body = orjson.dumps({"id": "evt_old"})
    old = {"content-type": "application/json", **sign(Stripe(), body, SECRET, timestamp=int(time.time()) - 3600)}
    response = httpx.post(f"{base}/hooks/stripe", content=body, headers=old)
    assert response.status_code == 401
    assert "tolerance" in response.json()["error"]
    assert _rows(database_url, source.table) == []


def test_duplicate_deliveries_are_acknowledged_and_stored_once(served: Any, database_url: str) -> None:
    base, sources, _ = served
    source = sources["stripe"]
    body = orjson.dumps({"id": "evt_dup", "amount": 5})
    answers = [httpx.post(f"{base}/hooks/stripe", content=body, headers=signed(source, body)) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert [a.json()["status"] for a in answers] == ["stored", "duplicate", "duplicate"]
    assert [r["event_id"] for r in _rows(database_url, "stripe_events")] == ["evt_dup"]
    counters = _counters(database_url, "stripe")
    assert (counters["events"], counters["duplicates"]) == (1, 2)


def test_the_same_id_with_another_body_is_a_new_version_not_a_duplicate(served: Any, database_url: str) -> None:
    # A CRM re-sends the contact it updated under the contact's id: every update must be kept.
    base, sources, _ = served
    source = sources["crm"]
    statuses = []
    for body in (orjson.dumps({"id": "c1", "x": 1}), orjson.dumps({"id": "c1", "x": 2}), orjson.dumps({"id": "c1", "x": 2})):
        answer = httpx.post(f"{base}/hooks/crm", content=body, headers=signed(source, body))
        statuses.append(answer.json()["status"])
    assert statuses == ["stored", "stored", "duplicate"]
    rows = _rows(database_url, "crm_events")
    assert sorted(r["_raw_payload"]["x"] for r in rows) == [1, 2]
    counters = _counters(database_url, "crm")
    assert (counters["events"], counters["duplicates"]) == (2, 1)


def test_an_event_without_an_id_is_identified_by_its_body(served: Any, database_url: str) -> None:
    base, sources, _ = served
    source = sources["crm"]
    body = orjson.dumps({"contact": "ada@example.com", "change": "created"})
    for _ in range(2):
        assert httpx.post(f"{base}/hooks/crm", content=body, headers=signed(source, body)).status_code == 200
    rows = _rows(database_url, "crm_events")
    assert len(rows) == 1 and rows[0]["event_id"].startswith("sha256:")


def test_oversize_wrong_type_and_malformed_bodies_are_refused_with_the_reason(served: Any, database_url: str) -> None:
    base, sources, _ = served
    source = sources["crm"]  # max_bytes=2,000
    big = orjson.dumps({"id": "big", "blob": "x" * 5_000})
    response = httpx.post(f"{base}/hooks/crm", content=big, headers=signed(source, big))
    assert response.status_code == 413 and "limit" in response.json()["error"]

    # A body streamed without Content-Length is cut off at the limit too.
    def chunks() -> Any:
        yield big[:1500]
        yield big[1500:]

    streamed = httpx.post(f"{base}/hooks/crm", content=chunks(), headers=signed(source, big))
    assert streamed.status_code == 413

    text = b"id=1&x=2"
    response = httpx.post(f"{base}/hooks/crm", content=text,
                          headers={**signed(source, text), "content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 415 and "not JSON" in response.json()["error"]

    broken = b'{"id": "half'
    response = httpx.post(f"{base}/hooks/crm", content=broken, headers=signed(source, broken))
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]

    nul = b'{"id": "n", "name": "a\\u0000b"}'
    response = httpx.post(f"{base}/hooks/crm", content=nul, headers=signed(source, nul))
    assert response.status_code == 400 and "u0000" in response.json()["error"]
    assert _rows(database_url, "crm_events") == []
    deadline = time.monotonic() + 5
    while _counters(database_url, "crm")["rejected_other"] < 5 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _counters(database_url, "crm")["rejected_other"] == 5


def test_health_endpoint_reports_the_database_and_the_sources(served: Any) -> None:
    base, _, _ = served
    response = httpx.get(f"{base}/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["database"] == "up"
    assert body["sources"]["stripe_events"] == "/hooks/stripe"


def test_the_server_binds_to_loopback_by_default(tmp_path: Path, database_url: str) -> None:
    from elt.webhooks.server import WebhookServer

    server = WebhookServer(tmp_path, [WebhookSource("s", "/s", secret=SECRET, signature=GitHub())],
                           database_url=database_url)
    assert server.host == "127.0.0.1"


def test_a_signed_source_without_a_secret_is_refused_at_declaration() -> None:
    from elt.errors import ConfigError

    with pytest.raises(ConfigError, match="needs secret="):
        WebhookSource("nosecret", "/n", signature=Shopify())


def test_an_unset_signing_secret_stops_the_server_at_start_naming_the_variable(tmp_path: Path, database_url: str,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from elt.secrets import MissingSecretError, from_env
    from elt.webhooks.server import WebhookServer

    monkeypatch.delenv("UNSET_HOOK_SECRET", raising=False)
    source = WebhookSource("unset", "/u", secret=from_env("UNSET_HOOK_SECRET"), signature="github")
    with pytest.raises(MissingSecretError, match="UNSET_HOOK_SECRET"):
        WebhookServer(tmp_path, [source], database_url=database_url)


def test_an_event_id_too_long_for_an_index_is_stored_under_a_hash_of_it(served: Any, database_url: str) -> None:
    # An id past a btree entry's limit (5,120 bytes that do not compress) could never be stored:
    # the server took the database for down, spooled it, and every event after it waited behind it.
    base, sources, _ = served
    source = sources["stripe"]
    long_id = "".join(hashlib.sha256(str(i).encode()).hexdigest() for i in range(80))
    body = orjson.dumps({"id": long_id, "amount": 5})
    answers = [httpx.post(f"{base}/hooks/stripe", content=body, headers=signed(source, body)) for _ in range(2)]
    after = orjson.dumps({"id": "evt_after", "amount": 6})
    answers.append(httpx.post(f"{base}/hooks/stripe", content=after, headers=signed(source, after)))
    assert [(a.status_code, a.json()["status"]) for a in answers] == [(200, "stored"), (200, "duplicate"), (200, "stored")]
    rows = _rows(database_url, "stripe_events")
    assert [r["_raw_payload"]["id"] for r in rows] == [long_id, "evt_after"]  # the payload keeps the id as sent
    assert rows[0]["event_id"].startswith("sha256-of-id:") and len(rows[0]["event_id"]) < 100
    assert answers[0].json()["event_id"] == rows[0]["event_id"]
