"""The ASGI application (starlette): one POST route per webhook source, and ``GET /healthz``.

A request is checked in the order that costs least to refuse: declared size
(413), content type (415), body read up to the limit (413), signature (401,
counted, never stored), JSON (400). An accepted event waits for its group
commit (see :mod:`elt.webhooks.ingest`) and gets 200 only once it is in the
database or fsync'd to the local spool. Every refusal is logged with its reason.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import queue
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from elt.loaders.postgres.webhooks import PgWebhookStore, StoredEvent
from elt.logs import get_logger
from elt.webhooks.ingest import Ingestor
from elt.webhooks.source import WebhookSource

#: Seconds a sender is told to wait (Retry-After) when the spool or the queue is full.
RETRY_AFTER = 30


Headers = list[tuple[bytes, bytes]]
_JSON = (b"content-type", b"application/json")


class Reply:
    """An answer to a delivery: status, JSON body, extra headers."""

    __slots__ = ("status", "body", "headers")

    def __init__(self, status: int, body: dict[str, Any], headers: Headers | None = None) -> None:
        self.status = status
        self.body = orjson.dumps(body)
        self.headers = [_JSON, (b"content-length", str(len(self.body)).encode()), *(headers or [])]

    async def send(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body})


def _retry_later(reason: str) -> Reply:
    return Reply(503, {"error": f"{reason}; retry later"}, [(b"retry-after", str(RETRY_AFTER).encode())])


class Receiver:
    """The endpoint of one source: checks a request and hands its event to the ingestor.

    Plain ASGI rather than a starlette endpoint: this is the hot path, and the
    framework's request objects and middleware layers cost more than the checks themselves.
    """

    def __init__(self, source: WebhookSource, ingestor: Ingestor) -> None:
        self.source = source
        self.ingestor = ingestor
        self.kept = source.kept_headers
        self.log = get_logger(component="webhooks", source=source.name)

    def refuse(self, status: int, reason: str, scope: Scope, *, signature: bool = False) -> Reply:
        self.ingestor.refused(self.source.table, signature=signature)
        client = scope.get("client")
        self.log.warning("webhook refused", status=status, reason=reason, path=self.source.path,
                         client=client[0] if client else None)
        return Reply(status, {"error": reason})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        reply = await self.handle(scope, receive)
        await reply.send(send)

    async def handle(self, scope: Scope, receive: Receive) -> Reply:
        source = self.source
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}  # names arrive lower-case
        declared = headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > source.max_bytes:
            return self.refuse(413, f"payload of {declared} bytes is over the limit of {source.max_bytes:,}", scope)
        media = headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/json" and not media.endswith("+json"):
            return self.refuse(415, f"content type {media or '(none)'!r} is not JSON; send application/json", scope)
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return Reply(400, {"error": "the sender hung up before the body was complete"})
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > source.max_bytes:
                return self.refuse(413, f"payload is over the limit of {source.max_bytes:,} bytes", scope)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if source.style is not None:
            problem = source.style.problem(body, headers, source.secret_value())
            if problem:
                return self.refuse(401, problem, scope, signature=True)
        try:
            payload = orjson.loads(body)
            text = body.decode("utf-8")
        except (orjson.JSONDecodeError, UnicodeDecodeError) as exc:
            return self.refuse(400, f"body is not valid JSON: {exc}", scope)
        if b"\\u0000" in body:
            return self.refuse(400, "payload holds a \\u0000 character, which PostgreSQL's jsonb cannot store", scope)
        busy = self.ingestor.overloaded()
        if busy:
            self.log.warning("webhook deferred: 503", reason=busy, path=source.path)
            return _retry_later(busy)
        digest = hashlib.sha256(body).hexdigest()
        event = StoredEvent(
            source=source.name, table=source.table,
            event_id=PgWebhookStore.stored_id(source.event_id_of(payload, headers) or f"sha256:{digest}"),
            body=text, headers={k: headers[k] for k in self.kept if k in headers},
            received_at=dt.datetime.now(dt.UTC), body_hash=digest,
        )
        try:
            future = self.ingestor.submit(event)
        except queue.Full:  # filled between the check and the put
            return _retry_later("the ingest queue is full")
        # Shielded: a sender hanging up must not cancel the outcome the writer will set.
        outcome = await asyncio.shield(future)
        if outcome.status == "refused":
            return self.refuse(400, outcome.reason, scope)
        if outcome.status == "unavailable":
            return _retry_later(outcome.reason)
        return Reply(200, {"status": outcome.status, "event_id": event.event_id})


class WebhookApp:
    """POSTs to a source's path go straight to its receiver; everything else (health, lifespan, 404/405) to starlette."""

    def __init__(self, receivers: dict[str, Receiver], fallback: Starlette) -> None:
        self.receivers = receivers
        self.fallback = fallback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            receiver = self.receivers.get(scope["path"])
            if receiver is not None:
                await receiver(scope, receive, send)
                return
        await self.fallback(scope, receive, send)


def build_app(sources: Sequence[WebhookSource], ingestor: Ingestor,
              extra_health: Callable[[], dict[str, Any]] | None = None) -> WebhookApp:
    """The application; its lifespan starts the writer and, at shutdown, stores everything queued."""

    async def health(request: Request) -> Response:
        full = ingestor.spool.full()
        body = {
            "status": "unavailable" if full else ("ok" if ingestor.database_up else "degraded"),
            "database": "up" if ingestor.database_up else "unreachable (events are spooled)",
            "queued": ingestor.queued, "spool_bytes": ingestor.spool.bytes,
            "sources": {s.table: s.path for s in sources},
            **(extra_health() if extra_health else {}),
        }
        return JSONResponse(body, status_code=503 if full else 200)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        ingestor.start()
        try:
            yield
        finally:
            # Runs after the server stopped taking requests and the in-flight ones were answered.
            await asyncio.get_running_loop().run_in_executor(None, ingestor.stop)

    return WebhookApp({s.path: Receiver(s, ingestor) for s in sources},
                      Starlette(routes=[Route("/healthz", health, methods=["GET"])], lifespan=lifespan))
