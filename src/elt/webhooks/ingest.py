"""Group commit: a bounded queue of received events, one writer thread, each sender answered after its commit.

Requests put their event on the queue and wait. The writer takes everything
queued (up to ``max_batch``), stores it in one transaction and only then
answers each waiting request: ``stored``, ``duplicate``, or ``spooled`` when
the database was unreachable and the events were fsync'd to the local spool
instead. While the spool holds anything, new events go to it too, so events
reach the database in the order they arrived; the writer drains it whenever
the database answers again. A full queue or a full spool is reported to the
sender as 503 + Retry-After, never as a success.
"""

from __future__ import annotations

import asyncio
import queue
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import psycopg

from elt.loaders.postgres.webhooks import PgWebhookStore, StoredEvent
from elt.logs import get_logger
from elt.webhooks.spool import Spool

#: How often the writer tries the database again while it is unreachable.
RETRY_EVERY = 1.0
#: Seconds between GIL hand-overs while the server runs (see Ingestor.start).
SWITCH_INTERVAL = 0.0005
#: Events stored per transaction while draining the spool.
DRAIN_CHUNK = 5000


class Waiter:
    """Where the request waiting for an event is told its outcome (an asyncio future on the server's loop)."""

    __slots__ = ("loop", "future")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future[Outcome] = loop.create_future()


@dataclass(frozen=True)
class Outcome:
    """What happened to one event: ``stored``, ``duplicate``, ``spooled``, or ``refused`` (with the reason)."""

    status: str
    reason: str = ""


STORED, DUPLICATE, SPOOLED = Outcome("stored"), Outcome("duplicate"), Outcome("spooled")


