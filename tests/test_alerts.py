"""Alerts: once per problem, reminders while it lasts, "resolved" when it clears; sinks that fail never raise."""

from __future__ import annotations

import datetime as dt

from elt.alerts import Alerts, Email, Webhook, notify
from elt.health import Problem
from elt.testing import Reply
from tests.fixtures.smtp import SmtpServer

MISSING = Problem("missing_run", "shop", "last successful run started 2026-11-25 06:00 UTC; a run was due at 07:00 UTC")
STALE = Problem("stale_data", "shop.orders", "raw.shop_orders: newest row loaded 2026-11-24 10:00 UTC")


def test_one_alert_per_problem_then_a_reminder_then_resolved(fake_api, loader, db):
    received = []
    fake_api.route("/hook", lambda r: received.append(r.body) or {"ok": True}, method="POST")
    alerts = Alerts(Webhook(f"{fake_api.url}/hook"), remind_every="1h", register=False)

    assert notify(loader.store, [MISSING], alerts) == [("problem", "missing_run:shop")]
    assert notify(loader.store, [MISSING], alerts) == []  # still open: no repeat
    assert notify(loader.store, [MISSING, STALE], alerts) == [("problem", "stale_data:shop.orders")]
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)
    assert notify(loader.store, [MISSING], alerts, now=later) == [("reminder", "missing_run:shop"),
                                                            ("resolved", "stale_data:shop.orders")]
    assert notify(loader.store, [], alerts) == [("resolved", "missing_run:shop")]
    assert len(received) == 5
    texts = [r.decode() for r in received]
    assert "elt missing run: shop" in texts[0] and "a run was due at 07:00 UTC" in texts[0]
    assert texts[2].startswith('{"text":"*REMINDER: elt missing run: shop*') and "open since" in texts[2]
    assert "RESOLVED elt missing run: shop" in texts[4]
    # A problem that comes back is a new alert.
    assert notify(loader.store, [MISSING], alerts) == [("problem", "missing_run:shop")]
    rows = db.execute("SELECT key, sent_count, resolved_at IS NOT NULL AS resolved FROM pipeline.alerts ORDER BY id").fetchall()
    assert [(r["key"], r["sent_count"], r["resolved"]) for r in rows] == [
        ("missing_run:shop", 2, True), ("stale_data:shop.orders", 1, True), ("missing_run:shop", 1, False)]


def test_a_failing_webhook_is_retried_logged_and_tried_again_next_cycle(fake_api, loader, capsys):
    from elt.logs import configure_logging

    configure_logging(fmt="console", force=True)
    attempts = []
    fake_api.route("/hook", lambda r: attempts.append(1) or Reply({"error": "down"}, status=503), method="POST")
    alerts = Alerts(Webhook(f"{fake_api.url}/hook"), retries=2, retry_wait=0.01, register=False)
    assert notify(loader.store, [MISSING], alerts) == []  # nothing delivered, and nothing raised
    assert len(attempts) == 2
    assert "alert delivery failed" in capsys.readouterr().err
    fake_api.route("/ok", lambda r: {"ok": True}, method="POST")
    healed = Alerts(Webhook(f"{fake_api.url}/ok"), register=False)
    assert notify(loader.store, [MISSING], healed) == [("problem", "missing_run:shop")]  # retried next cycle


def test_email_over_smtp(loader):
    with SmtpServer() as smtp:
        alerts = Alerts(Email("127.0.0.1", port=smtp.port, sender="elt@example.com", to=["ops@example.com"]),
                        register=False)
        notify(loader.store, [STALE], alerts)
        notify(loader.store, [], alerts)
    assert [m["Subject"] for m in smtp.messages] == ["elt stale data: shop.orders",
                                                     "RESOLVED elt stale data: shop.orders"]
    assert smtp.messages[0]["To"] == "ops@example.com"
    assert "newest row loaded 2026-11-24 10:00 UTC" in smtp.messages[0].get_payload()


def test_a_stop_request_cuts_delivery_to_a_down_sink_short_and_the_next_check_sends_what_was_left(fake_api, loader):
    # elt serve on SIGTERM: 12 problems x 3 attempts x growing waits held the stop for ~50 s.
    import threading
    import time

    stop = threading.Event()
    attempts = []

    def down(request):
        attempts.append(1)
        stop.set()  # the stop request arrives while the first alert is being delivered
        return Reply({"error": "down"}, status=503)

    fake_api.route("/hook", down, method="POST")
    problems = [Problem("missing_run", f"p{i}", "a run was due") for i in range(12)]
    alerts = Alerts(Webhook(f"{fake_api.url}/hook"), retries=3, retry_wait=5.0, register=False)
    started = time.monotonic()
    assert notify(loader.store, problems, alerts, stop=stop) == []
    assert time.monotonic() - started < 3 and len(attempts) == 1
    fake_api.route("/ok", lambda r: {"ok": True}, method="POST")
    healed = Alerts(Webhook(f"{fake_api.url}/ok"), register=False)
    assert len(notify(loader.store, problems, healed)) == 12  # nothing was lost by stopping
