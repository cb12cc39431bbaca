"""What `elt status` and `elt check` say about webhook sources: events, last event time, silence.

Read from ``pipeline.webhook_sources`` (kept in the same transactions as the
events), so a dead webhook server is caught too: its sources fall silent.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import psycopg

from elt.health import Problem
from elt.loaders.postgres.webhooks import webhook_source_rows
from elt.webhooks.source import WebhookSource


def source_rows(database_url: str) -> list[dict[str, Any]]:
    """Each source's counters and last event time (empty when no webhook server has run)."""
    with psycopg.connect(database_url, connect_timeout=15) as conn:
        return webhook_source_rows(conn)


def silent_sources(rows: Iterable[dict[str, Any]], sources: Iterable[WebhookSource],
                   now: dt.datetime | None = None) -> list[Problem]:
    """``webhook_silent`` problems: sources whose last event (or first serving) is older than ``expect_every``."""
    now = now or dt.datetime.now(dt.UTC)
    by_table = {r["table_name"]: r for r in rows}
    problems = []
    for source in sources:
        expect = source.expect_every
        if not isinstance(expect, dt.timedelta):
            continue
        row = by_table.get(source.table)
        if row is None:
            problems.append(Problem("webhook_silent", source.table,
                                    f"no event ever stored: is `elt serve` (or `elt webhooks`) running and is the sender"
                                    f" pointed at {source.path}? (expected one at least every {expect})"))
            continue
        last = row["last_event_at"] or row["created_at"]
        if now - last > expect:
            what = f"last event at {last:%Y-%m-%d %H:%M} UTC" if row["last_event_at"] else "no event since first served"
            problems.append(Problem(
                "webhook_silent", source.table,
                f"{what}, {_age(now - last)} ago; expected one at least every {expect}. Check that the webhook server is"
                " up (GET /healthz), that the sender's dashboard shows no failed deliveries (replay them from there),"
                f" and that refused requests ({row['rejected_signature']} bad signatures) are not a rotated secret.",
                since=last))
    return problems


def webhook_problems(project_dir: Path, sources: Iterable[WebhookSource], now: dt.datetime | None = None) -> list[Problem]:
    sources = [s for s in sources if s.expect_every]
    if not sources:
        return []
    url = sources[0].destination.target(project_dir).url  # type: ignore[union-attr]
    return silent_sources(source_rows(url), sources, now)


def _age(delta: dt.timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"
