"""Serving webhook sources: uvicorn on 127.0.0.1 by default, in front (`elt webhooks`) or beside the scheduler (`elt serve`).

uvicorn handles SIGTERM/SIGINT in the foreground: it stops accepting
connections, lets the requests in flight get their answers, then the
application's shutdown stores (or spools) everything still queued.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import uvicorn

from elt.errors import ConfigError
from elt.loaders.postgres.webhooks import PgWebhookStore
from elt.logs import get_logger
from elt.webhooks.app import build_app
from elt.webhooks.ingest import Ingestor
from elt.webhooks.source import WebhookSource
from elt.webhooks.spool import Spool
from elt.webhooks.triggers import TransformTrigger

DEFAULT_PORT = 8787
#: The spool's size limit: past it senders get 503 + Retry-After (env ELT_WEBHOOK_SPOOL_LIMIT, bytes).
DEFAULT_SPOOL_LIMIT = 256 * 1024 * 1024


class WebhookServer:
    """Every webhook source of a project behind one HTTP listener."""

    def __init__(self, project_dir: Path, sources: Sequence[WebhookSource], *, host: str | None = None,
                 port: int | None = None, database_url: str | None = None, spool_dir: Path | None = None,
                 spool_limit: int | None = None) -> None:
        if not sources:
            raise ConfigError("this project declares no WebhookSource; add one to pipelines.py")
        destinations = {s.destination for s in sources}
        if len(destinations) > 1:
            raise ConfigError("webhook sources of one project must share one destination")
        for source in sources:
            if source.style is not None:
                source.secret_value()  # an unset secret fails now, naming its variable, not on every request
        self.project_dir = project_dir
        self.sources = list(sources)
        self.host = host or os.environ.get("ELT_WEBHOOK_HOST", "127.0.0.1")
        self.port = int(port if port is not None else os.environ.get("ELT_WEBHOOK_PORT", DEFAULT_PORT))
        if database_url is None:
            destination = self.sources[0].destination
            database_url = destination.target(project_dir).url  # type: ignore[union-attr]
        self.database_url = database_url
        limit = spool_limit or int(os.environ.get("ELT_WEBHOOK_SPOOL_LIMIT", DEFAULT_SPOOL_LIMIT))
        self.spool = Spool(spool_dir or project_dir / ".elt" / "webhooks" / "spool", limit)
        self.transforms = TransformTrigger(project_dir, self.sources)
        self.ingestor = Ingestor(self._connect, [(s.name, s.table) for s in self.sources], self.spool,
                                 on_stored=self.transforms.new_events)
        self.app = build_app(self.sources, self.ingestor)
        self.log = get_logger(component="webhooks")
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._migrated = False

    def _connect(self) -> PgWebhookStore:
        if not self._migrated:
            from elt.loaders.postgres import PostgresLoader

            loader = PostgresLoader(self.database_url)
            try:
                loader.store.migrate()
            finally:
                loader.close()
            self._migrated = True
        return PgWebhookStore(self.database_url)

    def _uvicorn(self, **options: Any) -> uvicorn.Server:
        config = uvicorn.Config(self.app, host=self.host, port=self.port, log_level="warning", access_log=False,
                                lifespan="on", timeout_graceful_shutdown=30, **options)
        return uvicorn.Server(config)

    def _announce(self) -> None:
        for source in self.sources:
            if source.style is None:
                self.log.warning("webhook source has no signature check: anyone who finds the URL can post to it",
                                 source=source.name)
            self.log.info("receiving webhooks", source=source.name, url=f"http://{self.host}:{self.port}{source.path}",
                          table=f"raw.{source.table}")

    def serve(self) -> None:
        """Serve until SIGTERM/SIGINT (in the foreground), then drain and return."""
        self._announce()
        self.transforms.start()
        try:
            self._uvicorn().run()
        finally:
            self.transforms.stop()

    def start_background(self) -> None:
        """Serve from a thread (beside `elt serve`'s scheduler); :meth:`stop` drains and ends it."""
        self._announce()
        self.transforms.start()
        self._server = self._uvicorn()
        self._thread = threading.Thread(target=self._server.run, name="elt-webhooks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=60)
        self.transforms.stop()
