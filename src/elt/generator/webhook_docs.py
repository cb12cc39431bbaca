"""The architecture document's webhook parts: endpoints, their raw tables, and how to run them in production.

Kept apart from :mod:`elt.generator.architecture`, which calls these for the
project's declared :class:`~elt.webhooks.WebhookSource`\\ s (nothing when it has none).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence

from elt.webhooks.source import WebhookSource

#: The columns of a webhook source's raw table, as elt creates it (see elt.loaders.postgres.webhooks).
WEBHOOK_COLUMNS = [("event_id", "text"), ("_raw_payload", "jsonb"), ("_headers", "jsonb"),
                   ("_received_at", "timestamp with time zone"), ("_loaded_at", "timestamp with time zone"),
                   ("_batch_id", "text"), ("_run_id", "bigint"), ("_record_hash", "text"), ("_row_seq", "bigint"),
                   ("_deleted_at", "timestamp with time zone")]


def _id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", text)


def _style(source: WebhookSource) -> str:
    return type(source.style).__name__ if source.style else "unsigned"


def diagram_nodes(sources: Sequence[WebhookSource]) -> tuple[list[str], list[str], list[str], list[str]]:
    """Mermaid lines: (source nodes, endpoint nodes, raw table nodes, edges)."""
    senders = sorted({s.name for s in sources})
    nodes = [f'    src_wh_{_id(name)}[("{name}<br/>webhooks")]' for name in senders]
    endpoints = [f'    wh_{_id(s.table)}["POST {s.path}<br/>{_style(s)} signature"]' for s in sources]
    tables = [f'    raw_{_id(s.table)}[("raw.{s.table}")]' for s in sources]
    edges = [f"  src_wh_{_id(s.name)} --> wh_{_id(s.table)} --> raw_{_id(s.table)}" for s in sources]
    return nodes, endpoints, tables, edges


def specifications(sources: Sequence[WebhookSource]) -> str:
    out = []
    for s in sources:
        every = (f"models reading it rebuilt at most every {int(s.transform_every.total_seconds())} s after new events"
                 if s.transforms and isinstance(s.transform_every, dt.timedelta) else "models built by `elt transform`")
        ident = f"header `{s.event_id_header}`, else payload field `{s.event_id}`" if s.event_id_header \
            else f"payload field `{s.event_id}`"
        out.append(f"**{s.name}.{s.entity}** (WebhookSource): `POST {s.path}`, {_style(s)} signature"
                   f" (`{s.style.header if s.style else '-'}`), bodies up to {s.max_bytes:,} bytes, event id from {ident};"
                   f" each event stored once in `raw.{s.table}` before the 2xx; {every}.\n")
    return "\n".join(out)


def schema(sources: Sequence[WebhookSource], live: dict[str, list[tuple[str, str]] | None]) -> str:
    out = []
    for s in sources:
        columns = live.get(s.table)
        origin = "as in the database" if columns else "as elt creates it when the webhook server starts"
        body = ",\n".join(f"    {name} {kind}" for name, kind in columns or WEBHOOK_COLUMNS)
        out.append(f"`raw.{s.table}` ({origin}; one row per event id and body, from `POST {s.path}`):\n\n```sql\n"
                   f"CREATE TABLE raw.{s.table} (\n{body}\n);\n```\n")
    return "\n".join(out)


def orchestration(sources: Sequence[WebhookSource]) -> str:
    return ("\nWebhook sources are not scheduled: `elt serve` (or `elt webhooks` alone) receives them continuously on"
            " 127.0.0.1:8787 (`ELT_WEBHOOK_HOST`, `ELT_WEBHOOK_PORT`): "
            + ", ".join(f"`{s.path}` → `raw.{s.table}`" for s in sources) + ".\n")


RELIABILITY = """
- **Webhooks, durable before the 2xx**: a delivery is answered only after its event is committed to its raw
  table (many requests share one transaction: group commit), so a sender never gets a success for an event
  that could be lost. A repeated delivery (same event id) is answered 200 and stored once.
- **Webhooks, database down**: events go to a local spool under `.elt/webhooks/spool/` (fsync'd before the
  answer) and are stored in arrival order when the database returns. Past the spool's limit
  (`ELT_WEBHOOK_SPOOL_LIMIT`, 256 MB) senders get 503 + Retry-After and retry later.
- **Webhooks, refused requests**: bad or missing signature 401 (counted, never stored), wrong content type
  415, oversize 413, malformed JSON 400; each logged with its reason. SIGTERM stops accepting, answers the
  requests in flight and stores what is queued before the process exits."""


def monitoring(sources: Sequence[WebhookSource]) -> str:
    rows = ", ".join(f"`{s.table}` {s.expect_every}" for s in sources if isinstance(s.expect_every, dt.timedelta))
    return ("\n**webhook_silent**: a webhook source whose last stored event is older than its `expect_every`"
            f" ({rows or 'none declared'}), from `pipeline.webhook_sources` (events, duplicates, refusals and last"
            " event per source; `elt status` prints it). `GET /healthz` on the webhook server is for uptime"
            " monitors: 200 while events are accepted (`database` says whether they are spooled), 503 when the"
            " spool is full.")


def runbook(sources: Sequence[WebhookSource]) -> str:
    first = sources[0]
    secret = first.secret.name if first.secret is not None and hasattr(first.secret, "name") else "THE_SECRET"
    return f"""
- **Expose the webhook endpoint**: `elt serve` listens on 127.0.0.1:8787 only; put a TLS reverse proxy in front
  and give the sender `https://hooks.example.com{first.path}`. Caddy (certificates automatic):
  `hooks.example.com {{ reverse_proxy 127.0.0.1:8787 }}`. nginx: a `server` with `listen 443 ssl;`, your
  certificate, `client_max_body_size 1m;` and `location /webhooks/ {{ proxy_pass http://127.0.0.1:8787; }}`.
  Check it with `curl https://hooks.example.com/healthz`.
- **Rotate a webhook secret**: create the new secret in the sender's dashboard, put it in `.env`
  (`{secret}=...`) and restart `elt serve` (SIGTERM drains first, nothing is lost); deliveries signed with
  the old secret during the switch get 401 and the sender retries them. Watch `refused (signature)` in
  `elt status` fall back to zero, then delete the old secret at the sender.
- **Replay missed events**: events the sender could not deliver (server down past its retries, a 401 storm
  after a rotation) are listed as failed in its dashboard (Stripe: Developers → Events; GitHub: the hook's
  Recent Deliveries; Shopify: the webhook's delivery log). Resend them from there: each is stored once,
  whatever was already received is acknowledged as a duplicate.
- **Database was down**: nothing to do: `GET /healthz` shows `spool_bytes` falling to 0 once it is back."""
