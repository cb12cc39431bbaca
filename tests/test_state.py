"""The watermark tracker: cursor kinds, the sort check and completeness, against a real PostgreSQL."""

from __future__ import annotations

import datetime as dt
import decimal
import re
from typing import Any

import pydantic
import pytest

from elt import Batch, Cursor, Extractor, Pipeline, extractor
from elt.errors import ConfigError
from elt.state import StreamState, Watermark, since_value
from tests.helpers import list_stream, run


def state_value(db: Any, key: str = "watermark") -> Any:
    row = db.execute("SELECT value FROM pipeline.state WHERE key = %s", (key,)).fetchone()
    return row["value"] if row else None


def column_type(db: Any, table: str, column: str) -> str:
    return db.execute("SELECT data_type FROM information_schema.columns WHERE table_schema = 'raw'"
                      " AND table_name = %s AND column_name = %s", (table, column)).fetchone()["data_type"]


# --- cursor kinds ---------------------------------------------------------------------


class Strict(pydantic.BaseModel):
    id: int
    ok: bool


def test_a_first_batch_of_rejects_does_not_lock_a_timestamp_cursor_into_text(loader, db):
    rejected_first = [{"id": i, "ok": "maybe", "at": f"2026-01-01T00:00:{i:02d}Z"} for i in range(1, 4)]
    good = [{"id": i, "ok": True, "at": f"2026-01-02T00:00:{i:02d}Z"} for i in range(4, 8)]
    stream = list_stream(rejected_first + good, primary_key="id", cursor="at", contract=Strict, batch_size=3,
                         max_bad_ratio=1)
    result = run(Pipeline("shop", streams=[stream]), loader)
    assert result.summary.rows_rejected == 3 and result.summary.rows_loaded == 4
    assert column_type(db, "shop_items", "at") == "timestamp with time zone"
    assert state_value(db) == {"kind": "timestamp", "value": "2026-01-02T00:00:07+00:00"}


def test_a_declared_kind_wins_and_since_arrives_typed(loader, db):
    seen: list[Any] = []

    class Codes(Extractor):
        name = "codes"
        primary_key = "id"
        # Text that looks like numbers: declared, so "10" sorts after "9" only as the user says.
        cursor = Cursor("seq", kind="integer")

        def records(self, state: StreamState) -> Any:
            seen.append(state.since)
            yield from ({"id": i, "seq": str(i)} for i in range(8, 12) if state.since is None or i >= state.since)

    pipeline = Pipeline("shop", streams=[Codes()])
    run(pipeline, loader)
    run(pipeline, loader)
    assert seen == [None, 11]  # an int, as README promises for integer cursors
    assert column_type(db, "shop_codes", "seq") == "bigint"


@pytest.mark.parametrize(
    ("cursor", "message"),
    [
        (Cursor("name", kind="text", lookback=5), "has no arithmetic"),
        (Cursor("seq", kind="integer", lookback=dt.timedelta(hours=1)), "give the lookback as a number"),
        (Cursor("day", kind="date", lookback=2), "needs its lookback as a timedelta"),
        (Cursor("seq", kind="integer", lookback=2.5), "whole-number lookback"),
        (Cursor("seq", kind="uuid"), "is not one of timestamp"),
    ],
)
def test_a_lookback_that_cannot_apply_is_refused_when_declared(cursor, message):
    with pytest.raises(ConfigError, match=message):
        extractor(lambda: iter(()), name="items", primary_key="id", cursor=cursor)


def test_a_lookback_on_a_cursor_that_turns_out_to_be_text_fails_the_stream(loader, db):
    stream = list_stream([{"id": 1, "name": "alpha"}], primary_key="id", cursor=Cursor("name", lookback=10))
    result = run(Pipeline("shop", streams=[stream]), loader)
    assert result.status == "failed"
    assert "the cursor holds text, which has no arithmetic, so lookback=10 cannot apply" in result.summary.error_message


