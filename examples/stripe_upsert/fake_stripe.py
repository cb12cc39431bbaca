"""A local stand-in for Stripe's list API, so this example runs without an account or a network.

It answers ``GET /v1/customers`` and ``GET /v1/charges`` the way Stripe does:
newest first, ``limit`` (at most 100), ``starting_after=<id>``, ``has_more``,
``created[gte]=<unix time>``, and a bearer ``sk_test_...`` key. Charges change
status over time (``pending`` → ``succeeded``/``refunded``), so a second run
updates rows in place: that is what ``upsert`` is for.
"""

from __future__ import annotations

import random
import time

from elt.testing import FakeApi, Reply

EPOCH = 1_767_225_600  # 2026-01-01T00:00:00Z
CUSTOMERS = [
    {"id": f"cus_{i:05d}", "object": "customer", "email": f"customer{i}@example.com", "name": f"Customer {i}",
     "created": EPOCH + i * 3600, "currency": "aud", "metadata": {"segment": random.Random(i).choice(["smb", "mid"])}}
    for i in range(1, 231)
]


def charges() -> list[dict]:
    """Charges whose status depends on the wall clock, so each run sees some change."""
    minute = int(time.time() // 60)
    rows = []
    for i in range(1, 501):
        rng = random.Random(i)
        status = "pending" if (i + minute) % 7 == 0 else rng.choice(["succeeded", "succeeded", "refunded"])
        rows.append({"id": f"ch_{i:06d}", "object": "charge", "amount": rng.randint(500, 50_000), "currency": "aud",
                     "customer": f"cus_{rng.randint(1, 230):05d}", "status": status, "created": EPOCH + i * 600})
    return rows


def _list(request, rows):
    if not request.headers.get("Authorization", "").startswith("Bearer sk_test_"):
        return Reply({"error": {"type": "invalid_request_error", "message": "Invalid API Key provided"}}, status=401)
    rows = sorted(rows, key=lambda r: r["created"], reverse=True)
    if "created[gte]" in request.params:
        rows = [r for r in rows if r["created"] >= int(request.params["created[gte]"])]
    after = request.params.get("starting_after")
    if after:
        index = next((n for n, r in enumerate(rows) if r["id"] == after), None)
        if index is None:
            return Reply({"error": {"message": f"No such object: '{after}'"}}, status=400)
        rows = rows[index + 1:]
    limit = min(int(request.params.get("limit", 10)), 100)
    return {"object": "list", "url": request.path, "data": rows[:limit], "has_more": len(rows) > limit}


def start() -> FakeApi:
    api = FakeApi()
    api.route("/v1/customers", lambda request: _list(request, CUSTOMERS))
    api.route("/v1/charges", lambda request: _list(request, charges()))
    return api.start()