class Ingestor:
    """The queue and its writer thread. ``connect`` opens a store (raising when the database is unreachable)."""

    def __init__(self, connect: Callable[[], PgWebhookStore], tables: Sequence[tuple[str, str]], spool: Spool, *,
                 max_queue: int = 20_000, max_batch: int = 2_000,
                 on_stored: Callable[[set[str]], None] | None = None) -> None:
        self._connect = connect
        self._tables = list(tables)
        self.spool = spool
        self.max_batch = max_batch
        # A deque and an event rather than queue.Queue: appending is lock-free (the request side is the hot path)
        # and the event is usually set already under load, so a request pays almost nothing to hand over.
        self.max_queue = max_queue
        self._queue: deque[tuple[StoredEvent, Waiter]] = deque()
        self._ready = threading.Event()
        self._store: PgWebhookStore | None = None
        self._next_try = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="elt-webhook-writer", daemon=True)
        self._refused: dict[str, list[int]] = {}
        self._refused_lock = threading.Lock()
        self._on_stored = on_stored
        self.database_up = False
        self._warned = False
        self.log = get_logger(component="webhooks")

    # --- the request side ----------------------------------------------------------------

    def start(self) -> None:
        # Two threads hand every event over (the server's loop and this writer). With Python's default 5 ms
        # switch interval, a thread wanting the GIL waits up to 5 ms each time; 0.5 ms keeps the hand-over
        # short (the same setting elt.prefetch uses while a producer thread runs).
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL))
        self._thread.start()

    def overloaded(self) -> str | None:
        """Why a new event cannot be accepted now (503), or None."""
        if self.spool.full():
            return (f"the local spool holds {self.spool.bytes:,} bytes (limit {self.spool.limit:,}) while the database"
                    " is unreachable")
        if len(self._queue) >= self.max_queue:
            return "the ingest queue is full"
        if self._stop.is_set():
            return "the server is shutting down"
        return None

    def submit(self, event: StoredEvent) -> asyncio.Future[Outcome]:
        """Queue ``event`` (from the server's event loop); the future resolves once it is committed or spooled.

        Raises queue.Full when the queue is full.
        """
        if len(self._queue) >= self.max_queue:
            raise queue.Full
        waiter = Waiter(asyncio.get_running_loop())
        self._queue.append((event, waiter))
        self._ready.set()
        return waiter.future

    def refused(self, table: str, *, signature: bool) -> None:
        """Count a request refused by the source of ``table`` (flushed to its counters with the next commit)."""
        with self._refused_lock:
            counts = self._refused.setdefault(table, [0, 0])
            counts[0 if signature else 1] += 1

    @property
    def queued(self) -> int:
        return len(self._queue)

    # --- shutting down -----------------------------------------------------------------------

    def stop(self, timeout: float = 30.0) -> None:
        """Store (or spool) everything queued, then stop the writer."""
        self._stop.set()
        self._thread.join(timeout)
        if self._store is not None:
            self._store.close()
        self.spool.close()

    # --- the writer ----------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._database()  # connect at start (tables exist, health says up) and retry while unreachable
            items = self._take()
            if self._database() and self.spool.pending:
                self._drain_one()
            if items:
                self._write(items)
            elif self._refused and self._database():
                try:
                    self._commit([])  # refusals counted while no event came in
                except Exception as exc:
                    self._down(exc)
            elif self._stop.is_set() and not self._queue:
                break
        # Last chance to drain what was spooled while the database was away.
        while self.spool.pending and self._database() and self._drain_one():
            pass

    def _take(self) -> list[tuple[StoredEvent, Waiter]]:
        # Clear, then look: an append after the look sets the event again, so no wake-up is lost.
        self._ready.clear()
        if not self._queue:
            self._ready.wait(0.2)
        items: list[tuple[StoredEvent, Waiter]] = []
        pop = self._queue.popleft
        try:
            while len(items) < self.max_batch:
                items.append(pop())
        except IndexError:
            pass
        return items

    def _database(self) -> bool:
        """Whether a store is open (opening one when the last try is old enough)."""
        if self._store is not None:
            return True
        if time.monotonic() < self._next_try:
            return False
        try:
            store = self._connect()
            store.prepare(self._tables)
        except Exception as exc:
            self._down(exc)
            return False
        self._store = store
        if not self.database_up:
            self.log.info("database reachable: storing events directly", spooled_bytes=self.spool.bytes)
        self.database_up = True
        return True

    def _down(self, exc: BaseException) -> None:
        if self.database_up or self._store is not None or not self._warned:
            self._warned = True
            self.log.error("database unreachable: events go to the local spool until it returns",
                           error=f"{type(exc).__name__}: {exc}".strip(), spool=str(self.spool.folder))
        self.database_up = False
        if self._store is not None:
            self._store.close()
            self._store = None
        self._next_try = time.monotonic() + RETRY_EVERY

    def _flush_refused(self, store: PgWebhookStore) -> dict[str, list[int]]:
        with self._refused_lock:
            refused, self._refused = self._refused, {}
        if refused:
            store.count_refused({s: (c[0], c[1]) for s, c in refused.items()})
        return refused

    def _restore_refused(self, refused: dict[str, list[int]]) -> None:
        with self._refused_lock:
            for source, (signature, other) in refused.items():
                counts = self._refused.setdefault(source, [0, 0])
                counts[0] += signature
                counts[1] += other

    def _commit(self, events: Sequence[StoredEvent]) -> set[tuple[str, str]]:
        """Store ``events`` in one transaction (raises when it did not commit)."""
        assert self._store is not None
        store = self._store
        refused: dict[str, list[int]] = {}
        try:
            new = store.store(events, uuid.uuid4().hex)
            refused = self._flush_refused(store)
            store.commit()
        except BaseException:
            store.rollback()
            self._restore_refused(refused)
            raise
        tables = {t for t, _ in new}
        if tables and self._on_stored is not None:
            self._on_stored(tables)
        return new

    def _write(self, items: list[tuple[StoredEvent, Waiter]]) -> None:
        events = [e for e, _ in items]
        if not self.spool.pending and self._database():
            try:
                new = self._commit(events)
            except psycopg.DataError as exc:
                # One event the database refuses (checked before acknowledging, so rare): store the rest one by one.
                self.log.warning("a group of events was refused; storing them one by one", error=str(exc))
                self._one_by_one(items)
                return
            except Exception as exc:
                self._down(exc)
            else:
                seen: set[tuple[str, str]] = set()
                answers = []
                for event, waiter in items:
                    key = (event.table, event.event_id)
                    fresh = key in new and key not in seen
                    seen.add(key)
                    answers.append((waiter, STORED if fresh else DUPLICATE))
                _settle(answers)
                return
        self._spool(items)

    def _one_by_one(self, items: list[tuple[StoredEvent, Waiter]]) -> None:
        for event, waiter in items:
            try:
                new = self._commit([event])
            except psycopg.DataError as exc:
                _settle([(waiter, Outcome("refused", f"the database cannot store this payload: {exc}".strip()))])
            except Exception as exc:
                self._down(exc)
                self._spool([(event, waiter)])
            else:
                _settle([(waiter, STORED if new else DUPLICATE)])

    def _spool(self, items: list[tuple[StoredEvent, Waiter]]) -> None:
        try:
            self.spool.append([e for e, _ in items])
        except OSError as exc:
            self.log.error("the local spool refused events; senders get 503 and retry", error=str(exc))
            unavailable = Outcome("unavailable", f"cannot spool: {exc}")
            _settle([(waiter, unavailable) for _, waiter in items])
            return
        _settle([(waiter, SPOOLED) for _, waiter in items])

    def _drain_one(self) -> bool:
        """Store the oldest spool segment (sealing the open one first when it is the only one); True when done."""
        path = self.spool.oldest_sealed()
        if path is None:
            self.spool.seal()
            path = self.spool.oldest_sealed()
            if path is None:
                return False
        events = list(self.spool.read(path))
        try:
            for start in range(0, len(events), DRAIN_CHUNK):
                self._drain_chunk(events[start:start + DRAIN_CHUNK])
        except Exception as exc:
            self._down(exc)
            return False
        self.spool.remove(path)
        self.log.info("spooled events stored", segment=path.name, events=len(events), spool_bytes_left=self.spool.bytes)
        return True

    def _drain_chunk(self, events: list[StoredEvent]) -> None:
        try:
            self._commit(events)
        except psycopg.DataError:
            for event in events:
                try:
                    self._commit([event])
                except psycopg.DataError as exc:
                    # Acknowledged long ago, so it must not vanish: keep it beside the spool for a person to see.
                    self.spool.append_rejected(event, str(exc))


def _settle(answers: list[tuple[Waiter, Outcome]]) -> None:
    """Answer waiting requests: one wake-up of each event loop per group, not one per request."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Waiter, Outcome]]] = {}
    for waiter, outcome in answers:
        by_loop.setdefault(waiter.loop, []).append((waiter, outcome))
    for loop, group in by_loop.items():
        try:
            loop.call_soon_threadsafe(_set_results, group)
        except RuntimeError:
            pass  # the loop is closed: nobody is waiting any more


def _set_results(group: list[tuple[Waiter, Outcome]]) -> None:
    for waiter, outcome in group:
        # A sender that hung up cancelled its wait; its event is stored all the same.
        if not waiter.future.done():
            waiter.future.set_result(outcome)
