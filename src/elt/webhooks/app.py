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

from elt.loaders.pg_webhooks import StoredEvent
from elt.logs import get_logger
from elt.webhooks.ingest import Ingestor
from elt.webhooks.source import WebhookSource

#: Seconds a sender is told to wait (Retry-After) when the spool or the queue is full.
RETRY_AFTER = 30


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


class Receiver:
    """The endpoint of one source: checks a request and hands its event to the ingestor."""

    def __init__(self, source: WebhookSource, ingestor: Ingestor) -> None:
        self.source = source
        self.ingestor = ingestor
        self.kept = source.kept_headers
        self.log = get_logger(component="webhooks", source=source.name)

    def refuse(self, status: int, reason: str, request: Request, *, signature: bool = False) -> Response:
        self.ingestor.refused(self.source.table, signature=signature)
        client = request.client.host if request.client else None
        self.log.warning("webhook refused", status=status, reason=reason, path=self.source.path, client=client)
        return _json(status, {"error": reason})

    async def handle(self, request: Request) -> Response:
        source = self.source
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > source.max_bytes:
            return self.refuse(413, f"payload of {declared} bytes is over the limit of {source.max_bytes:,}", request)
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != "application/json" and not media.endswith("+json"):
            return self.refuse(415, f"content type {media or '(none)'!r} is not JSON; send application/json", request)
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > source.max_bytes:
                return self.refuse(413, f"payload is over the limit of {source.max_bytes:,} bytes", request)
            chunks.append(chunk)
        body = b"".join(chunks)
        headers = {k.lower(): v for k, v in request.headers.items()}
        if source.style is not None:
            problem = source.style.problem(body, headers, source.secret_value())
            if problem:
                return self.refuse(401, problem, request, signature=True)
        try:
            payload = orjson.loads(body)
            text = body.decode("utf-8")
        except (orjson.JSONDecodeError, UnicodeDecodeError) as exc:
            return self.refuse(400, f"body is not valid JSON: {exc}", request)
        if b"\\u0000" in body:
            return self.refuse(400, "payload holds a \\u0000 character, which PostgreSQL's jsonb cannot store", request)
        busy = self.ingestor.overloaded()
        if busy:
            self.log.warning("webhook deferred: 503", reason=busy, path=source.path)
            return _json(503, {"error": f"{busy}; retry later"}, {"Retry-After": str(RETRY_AFTER)})
        digest = hashlib.sha256(body).hexdigest()
        event = StoredEvent(
            source=source.name, table=source.table,
            event_id=source.event_id_of(payload, headers) or f"sha256:{digest}",
            body=text, headers={k: headers[k] for k in self.kept if k in headers},
            received_at=dt.datetime.now(dt.UTC), body_hash=digest,
        )
        try:
            future = self.ingestor.submit(event)
        except queue.Full:  # filled between the check and the put
            return _json(503, {"error": "the ingest queue is full; retry later"}, {"Retry-After": str(RETRY_AFTER)})
        # Shielded: a sender hanging up must not cancel the outcome the writer will set.
        outcome = await asyncio.shield(future)
        if outcome.status == "refused":
            return self.refuse(400, outcome.reason, request)
        if outcome.status == "unavailable":
            return _json(503, {"error": outcome.reason}, {"Retry-After": str(RETRY_AFTER)})
        return _json(200, {"status": outcome.status, "event_id": event.event_id})


def build_app(sources: Sequence[WebhookSource], ingestor: Ingestor,
              extra_health: Callable[[], dict[str, Any]] | None = None) -> Starlette:
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

    routes = [Route(s.path, Receiver(s, ingestor).handle, methods=["POST"]) for s in sources]
    routes.append(Route("/healthz", health, methods=["GET"]))
    return Starlette(routes=routes, lifespan=lifespan)
