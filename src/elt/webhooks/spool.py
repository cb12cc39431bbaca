"""A local durable spool: events acknowledged while the database is unreachable, kept on disk in order.

The spool is a folder of segment files (``<sequence>.jsonl``), one JSON line per
event. A group of events is written and ``fsync``'d before any of its senders
gets the 2xx, so a crash or power cut loses nothing acknowledged. A line torn
by a crash mid-write was never acknowledged and is skipped on reading.
Segments are drained oldest first and deleted only after their events
committed; re-storing a segment after a crash is harmless, because storing is
idempotent by event id.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

import orjson

from elt.loaders.postgres.webhooks import StoredEvent


def _fsync_dir(path: Path) -> None:
    # A new or deleted file is durable only once its folder entry is.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """Segment files under ``folder``; ``limit`` bytes in all before :meth:`full` says so.

    Only this process's writer thread touches a spool; two servers must not share one folder.
    """

    def __init__(self, folder: Path, limit: int = 256 * 1024 * 1024) -> None:
        self.folder = folder
        self.limit = limit
        self.folder.mkdir(parents=True, exist_ok=True)
        self._current: IO[bytes] | None = None
        self._current_path: Path | None = None
        self.bytes = sum(p.stat().st_size for p in self.segments())

    def segments(self) -> list[Path]:
        """Segment files, oldest first (the open one last)."""
        return sorted(self.folder.glob("[0-9]*.jsonl"))  # not rejected.jsonl

    @property
    def pending(self) -> bool:
        return self.bytes > 0

    def full(self) -> bool:
        return self.bytes >= self.limit

    def append(self, events: Sequence[StoredEvent]) -> None:
        """Write ``events`` to the open segment and fsync it (raises OSError when the disk refuses)."""
        if self._current is None:
            existing = self.segments()
            number = int(existing[-1].stem) + 1 if existing else 1
            self._current_path = self.folder / f"{number:012d}.jsonl"
            self._current = open(self._current_path, "ab")  # noqa: SIM115 - kept open across appends
            _fsync_dir(self.folder)
        data = b"".join(
            orjson.dumps({"source": e.source, "table": e.table, "id": e.event_id, "body": e.body, "headers": e.headers,
                          "received_at": e.received_at.isoformat(), "hash": e.body_hash}) + b"\n"
            for e in events)
        self._current.write(data)
        self._current.flush()
        os.fsync(self._current.fileno())
        self.bytes += len(data)

    def seal(self) -> None:
        """Close the open segment: the next append starts a new one (so draining never reads a growing file)."""
        if self._current is not None:
            self._current.close()
            self._current = None
            self._current_path = None

    def oldest_sealed(self) -> Path | None:
        for path in self.segments():
            if path != self._current_path:
                return path
        return None

    @staticmethod
    def read(path: Path) -> Iterator[StoredEvent]:
        data = path.read_bytes()
        for line in data.split(b"\n")[:-1]:  # the part after the last newline is a torn, unacknowledged write
            try:
                item = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # torn by a crash before its fsync: never acknowledged
            yield StoredEvent(source=item["source"], table=item["table"], event_id=item["id"], body=item["body"],
                              headers=item["headers"], received_at=dt.datetime.fromisoformat(item["received_at"]),
                              body_hash=item["hash"])

    def remove(self, path: Path) -> None:
        size = path.stat().st_size
        path.unlink()
        _fsync_dir(self.folder)
        self.bytes = max(0, self.bytes - size)

    def append_rejected(self, event: StoredEvent, reason: str) -> None:
        """Keep an acknowledged event the database refuses in ``rejected.jsonl`` (never deleted by elt)."""
        with open(self.folder / "rejected.jsonl", "ab") as f:
            f.write(orjson.dumps({"source": event.source, "id": event.event_id, "body": event.body,
                                  "reason": reason}) + b"\n")
            f.flush()
            os.fsync(f.fileno())

    def close(self) -> None:
        self.seal()
