"""Overlap reading and writing: pull the next items in a thread while the current one loads.

Extraction and validation are Python work; loading is mostly the database
working while this process waits on a socket. Running them side by side keeps
both busy. The queue is bounded, so memory holds at most ``depth`` items
ahead of the loader.
"""

from __future__ import annotations

import contextvars
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
_DONE = object()


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def prefetch(items: Iterable[T], depth: int = 2, should_stop: Callable[[], None] | None = None) -> Iterator[T]:
    """Yield ``items`` in order, producing up to ``depth`` of them ahead in a background thread.

    An exception in the producer is re-raised here, in order, after the items
    before it. When the consumer stops early, the producer stops at its next item.
    ``should_stop`` is called while waiting for the producer (a slow source) and
    may raise to stop waiting.
    """
    buffer: queue.Queue[object] = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
        except BaseException as exc:  # handed to the consumer, which raises it
            put(_Failure(exc))
            return
        put(_DONE)

    # The producer sees the caller's context (structlog's bound pipeline, run id).
    context = contextvars.copy_context()
    worker = threading.Thread(target=context.run, args=(produce,), name="elt-extract", daemon=True)
    worker.start()
    try:
        while True:
            try:
                item = buffer.get(timeout=0.2)
            except queue.Empty:
                if should_stop is not None:
                    should_stop()
                continue
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        worker.join(timeout=1)