def test_a_non_integral_value_of_an_integer_cursor_is_dead_lettered_not_truncated(loader, db):
    records = [{"id": 1, "seq": 1}, {"id": 2, "seq": 2.5}, {"id": 3, "seq": "3.7"}, {"id": 4, "seq": 4.0}]
    stream = extractor(lambda: iter(records), name="items", primary_key="id", cursor=Cursor("seq", kind="integer"),
                       max_bad_ratio=1)
    result = run(Pipeline("shop", streams=[stream]), loader)
    letters = db.execute("SELECT source_record, error_message FROM pipeline.dead_letter ORDER BY id").fetchall()
    assert [letter["source_record"]["id"] for letter in letters] == [2, 3]
    assert all("is not a valid integer" in letter["error_message"] for letter in letters)
    assert result.status == "partial" and state_value(db)["value"] == 4


# --- the sort check -------------------------------------------------------------------------


def test_an_unsorted_stream_fails_at_the_batch_that_goes_back_and_keeps_the_last_good_watermark(loader, db):
    # Batches of 3: the third batch goes back to 2026-01-01, below what batch two committed.
    days = [5, 6, 7, 8, 9, 10, 1, 2, 3, 11, 12]
    records = [{"id": i, "at": f"2026-01-{d:02d}T00:00:00Z"} for i, d in enumerate(days, start=1)]
    stream = extractor(lambda: iter(records), name="items", primary_key="id", cursor="at", batch_size=3)
    result = run(Pipeline("shop", streams=[stream]), loader)
    assert result.status == "failed"
    message = result.summary.error_message
    assert "records are not in at order" in message and "set sorted_by_cursor = False" in message
    assert "--full-refresh" in message
    # The batch that went back is loaded (its rows are good data); the watermark stays at batch two.
    assert db.execute("SELECT count(*) AS n FROM raw.shop_items").fetchone()["n"] == 9
    assert state_value(db)["value"] == "2026-01-10T00:00:00+00:00"


def test_going_back_within_the_lookback_is_not_a_sort_error(loader, db):
    records = [{"id": 1, "seq": 10}, {"id": 2, "seq": 12}, {"id": 3, "seq": 11}, {"id": 4, "seq": 13}]
    stream = extractor(lambda: iter(records), name="items", primary_key="id", cursor=Cursor("seq", lookback=5),
                       batch_size=2)
    assert run(Pipeline("shop", streams=[stream]), loader).status == "success"


def test_an_unsorted_read_that_fails_half_way_stores_no_high_watermark(loader, db):
    # sorted_by_cursor = False: the watermark waits for a complete read, so a failure leaves none.
    def read() -> Any:
        yield from ({"id": i, "seq": s} for i, s in enumerate([40, 10, 30], start=1))
        raise RuntimeError("page 2 failed")

    stream = extractor(read, name="items", primary_key="id", cursor="seq", sorted_by_cursor=False, batch_size=2)
    result = run(Pipeline("shop", streams=[stream]), loader)
    assert result.status == "failed" and state_value(db) is None


@pytest.mark.parametrize("strategy", ["upsert", "append_dedup"])
@pytest.mark.parametrize("kind", ["timestamp", "date"])
def test_a_cursor_value_far_in_the_future_is_dead_lettered_and_the_fixed_record_loads(loader, db, kind, strategy):
    # A placeholder year 9999 would otherwise become the watermark (every later run reading
    # nothing, with success) and the newest version of its key for good: the fixed record,
    # with a real date, would then be "older" and never replace it.
    def value(day: dt.date) -> str:
        return day.isoformat() if kind == "date" else f"{day.isoformat()}T08:00:00Z"

    today = dt.datetime.now(dt.UTC).date()
    records = [{"id": i, "at": value(today - dt.timedelta(days=10 - i))} for i in range(1, 7)]
    records.append({"id": 7, "at": value(dt.date(9999, 12, 31))})
    stream = list_stream(records, primary_key="id", cursor=Cursor("at", kind=kind), write_strategy=strategy,
                         batch_size=3, max_bad_ratio=0.5)
    pipeline = Pipeline("shop", streams=[stream])
    result = run(pipeline, loader)

    assert result.status == "partial" and result.summary.rows_rejected == 1
    letter = db.execute("SELECT error_message FROM pipeline.dead_letter").fetchone()["error_message"]
    assert "9999-12-31" in letter and "ahead of the clock" in letter
    assert db.execute("SELECT count(*) AS n FROM raw.shop_items").fetchone()["n"] == 6
    assert str(state_value(db)["value"]).startswith(value(today - dt.timedelta(days=4))[:10])

    # The source is fixed: the record loads as the current version of its key.
    records[-1] = {"id": 7, "at": value(today), "fixed": True}
    assert run(pipeline, loader).status == "success"
    current = "stg.shop_items" if strategy == "append_dedup" else "raw.shop_items"
    row = db.execute(f"SELECT _raw_payload AS p FROM {current} WHERE _raw_payload->>'id' = '7'").fetchall()
    assert [r["p"].get("fixed") for r in row] == [True]
    assert str(state_value(db)["value"]).startswith(today.isoformat())


