"""Dependent transforms of webhook sources: built after new events, at most once per ``transform_every``.

The build runs as a child process (``elt transform --select ...``), one at a
time, so a slow or failing model never holds up the receiving of events; its
outcome is logged in ``pipeline.execution_log`` like any transform run.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from elt.logs import get_logger
from elt.webhooks.source import WebhookSource


class TransformTrigger:
    """Remembers which sources got new events and builds their models when each is due."""

    def __init__(self, project_dir: Path, sources: Sequence[WebhookSource], poll: float = 1.0) -> None:
        self.project_dir = project_dir
        #: By raw table (a source's entities are separate WebhookSources).
        self.sources = {s.table: s for s in sources if s.transforms}
        self.poll = poll
        self._dirty: set[str] = set()
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="elt-webhook-transforms", daemon=True)
        self.builds = 0
        self.log = get_logger(component="webhooks")

    def new_events(self, tables: set[str]) -> None:
        with self._lock:
            self._dirty |= tables & set(self.sources)

    def start(self) -> None:
        if self.sources:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=60)

    def selectors(self, source: WebhookSource) -> list[str]:
        """``--select`` arguments: the declared list, or every model reading the raw table, with dependents."""
        if not isinstance(source.transforms, bool):
            return list(source.transforms)
        from elt.pipeline import registered
        from elt.transforms import project_graph

        graph = project_graph(self.project_dir, registered().values())
        table = f"raw.{source.table}"
        return sorted(f"{relation}+" for relation, model in graph.models.items() if table in model.reads)

    def _run(self) -> None:
        while not self._stop.wait(self.poll):
            now = time.monotonic()
            with self._lock:
                due = [n for n in self._dirty
                       if now - self._last.get(n, float("-inf")) >= _seconds(self.sources[n].transform_every)]
                self._dirty -= set(due)
            for name in due:
                self._last[name] = now
                self._build(self.sources[name])

    def _build(self, source: WebhookSource) -> None:
        try:
            selectors = self.selectors(source)
        except Exception as exc:
            self.log.error("cannot find the models of a webhook source", source=source.name, error=str(exc))
            return
        if not selectors:
            self.log.warning("transforms=True but no model reads this source's table", source=source.name,
                             table=f"raw.{source.table}")
            return
        command = [sys.executable, "-m", "elt", "--project", str(self.project_dir), "transform"]
        for selector in selectors:
            command += ["--select", selector]
        self.log.info("building models after new events", source=source.name, select=selectors)
        done = subprocess.run(command, cwd=self.project_dir, stdin=subprocess.DEVNULL, capture_output=True, timeout=3600)
        self.builds += 1
        if done.returncode != 0:
            self.log.error("models after new events failed", source=source.name, exit_code=done.returncode,
                           output=done.stderr.decode(errors="replace")[-2000:])


def _seconds(every: Any) -> float:
    """A source's ``transform_every`` in seconds (a timedelta, or a number of seconds)."""
    return every.total_seconds() if hasattr(every, "total_seconds") else float(every)
