"""Write strategies: what each refuses when declared, and a matrix of strategy × cursor kind × failure point × replay.

Every cell loads an old version of a source, then a new version whose read
fails at a chosen point, then the new version again, then replays the one
record a contract rejected. After each step it compares the payloads read back
from the destination with the source records themselves, and checks the
watermark and the status.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pydantic
import pytest

from elt import Cursor, Pipeline, extractor
from elt.errors import ConfigError
from elt.runner import Runner
from tests.helpers import run

STRATEGIES = ["append", "append_dedup", "upsert", "delete_reload", "replace"]
KINDS = ["timestamp", "integer", "text", "none"]
# Index of the record (in read order) at which the source raises: before anything, inside
# the second batch, exactly between two batches, in the middle of partition d1 (ids 13-24).
FAILURES = {"before": 0, "inside": 10, "between": 14, "in_partition": 18, "none": None}
BATCH = 7
BAD_ID = 13


class Strict(pydantic.BaseModel):
    id: int
    amount: float


def cursor_value(kind: str, version: int, i: int) -> Any:
    if kind == "timestamp":
        return f"2026-01-0{1 + version}T00:00:{i:02d}Z"
    if kind == "integer":
        return version * 1000 + i
    return f"v{version}-{i:03d}"


def source(version: int, n: int, kind: str) -> list[dict[str, Any]]:
    records = []
    for i in range(1, n + 1):
        record: dict[str, Any] = {"id": i, "v": version, "amount": "n/a" if i == BAD_ID else i * 1.5,
                                  "day": f"d{(i - 1) // 12}"}
        if kind != "none":
            record["c"] = cursor_value(kind, version, i)
        records.append(record)
    return records


def make_stream(strategy: str, kind: str, state: dict[str, Any]) -> Any:
    settings: dict[str, Any] = {"name": "items", "write_strategy": strategy, "batch_size": BATCH,
                                "contract": Strict, "max_bad_ratio": 1.0}
    if strategy != "append":
        settings["primary_key"] = "id"
    if strategy == "delete_reload":
        settings["partition_by"] = "day"
    if kind != "none":
        settings["cursor"] = Cursor("c", kind=kind)

    def read(since: Any) -> Any:
        rows = state["records"]
        if kind != "none" and since is not None:
            rows = [r for r in rows if _typed(kind, r["c"]) >= since]
        for n, row in enumerate(rows):
            if state.get("fail_at") is not None and n == state["fail_at"]:
                raise RuntimeError("the source went away")
            yield row

    return extractor(read, **settings)


def _typed(kind: str, value: Any) -> Any:
    if kind == "timestamp":
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return value


def current(db: Any, strategy: str) -> list[Any]:
    """The destination's current rows as payloads, the way a reader of that strategy sees them."""
    relation = "stg.shop_items" if strategy == "append_dedup" else "raw.shop_items"
    rows = db.execute(f"SELECT _raw_payload FROM {relation}").fetchall()
    return sorted((r["_raw_payload"] for r in rows), key=lambda p: (p["id"], p["v"]))


def expected(strategy: str, *versions: list[dict[str, Any]]) -> list[Any]:
    good = [[r for r in records if r["id"] != BAD_ID] for records in versions]
    if strategy == "append":  # every version stays
        rows = [r for records in good for r in records]
    else:  # the last version of each key
        rows = list({r["id"]: r for records in good for r in records}.values())
    return sorted(rows, key=lambda p: (p["id"], p["v"]))


def watermark(db: Any) -> Any:
    row = db.execute("SELECT value FROM pipeline.state WHERE key = 'watermark'").fetchone()
    return row["value"]["value"] if row else None


def stored_mark(kind: str, value: Any) -> Any:
    """A cursor value as the state stores it."""
    return _typed(kind, value).isoformat() if kind == "timestamp" else value


REFUSED = [(s, k) for s in ("delete_reload", "replace") for k in KINDS if k != "none"]