def test_a_high_water_far_in_the_future_from_the_extractor_holds_the_watermark(loader, db):
    # An extractor may report its own high-water mark (Batch.high_water): beyond the clock, it
    # is not committed, and the run says why.
    class Reader(Extractor):
        name = "items"
        primary_key = "id"
        cursor = Cursor("at", kind="timestamp")

        def extract(self, state: StreamState) -> Any:
            yield Batch([{"id": 1, "at": "2026-01-01T00:00:00Z"}], high_water="9999-12-31T00:00:00Z")

    result = run(Pipeline("shop", streams=[Reader()]), loader)
    assert result.status == "partial" and "ahead of this machine's clock" in result.summary.error_message
    assert state_value(db) is None
    assert db.execute("SELECT count(*) AS n FROM raw.shop_items").fetchone()["n"] == 1


# --- completeness ----------------------------------------------------------------------------


class MaybeSkipping(Extractor):
    """Reports a possible skip (as offset paging over moving data does) in its second batch."""

    name = "items"
    primary_key = "id"
    records_by_run: list[list[dict[str, Any]]] = []
    skip = True

    def extract(self, state: StreamState) -> Any:
        records = self.records_by_run.pop(0)
        yield Batch(records[:2])
        yield Batch(records[2:], incomplete=["key 7 was seen twice: the data moved under offset paging;"
                                             " use keyset paging"] if self.skip else [])


def test_a_read_that_may_have_skipped_records_is_partial_and_keeps_the_replace_table(loader, db):
    stream = MaybeSkipping(write_strategy="replace", skip=False)
    stream.records_by_run = [[{"id": i} for i in range(1, 6)], [{"id": i, "v": 2} for i in range(1, 4)]]
    pipeline = Pipeline("shop", streams=[stream])
    assert run(pipeline, loader).status == "success"

    stream.skip = True
    result = run(pipeline, loader)
    assert result.status == "partial" and result.exit_code == 3
    message = result.summary.error_message
    assert "may have skipped records: key 7 was seen twice" in message and "keyset paging" in message
    assert "the replace table was kept as it was" in message
    assert sorted(r["id"] for r in db.execute("SELECT _raw_payload->'id' AS id FROM raw.shop_items")) == [1, 2, 3, 4, 5]
    log = db.execute("SELECT status, streams FROM pipeline.execution_log WHERE id = %s", (result.run_id,)).fetchone()
    assert log["status"] == "partial" and log["streams"]["items"]["incomplete"]


def test_a_possible_skip_holds_the_watermark_of_an_incremental_stream(loader, db):
    stream = MaybeSkipping(cursor="seq", write_strategy="upsert")
    stream.records_by_run = [[{"id": i, "seq": i} for i in range(1, 6)]]
    result = run(Pipeline("shop", streams=[stream]), loader)
    assert result.status == "partial"
    # The first batch (seq 1-2) was proven complete; the one that reported a possible skip was not.
    assert state_value(db)["value"] == 2
    assert db.execute("SELECT count(*) AS n FROM raw.shop_items").fetchone()["n"] == 5


