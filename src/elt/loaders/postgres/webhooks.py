"""PostgreSQL SQL of webhook ingestion: the events table, the group insert that stores each event once, the counts.

Kept apart from the batch loader: a webhook event is stored by a conditional
insert on its event id (a duplicate delivery is a no-op), many requests' events
in one transaction (group commit), with the source's counters in that same
transaction.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import orjson
import psycopg
from psycopg import sql

from elt.loaders.postgres.connection import ensure_schema
from elt.loaders.postgres.raw import KEY_TEXT, short_identifier
from elt.loaders.postgres.writer import PostgresWriter


@dataclass
class StoredEvent:
    """One delivery as it is written: the body is the JSON text as received."""

    source: str
    table: str
    event_id: str
    body: str
    headers: dict[str, str]
    received_at: dt.datetime
    body_hash: str


class PgWebhookStore:
    """Writes events of webhook sources into ``raw.<source>_<entity>`` over one connection."""

    #: The event id leads the raw table's primary key, so it has the key's limit (see PostgresWriter).
    max_event_id_bytes: ClassVar[int | None] = PostgresWriter.max_key_bytes

    @classmethod
    def stored_id(cls, event_id: str) -> str:
        """The id an event is stored and deduplicated under: as sent, or a hash of it when longer than
        :attr:`max_event_id_bytes` (such an event could never be stored, and the events after it would
        wait behind it in the spool); the payload keeps the id as sent."""
        data = event_id.encode("utf-8", "surrogatepass")
        if cls.max_event_id_bytes is None or len(data) <= cls.max_event_id_bytes:
            return event_id
        return "sha256-of-id:" + hashlib.sha256(data).hexdigest()

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn: psycopg.Connection[Any] = psycopg.connect(url, autocommit=False, application_name="elt-webhooks",
                                                             connect_timeout=3)
        self.conn.execute("SET TIME ZONE 'UTC'")
        self.conn.commit()
        self._prepared: set[str] = set()

    def prepare(self, sources: Sequence[tuple[str, str]]) -> None:
        """Create the raw tables and counter rows of ``(source, table)`` pairs that do not exist yet."""
        for source, table in sources:
            if table in self._prepared:
                continue
            ident = sql.Identifier("raw", table)
            ensure_schema(self.conn, "raw")
            # (event_id, _record_hash) is the key: a repeated delivery (same id, same body) is a no-op
            # (ON CONFLICT DO NOTHING); the same id with another body (a sender that re-sends an object
            # it updated under the object's id) is a new version, stored, never dropped.
            # _run_id stays NULL: events are stored by the webhook server, not by a pipeline run.
            self.conn.execute(sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} ("
                " event_id " + KEY_TEXT + " NOT NULL,"
                " _raw_payload jsonb NOT NULL,"
                " _headers jsonb NOT NULL DEFAULT '{{}}'::jsonb,"
                " _received_at timestamptz NOT NULL,"
                " _loaded_at timestamptz NOT NULL DEFAULT now(),"
                " _batch_id text NOT NULL,"
                " _run_id bigint,"
                " _record_hash " + KEY_TEXT + " NOT NULL,"
                " _row_seq bigint GENERATED ALWAYS AS IDENTITY,"
                # Like every raw table: staging models leave rows marked deleted out.
                " _deleted_at timestamptz,"
                " PRIMARY KEY (event_id, _record_hash))").format(ident))
            # Transforms read new events by arrival; `elt check` reads the newest.
            self.conn.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (_received_at)").format(
                sql.Identifier(short_identifier(table, "received")), ident))
            self.conn.execute(
                "INSERT INTO pipeline.webhook_sources (source, table_name) VALUES (%s, %s)"
                " ON CONFLICT (table_name) DO UPDATE SET source = excluded.source", (source, table))
            self.conn.commit()
            self._prepared.add(table)

    def store(self, events: Sequence[StoredEvent], batch_id: str) -> set[tuple[str, str]]:
        """Insert ``events`` (any sources) in one transaction; returns the ``(table, event_id)`` pairs new to it.

        The caller commits with :meth:`commit` (so counters of refused requests can join the transaction).
        """
        by_table: dict[str, list[StoredEvent]] = {}
        for event in events:
            by_table.setdefault(event.table, []).append(event)
        new: set[tuple[str, str]] = set()
        for table, group in by_table.items():
            # One statement per table, its rows in one jsonb array parameter (five times faster than five
            # unnest()ed arrays, which psycopg dumps element by element). A key already stored (or twice in
            # this group) is skipped by ON CONFLICT DO NOTHING; RETURNING names the rows really inserted.
            rows = self.conn.execute(sql.SQL(
                "INSERT INTO {} (event_id, _raw_payload, _headers, _received_at, _batch_id, _record_hash)"
                " SELECT r->>'e', r->'p', r->'h', (r->>'r')::timestamptz, %s, r->>'x'"
                " FROM jsonb_array_elements(%s::jsonb) AS r"
                " ON CONFLICT (event_id, _record_hash) DO NOTHING RETURNING event_id, _record_hash").format(
                    sql.Identifier("raw", table)),
                (batch_id, _rows_document(group)),
            ).fetchall()
            inserted = {(r[0], r[1]) for r in rows}
            new |= {(table, event_id) for event_id, _ in inserted}
            # Counted by rows written: the same delivery twice in one group is one event and one duplicate.
            last = max((e.received_at for e in group if (e.event_id, e.body_hash) in inserted), default=None)
            self.conn.execute(
                "UPDATE pipeline.webhook_sources SET events = events + %s, duplicates = duplicates + %s,"
                " first_event_at = coalesce(first_event_at, %s),"
                " last_event_at = greatest(last_event_at, %s), updated_at = now() WHERE table_name = %s",
                (len(rows), len(group) - len(rows), last, last, table))
        return new

    def count_refused(self, refused: dict[str, tuple[int, int]]) -> None:
        """Add ``{table: (bad signatures, other refusals)}`` to the counters (in the open transaction)."""
        for table, (signature, other) in refused.items():
            self.conn.execute(
                "UPDATE pipeline.webhook_sources SET rejected_signature = rejected_signature + %s,"
                " rejected_other = rejected_other + %s, updated_at = now() WHERE table_name = %s",
                (signature, other, table))

    def commit(self) -> None:
        self.conn.commit()

    def rollback(self) -> None:
        try:
            self.conn.rollback()
        except psycopg.Error:
            pass

    def close(self) -> None:
        try:
            self.conn.close()
        except psycopg.Error:
            pass


def _rows_document(events: Sequence[StoredEvent]) -> str:
    """``[{"e": id, "p": payload, "h": headers, "r": received, "x": hash}, ...]`` as JSON text.

    The payload is spliced in as received: it was parsed as JSON before it was accepted, so the
    document is valid JSON and the payload is not encoded a second time.
    """
    parts = [
        f'{{"e":{orjson.dumps(e.event_id).decode()},"p":{e.body},"h":{orjson.dumps(e.headers).decode()},'
        f'"r":"{e.received_at.isoformat()}","x":"{e.body_hash}"}}'
        for e in events
    ]
    return "[" + ",".join(parts) + "]"


def webhook_source_rows(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    """Every webhook source's counters, for `elt status` and `elt check` (empty before the first event)."""
    exists = conn.execute("SELECT to_regclass('pipeline.webhook_sources') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return []
    cur = conn.execute(
        "SELECT source, table_name, events, duplicates, rejected_signature, rejected_other, first_event_at,"
        " last_event_at, created_at FROM pipeline.webhook_sources ORDER BY source, table_name")
    names = [d.name for d in cur.description or ()]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