@pytest.mark.parametrize(("strategy", "kind"), REFUSED)
def test_a_cursor_with_a_replacing_strategy_is_refused_when_declared(strategy, kind):
    with pytest.raises(ConfigError) as raised:
        make_stream(strategy, kind, {"records": []})
    message = str(raised.value)
    assert "stream 'items'" in message and f"write_strategy {strategy}" in message
    assert "Remove the cursor" in message and "upsert or append_dedup" in message


CELLS = [(s, k, f) for s in STRATEGIES for k in KINDS for f in FAILURES if (s, k) not in REFUSED]


@pytest.mark.parametrize(("strategy", "kind", "failure"), CELLS)
def test_matrix(loader, db, strategy, kind, failure):
    state: dict[str, Any] = {"records": source(0, 30, kind)}
    stream = make_stream(strategy, kind, state)
    pipeline = Pipeline("shop", streams=[stream])
    first = run(pipeline, loader)
    old = list(state["records"])
    assert first.status == "partial"  # the bad record is dead-lettered, everything else loads
    assert current(db, strategy) == expected(strategy, old)
    mark_before = watermark(db)
    if kind != "none":
        assert mark_before == stored_mark(kind, cursor_value(kind, 0, 30))

    # A new version of every record plus five new ones; the read fails at the chosen point.
    new = source(1, 35, kind)
    state["records"], state["fail_at"] = new, FAILURES[failure]
    second = run(pipeline, loader)
    if failure == "none":
        assert second.status == "partial"  # only the bad record
        assert current(db, strategy) == expected(strategy, old, new)
    else:
        assert second.status == "failed"
        assert "the source went away" in second.summary.error_message
        read = new[:FAILURES[failure]]
        if strategy in ("delete_reload", "replace"):
            # Stream-atomic: a failed read changes nothing, not even a part of a partition.
            assert current(db, strategy) == expected(strategy, old)
        else:
            # Batches read before the failure stay loaded, and nothing else moved.
            assert current(db, strategy) == expected(strategy, old, read)
        if kind != "none":
            # The watermark covers exactly what was committed (the last record read before the failure).
            last = read[-1] if read and strategy not in ("delete_reload", "replace") else None
            assert watermark(db) == (stored_mark(kind, last["c"]) if last else mark_before)

    # The next run completes the read: the destination equals the source.
    state["fail_at"] = None
    third = run(pipeline, loader)
    # Partial only for the bad record, when this read covered it again (an incremental read may start after it).
    assert third.summary.rows_rejected <= 1
    assert third.status == ("partial" if third.summary.rows_rejected else "success"), third.summary.error_message
    assert current(db, strategy) == expected(strategy, old, new)
    if kind != "none":
        assert watermark(db) == stored_mark(kind, cursor_value(kind, 1, 35))

    # Replay the rejected record once the contract is loosened.
    stream.contract = None
    replay = Runner(pipeline, loader=loader).replay()
    bad_new = next(r for r in new if r["id"] == BAD_ID)
    letters = db.execute("SELECT resolved_at, resolution FROM pipeline.dead_letter ORDER BY id").fetchall()
    if strategy == "replace":
        assert replay.status == "failed" and "replace" in replay.summary.error_message
        assert all(letter["resolved_at"] is None for letter in letters)
        return
    assert replay.status == "success", replay.summary.error_message
    rows = current(db, strategy)
    assert bad_new in rows
    if strategy != "append":
        # Replay never lets an older version win: the bad record's old version (v0) is not current.
        assert [r for r in rows if r["id"] == BAD_ID] == [bad_new]
    # Everything else is exactly as it was: replay deletes nothing (delete_reload included).
    others = [r for r in rows if r["id"] != BAD_ID]
    assert others == [r for r in expected(strategy, old, new) if r["id"] != BAD_ID]
    assert all(letter["resolved_at"] is not None for letter in letters)