def test_an_empty_replace_read_keeps_the_table_unless_allowed(loader, db):
    records = [{"id": i} for i in range(1, 4)]
    stream = list_stream(records, primary_key="id", write_strategy="replace")
    pipeline = Pipeline("shop", streams=[stream])
    run(pipeline, loader)
    records.clear()
    result = run(pipeline, loader)
    assert result.status == "failed" and "set allow_empty = True" in result.summary.error_message
    assert db.execute("SELECT count(*) AS n FROM raw.shop_items").fetchone()["n"] == 3
    stream.allow_empty = True
    assert run(pipeline, loader).status == "success"
    assert db.execute("SELECT count(*) AS n FROM raw.shop_items").fetchone()["n"] == 0


def test_a_replace_read_with_rejected_records_keeps_the_table_unless_partial_loads_are_accepted(loader, db):
    class Strict(pydantic.BaseModel):
        id: int
        v: int

    records = [{"id": 1, "v": 1}, {"id": 2, "v": 1}]
    stream = list_stream(records, primary_key="id", write_strategy="replace", contract=Strict)
    pipeline = Pipeline("shop", streams=[stream])
    run(pipeline, loader)
    records[:] = [{"id": 1, "v": "x"}, {"id": 2, "v": 2}]
    result = run(pipeline, loader)
    assert result.status == "failed" and "would drop their rows" in result.summary.error_message
    stored = {r["p"]["id"]: r["p"]["v"] for r in db.execute("SELECT _raw_payload AS p FROM raw.shop_items")}
    assert stored == {1: 1, 2: 1}  # kept as it was
    stream.max_bad_ratio = 0.5  # partial loads accepted: the good record is swapped in
    assert run(pipeline, loader).status == "partial"
    assert [r["p"]["id"] for r in db.execute("SELECT _raw_payload AS p FROM raw.shop_items")] == [2]


def test_a_timestamp_cursor_from_a_source_in_another_zone_is_kept_and_handed_back_in_utc(loader, db):
    seen: list[Any] = []

    class Berlin(Extractor):
        name = "orders"
        primary_key = "id"
        cursor = "at"

        def records(self, state: StreamState) -> Any:
            seen.append(state.since)
            # The same instants a session at +02:00 (or an API answering in local time) gives.
            yield from [{"id": 1, "at": "2026-01-31T09:00:00+02:00"}, {"id": 2, "at": "2026-01-31T10:00:00+02:00"}]

    pipeline = Pipeline("shop", streams=[Berlin()])
    run(pipeline, loader)
    assert state_value(db) == {"kind": "timestamp", "value": "2026-01-31T08:00:00+00:00"}
    run(pipeline, loader)
    run(pipeline, loader, since="2026-01-31T06:30:00+02:00")  # a backfill given in local time
    assert seen[0] is None
    assert [(s.isoformat(), s.tzinfo) for s in seen[1:]] == [
        ("2026-01-31T08:00:00+00:00", dt.UTC), ("2026-01-31T04:30:00+00:00", dt.UTC)]
    # A watermark an earlier version stored with its offset is read as UTC too.
    old = Watermark.from_json({"kind": "timestamp", "value": "2026-01-31T10:00:00+02:00"})
    assert old is not None and old.to_json()["value"] == "2026-01-31T08:00:00+00:00"


@pytest.mark.parametrize(
    ("value", "kind", "expected"),
    [("1200", None, 1200), ("12.5", None, decimal.Decimal("12.5")), ("2026-01-31", None, dt.datetime(2026, 1, 31, tzinfo=dt.UTC)),
     ("1200", "number", decimal.Decimal("1200")), ("abc", "text", "abc")],
)
def test_since_from_the_command_line_takes_the_cursors_kind(value, kind, expected):
    # Text from the command line: a number before any run is a number, not text that sorts "9" after "10".
    assert since_value("orders", "seq", value, kind) == expected


@pytest.mark.parametrize(
    ("value", "kind", "message"),
    [("garbage", None, "not a number, a date or an ISO-8601 timestamp"), ("NaN", None, "not a number"),
     ("12.5", "integer", "not a valid integer; give a whole number (1200)"),
     ("yesterday", "timestamp", "not a valid timestamp; give an ISO-8601 timestamp")],
)
def test_a_since_the_cursor_cannot_take_says_what_it_accepts(value, kind, message):
    with pytest.raises(ConfigError, match=re.escape(f"--since {value!r} for stream 'orders' (cursor 'seq'): {message}")):
        since_value("orders", "seq", value, kind)
