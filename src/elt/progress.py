"""Progress of a run: a live rich table on a terminal, throttled log lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import Any, Protocol

from elt.logs import get_logger


class Progress(Protocol):
    def start_stream(self, stream: str) -> None: ...
    def advance(self, stream: str, extracted: int, loaded: int, rejected: int) -> None: ...
    def end_stream(self, stream: str, **figures: Any) -> None: ...
    def close(self) -> None: ...


class LogProgress:
    """One log line per stream every ``interval`` seconds, and one when it ends."""

    def __init__(self, interval: float = 5.0) -> None:
        self.interval = interval
        self.log = get_logger()
        self._started: dict[str, float] = {}
        self._last: dict[str, float] = {}

    def start_stream(self, stream: str) -> None:
        self._started[stream] = self._last[stream] = time.monotonic()

    def advance(self, stream: str, extracted: int, loaded: int, rejected: int) -> None:
        now = time.monotonic()
        if now - self._last.get(stream, 0) >= self.interval:
            self._last[stream] = now
            elapsed = max(now - self._started.get(stream, now), 1e-9)
            self.log.info("loading", stream=stream, extracted=extracted, loaded=loaded, rejected=rejected,
                          rows_per_s=round(extracted / elapsed))

    def end_stream(self, stream: str, **figures: Any) -> None:
        elapsed = max(time.monotonic() - self._started.get(stream, time.monotonic()), 1e-9)
        extracted = figures.get("extracted", 0)
        self.log.info("stream done", stream=stream, seconds=round(elapsed, 2),
                      rows_per_s=round(extracted / elapsed), **figures)

    def close(self) -> None:
        pass


class RichProgress(LogProgress):
    """A live line per stream with records and rows/s, for people at a terminal."""

    def __init__(self) -> None:
        super().__init__()
        from rich.console import Console
        from rich.progress import Progress as Bar
        from rich.progress import SpinnerColumn, TextColumn, TimeElapsedColumn

        self._bar = Bar(
            SpinnerColumn(), TextColumn("[bold]{task.description}"), TextColumn("{task.fields[figures]}"),
            TimeElapsedColumn(), console=Console(stderr=True), transient=False,
        )
        self._tasks: dict[str, Any] = {}
        self._bar.start()

    def start_stream(self, stream: str) -> None:
        super().start_stream(stream)
        self._tasks[stream] = self._bar.add_task(stream, total=None, figures="starting")

    def advance(self, stream: str, extracted: int, loaded: int, rejected: int) -> None:
        elapsed = max(time.monotonic() - self._started.get(stream, time.monotonic()), 1e-9)
        figures = f"{extracted:,} extracted  {loaded:,} loaded  {rejected:,} rejected  {extracted / elapsed:,.0f} rows/s"
        self._bar.update(self._tasks[stream], figures=figures)

    def end_stream(self, stream: str, **figures: Any) -> None:
        task = self._tasks.get(stream)
        if task is not None:
            self._bar.update(task, total=1, completed=1)
        super().end_stream(stream, **figures)

    def close(self) -> None:
        self._bar.stop()


def default_progress() -> LogProgress:
    return RichProgress() if sys.stderr.isatty() else LogProgress()
