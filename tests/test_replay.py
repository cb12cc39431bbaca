"""Dead-letter replay follows each strategy's rule: it never undoes newer data and never loads a problem as a record."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from elt import Batch, Cursor, Extractor, Pipeline
from elt.runner import Runner
from elt.state import StreamState
from tests.helpers import list_stream, run


class Strict(pydantic.BaseModel):
    id: int
    price: float


def payloads(db: Any, relation: str) -> list[Any]:
    return [r["_raw_payload"] for r in db.execute(f"SELECT _raw_payload FROM {relation} ORDER BY _row_seq")]


@pytest.mark.parametrize("strategy", ["upsert", "append_dedup"])
@pytest.mark.parametrize("cursor", [None, "updated_at"])
def test_replay_never_makes_an_older_version_the_current_one(loader, db, strategy, cursor):
    records: list[dict[str, Any]] = [{"id": 1, "price": "n/a", "updated_at": "2026-01-01T00:00:00Z"}]
    settings: dict[str, Any] = {"primary_key": "id", "write_strategy": strategy, "contract": Strict, "max_bad_ratio": 1}
    if cursor:
        settings["cursor"] = cursor
    stream = list_stream(records, **settings)
    pipeline = Pipeline("shop", streams=[stream])
    assert run(pipeline, loader).status == "partial"  # version 1 is dead-lettered
    # Version 2 arrives later and loads.
    records[:] = [{"id": 1, "price": 2.0, "updated_at": "2026-01-02T00:00:00Z"}]
    run(pipeline, loader)

    stream.contract = None  # the fix that makes version 1 loadable
    result = Runner(pipeline, loader=loader).replay()
    assert result.status == "success"
    assert result.streams["items"].superseded == 1 and result.streams["items"].loaded == 0
    current = "stg.shop_items" if strategy == "append_dedup" else "raw.shop_items"
    assert [p["price"] for p in payloads(db, current)] == [2.0]
    letter = db.execute("SELECT resolved_at, resolution FROM pipeline.dead_letter").fetchone()
    assert letter["resolved_at"] is not None and letter["resolution"].startswith("superseded")


def test_replay_loads_a_newer_version_over_an_older_one(loader, db):
    records: list[dict[str, Any]] = [{"id": 1, "price": 1.0, "updated_at": "2026-01-01T00:00:00Z"}]
    stream = list_stream(records, primary_key="id", cursor="updated_at", write_strategy="upsert", contract=Strict,
                         max_bad_ratio=1)
    pipeline = Pipeline("shop", streams=[stream])
    run(pipeline, loader)
    records[:] = [{"id": 1, "price": "3,50", "updated_at": "2026-01-03T00:00:00Z"}]
    assert run(pipeline, loader).status == "partial"
    stream.contract = None
    result = Runner(pipeline, loader=loader).replay()
    assert result.status == "success" and result.streams["items"].loaded == 1
    assert [p["price"] for p in payloads(db, "raw.shop_items")] == ["3,50"]


def test_replay_on_delete_reload_adds_to_the_partition_and_deletes_nothing(loader, db):
    records = [{"id": i, "day": "2026-01-01", "price": 1.0} for i in range(1, 6)]
    records.append({"id": 6, "day": "2026-01-01", "price": "n/a"})
    stream = list_stream(records, primary_key="id", partition_by="day", write_strategy="delete_reload",
                         contract=Strict, max_bad_ratio=1)
    pipeline = Pipeline("shop", streams=[stream])
    run(pipeline, loader)
    assert len(payloads(db, "raw.shop_items")) == 5
    stream.contract = None
    assert Runner(pipeline, loader=loader).replay().status == "success"
    assert sorted(p["id"] for p in payloads(db, "raw.shop_items")) == [1, 2, 3, 4, 5, 6]


class Reader(Extractor):
    """Rejects a line it cannot read, as the file extractor does: a problem, not a record."""

    name = "items"
    primary_key = "id"

    def extract(self, state: StreamState) -> Any:
        yield Batch([{"id": 1}], rejected=[({"file": "a.csv", "line": 3, "row": "1;2;"}, "line 3 has 3 fields, not 2")])


def test_a_dead_letter_that_describes_a_problem_is_not_replayed_as_a_record(loader, db):
    pipeline = Pipeline("shop", streams=[Reader(max_bad_ratio=1)])
    run(pipeline, loader)
    assert db.execute("SELECT kind FROM pipeline.dead_letter").fetchone()["kind"] == "problem"
    result = Runner(pipeline, loader=loader).replay()
    assert result.status == "partial"
    assert "describe a problem in the source, not a record" in result.summary.error_message
    assert "drop it again" in result.summary.error_message
    assert [p["id"] for p in payloads(db, "raw.shop_items")] == [1]  # the problem was not loaded as a row
    assert db.execute("SELECT resolved_at FROM pipeline.dead_letter").fetchone()["resolved_at"] is None


def test_replay_on_replace_is_refused_with_the_fix(loader, db):
    stream = list_stream([{"id": 1, "price": "x"}], primary_key="id", write_strategy="replace", contract=Strict,
                         max_bad_ratio=1)
    pipeline = Pipeline("shop", streams=[stream])
    run(pipeline, loader)
    result = Runner(pipeline, loader=loader).replay()
    assert result.status == "failed" and "`elt dead-letter resolve`" in result.summary.error_message


def test_a_cursor_declared_as_kind_keeps_replay_comparisons_typed(loader, db):
    # Replay compares cursors in the column's own type: 10 > 9 as integers, not as text.
    records: list[dict[str, Any]] = [{"id": 1, "seq": "9", "price": 1.0}]
    stream = list_stream(records, primary_key="id", cursor=Cursor("seq", kind="integer"), write_strategy="upsert",
                         contract=Strict, max_bad_ratio=1)
    pipeline = Pipeline("shop", streams=[stream])
    run(pipeline, loader)
    records[:] = [{"id": 1, "seq": "10", "price": "n/a"}]
    run(pipeline, loader)
    stream.contract = None
    assert Runner(pipeline, loader=loader).replay().streams["items"].loaded == 1
    assert [p["seq"] for p in payloads(db, "raw.shop_items")] == ["10"]


@pytest.mark.parametrize("strategy", ["upsert", "append_dedup"])
@pytest.mark.parametrize("cursor", [None, "updated_at"])
def test_a_stored_version_re_sent_unchanged_after_the_letter_wins(loader, db, strategy, cursor):
    # The source sent v=1, then a bad v, then v=1 again (unchanged: nothing written, _loaded_at not moved).
    # Nothing proves the letter newer than what is stored, so replay must not make it current.
    stamp = "2026-01-01T00:00:00Z"  # the same cursor value every time: a tie
    records: list[dict[str, Any]] = [{"id": 1, "price": 1.0, "updated_at": stamp}]
    settings: dict[str, Any] = {"primary_key": "id", "write_strategy": strategy, "contract": Strict, "max_bad_ratio": 1}
    if cursor:
        settings["cursor"] = cursor
    stream = list_stream(records, **settings)
    pipeline = Pipeline("shop", streams=[stream])
    run(pipeline, loader)
    records[:] = [{"id": 1, "price": "x", "updated_at": stamp}]
    run(pipeline, loader, full_refresh=True)
    records[:] = [{"id": 1, "price": 1.0, "updated_at": stamp}]
    run(pipeline, loader, full_refresh=True)
    stream.contract = None
    result = Runner(pipeline, loader=loader).replay()
    assert result.status == "success" and result.streams["items"].superseded == 1
    current = "stg.shop_items" if strategy == "append_dedup" else "raw.shop_items"
    assert [p["price"] for p in payloads(db, current)] == [1.0]


def test_of_two_letters_of_one_key_the_newer_is_replayed(loader, db):
    records: list[dict[str, Any]] = [{"id": 1, "price": "first"}]
    stream = list_stream(records, primary_key="id", write_strategy="upsert", contract=Strict, max_bad_ratio=1)
    pipeline = Pipeline("shop", streams=[stream])
    run(pipeline, loader)
    records[:] = [{"id": 1, "price": "second"}]
    run(pipeline, loader)
    stream.contract = None
    result = Runner(pipeline, loader=loader).replay()
    assert result.streams["items"].loaded == 1 and result.streams["items"].superseded == 1
    assert [p["price"] for p in payloads(db, "raw.shop_items")] == ["second"]


def test_a_dead_letter_whose_stored_copy_is_altered_is_never_replayed_as_a_record(loader, db):
    # Found by a new-user trial: jsonb cannot hold \u0000, so the letter keeps U+FFFD instead,
    # and replay loaded that altered record (with a NUL in its key, even) as if the source sent it.
    records = [{"id": "\u0000", "v": 1}, {"id": "ok", "k\u0000": 2}, {"id": "fine", "v": 3}]
    pipeline = Pipeline("shop", streams=[list_stream(records, primary_key="id", max_bad_ratio=1)])
    assert run(pipeline, loader).status == "partial"
    kinds = [r["kind"] for r in db.execute("SELECT kind FROM pipeline.dead_letter ORDER BY id")]
    assert kinds == ["problem", "problem"]

    result = Runner(pipeline, loader=loader).replay()
    assert result.status == "partial" and "not a record" in result.summary.error_message
    assert [p["id"] for p in payloads(db, "raw.shop_items")] == ["fine"]
    assert db.execute("SELECT count(*) AS n FROM pipeline.dead_letter WHERE resolved_at IS NULL").fetchone()["n"] == 2
