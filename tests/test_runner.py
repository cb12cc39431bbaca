"""The runner against a real PostgreSQL: statuses, dead letters, watermarks, schema drift, replays."""

from __future__ import annotations

import datetime as dt

import pydantic
import pytest

from elt import Batch, Cursor, Extractor, Pipeline, extractor
from elt.errors import ConfigError
from tests.helpers import list_stream, run, table_rows


class Order(pydantic.BaseModel):
    id: int
    amount: float


def test_invalid_records_go_to_dead_letter_and_the_run_is_partial_within_ratio(loader, db):
    records = [{"id": i, "amount": i} for i in range(1, 19)]
    records += [{"id": 19, "amount": "lots"}, {"amount": 3}]  # bad contract; no key
    stream = list_stream(records, primary_key="id", contract=Order, max_bad_ratio=0.2)
    result = run(Pipeline("shop", streams=[stream]), loader)

    assert result.status == "partial"
    assert result.exit_code == 3
    assert (result.summary.rows_extracted, result.summary.rows_loaded, result.summary.rows_rejected) == (20, 18, 2)
    letters = table_rows(db, "pipeline.dead_letter", "stream_name, source_record, error_message, run_id", "id")
    assert [letter["source_record"] for letter in letters] == [{"id": 19, "amount": "lots"}, {"amount": 3}]
    assert "contract Order rejected the record: amount" in letters[0]["error_message"]
    assert "contract Order rejected the record: id: Field required" in letters[1]["error_message"]
    assert {letter["run_id"] for letter in letters} == {result.run_id}
    log = db.execute("SELECT * FROM pipeline.execution_log WHERE id = %s", (result.run_id,)).fetchone()
    assert log["status"] == "partial" and log["rows_rejected"] == 2 and log["completed_at"] is not None
    assert db.execute("SELECT count(*) AS n FROM raw.shop_items").fetchone()["n"] == 18


def test_a_record_without_its_key_is_rejected_by_name(loader, db):
    records = [{"id": 1}, {"id": ""}, {"name": "no id"}]
    result = run(Pipeline("shop", streams=[list_stream(records, primary_key="id", max_bad_ratio=1)]), loader)
    reasons = [r["error_message"] for r in table_rows(db, "pipeline.dead_letter", "error_message", "id")]
    assert reasons == ["primary key field 'id' is missing or empty"] * 2
    assert result.summary.rows_loaded == 1


def test_a_run_over_its_bad_ratio_fails_but_keeps_the_good_records(loader, db):
    records = [{"id": 1, "amount": 1}, {"id": 2, "amount": "x"}]
    result = run(Pipeline("shop", streams=[list_stream(records, primary_key="id", contract=Order)]), loader)
    assert result.status == "failed" and result.exit_code == 1
    assert "rejected 1 of 2 records (50.0%), more than its max_bad_ratio of 0.0%" in result.summary.error_message
    assert db.execute("SELECT count(*) AS n FROM raw.shop_items").fetchone()["n"] == 1


def test_the_same_bad_record_read_again_is_dead_lettered_once(loader, db):
    records = [{"id": 1, "amount": "x"}]
    pipeline = Pipeline("shop", streams=[list_stream(records, primary_key="id", contract=Order, max_bad_ratio=1)])
    run(pipeline, loader)
    run(pipeline, loader)
    assert db.execute("SELECT count(*) AS n FROM pipeline.dead_letter").fetchone()["n"] == 1


def test_equal_cursor_values_at_batch_boundaries_are_neither_lost_nor_duplicated(loader, db):
    # 25 records share one timestamp and straddle batches of 10; more arrive later
    # with that same timestamp, after the watermark already reached it.
    same = "2026-03-01T12:00:00+00:00"
    records = [{"id": i, "updated_at": same} for i in range(25)]
    stream = list_stream(records, primary_key="id", cursor="updated_at", batch_size=10)
    pipeline = Pipeline("shop", streams=[stream])
    run(pipeline, loader)
    records += [{"id": i, "updated_at": same} for i in range(25, 30)]
    records += [{"id": 30, "updated_at": "2026-03-01T12:00:01+00:00"}]
    second = run(pipeline, loader)

    ids = [r["id"] for r in table_rows(db, "raw.shop_items", "id", "id::int")]
    assert ids == [str(i) for i in range(31)]
    assert second.streams["items"].inserted == 6
    state = db.execute("SELECT value FROM pipeline.state WHERE key = 'watermark'").fetchone()["value"]
    assert state == {"kind": "timestamp", "value": "2026-03-01T12:00:01+00:00"}


def test_lookback_re_reads_a_late_commit_and_the_overlap_is_harmless(loader, db):
    records = [{"id": i, "updated_at": f"2026-03-01T12:{i:02d}:00+00:00"} for i in range(10)]
    cursor = Cursor("updated_at", lookback=dt.timedelta(minutes=5))
    pipeline = Pipeline("shop", streams=[list_stream(records, primary_key="id", cursor=cursor)])
    run(pipeline, loader)
    # A transaction that committed late: its timestamp is before the watermark (12:09).
    records.append({"id": 99, "updated_at": "2026-03-01T12:06:00+00:00"})
    result = run(pipeline, loader)
    assert result.streams["items"].extracted == 7  # 12:04 ... 12:09 re-read, plus the late one
    assert result.streams["items"].inserted == 1
    assert db.execute("SELECT count(*) AS n FROM raw.shop_items").fetchone()["n"] == 11


def test_since_backfills_without_moving_the_watermark_back(loader, db):
    records = [{"id": i, "updated_at": f"2026-03-{i:02d}T00:00:00+00:00"} for i in range(1, 21)]
    pipeline = Pipeline("shop", streams=[list_stream(records, primary_key="id", cursor="updated_at")])
    run(pipeline, loader)
    result = run(pipeline, loader, since="2026-03-05")
    assert result.streams["items"].extracted == 16
    state = db.execute("SELECT value FROM pipeline.state WHERE key = 'watermark'").fetchone()["value"]
    assert state["value"] == "2026-03-20T00:00:00+00:00"


def test_a_failing_stream_keeps_committed_batches_and_their_exact_watermark(loader, db):
    def flaky(since):
        for i in range(25):
            if i == 23:
                raise ConnectionError("source dropped the connection")
            yield {"id": i, "seq": i}

    stream = extractor(flaky, name="items", primary_key="id", cursor="seq", batch_size=10)
    ok = list_stream([{"id": 1}], name="other", primary_key="id")
    result = run(Pipeline("shop", streams=[stream, ok]), loader)

    assert result.status == "failed"
    assert "ConnectionError: source dropped the connection" in result.summary.error_message
    # Two full batches plus the three records read before the failure (handed over as a last batch).
    assert db.execute("SELECT count(*) AS n FROM raw.shop_items").fetchone()["n"] == 23
    state = db.execute("SELECT value FROM pipeline.state WHERE stream_name = 'items' AND key = 'watermark'").fetchone()["value"]
    assert state == {"kind": "integer", "value": 22}
    # Other streams still ran.
    assert db.execute("SELECT count(*) AS n FROM raw.shop_other").fetchone()["n"] == 1
    detail = db.execute("SELECT error_detail FROM pipeline.execution_log").fetchone()["error_detail"]
    assert "Traceback" in detail["streams"]["items"]["traceback"]


def test_an_unsorted_stream_advances_its_watermark_only_when_complete(loader, db):
    class Unsorted(Extractor):
        name = "items"
        primary_key = "id"
        cursor = "seq"
        sorted_by_cursor = False

        def extract(self, state):
            yield Batch([{"id": 1, "seq": 50}])
            yield Batch([{"id": 2, "seq": 10}])
            raise RuntimeError("stop")

    run(Pipeline("shop", streams=[Unsorted()]), loader)
    assert db.execute("SELECT count(*) AS n FROM pipeline.state WHERE key = 'watermark'").fetchone()["n"] == 0


def test_new_and_changed_fields_are_recorded_in_schema_changes(loader, db):
    records = [{"id": 1, "amount": 5}]
    pipeline = Pipeline("shop", streams=[list_stream(records, primary_key="id")])
    run(pipeline, loader)
    records[:] = [{"id": 1, "amount": "5.00", "coupon": "XMAS"}, {"id": 2, "amount": 2.5}]
    run(pipeline, loader)
    changes = table_rows(db, "pipeline.schema_changes", "field_name, change, old_type, new_type", "id")
    initial = {(c["field_name"], c["change"]) for c in changes if c["change"] == "initial"}
    assert initial == {("id", "initial"), ("amount", "initial")}
    later = [(c["field_name"], c["change"], c["old_type"], c["new_type"]) for c in changes if c["change"] != "initial"]
    assert ("coupon", "added", None, "string") in later
    # The trail keeps every type the field has shown: integer, then number and string too.
    assert ("amount", "type_changed", "integer", "integer|number|string") in later
    # The records were loaded anyway, every field kept.
    assert db.execute("SELECT _raw_payload->>'coupon' AS c FROM raw.shop_items WHERE id = '1'").fetchone()["c"] == "XMAS"


def test_a_run_left_running_by_a_dead_process_is_marked_abandoned(loader, db):
    db.execute("INSERT INTO pipeline.execution_log (pipeline_name, status) VALUES ('shop', 'running')")
    run(Pipeline("shop", streams=[list_stream([{"id": 1}], primary_key="id")]), loader)
    old = db.execute("SELECT status, error_message, completed_at FROM pipeline.execution_log ORDER BY id LIMIT 1").fetchone()
    assert old["status"] == "failed" and old["error_message"].startswith("abandoned") and old["completed_at"]


def test_replay_loads_dead_letters_after_the_contract_is_loosened(loader, db):
    records = [{"id": 1, "amount": 1}, {"id": 2, "amount": "12,50"}, {"id": 3, "amount": None}]
    stream = list_stream(records, primary_key="id", contract=Order, max_bad_ratio=1)
    pipeline = Pipeline("shop", streams=[stream])
    assert run(pipeline, loader).status == "partial"

    class Looser(pydantic.BaseModel):
        id: int
        amount: str

    stream.contract = Looser  # the fix a user would deploy
    from elt.progress import LogProgress
    from elt.runner import Runner

    result = Runner(pipeline, loader=loader, progress=LogProgress()).replay(resolved_by="alice")
    assert result.streams["items"].loaded == 1  # "12,50" passes now; None still fails
    # A record asked for by replay and rejected again fails the replay (exit 1); the other stays loaded.
    assert result.status == "failed" and result.exit_code == 1
    assert "1 of 2 replayed record(s) were rejected again" in result.summary.error_message
    letters = table_rows(db, "pipeline.dead_letter", "source_record->>'id' AS id, resolved_at, resolved_by", "id")
    assert letters[0]["id"] == "2" and letters[0]["resolved_at"] and letters[0]["resolved_by"].startswith("alice")
    assert letters[1]["id"] == "3" and letters[1]["resolved_at"] is None
    assert len(letters) == 2
    assert db.execute("SELECT count(*) AS n FROM raw.shop_items").fetchone()["n"] == 2


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"write_strategy": "upsert"}, "needs a primary_key"),
        ({"write_strategy": "delete_reload", "primary_key": "id"}, "needs partition_by"),
        ({"write_strategy": "merge"}, "is not one of append"),
        ({"max_bad_ratio": 2}, "between 0 and 1"),
        ({"primary_key": "_raw_payload"}, "clashes"),
    ],
)
def test_bad_stream_declarations_say_what_to_fix(settings, message):
    with pytest.raises(ConfigError, match=message):
        list_stream([], **settings)


def test_changing_the_primary_key_of_an_existing_table_is_a_clear_error(loader, db):
    run(Pipeline("shop", streams=[list_stream([{"id": 1, "sku": "a"}], primary_key="id")]), loader)
    result = run(Pipeline("shop", streams=[list_stream([{"id": 1, "sku": "a"}], primary_key="sku")]), loader)
    assert result.status == "failed"
    assert "without key column(s) ['sku']" in result.summary.error_message


@pytest.mark.parametrize("pages, shown", [
    ([[1, 3, 4]], "got 1"),  # a flat list of ids
    (["cus_1"], "got 'cus_1'"),  # a page that is a string
    ([[(1, "eu")]], "got (1, 'eu')"),  # two values for a one-field key
], ids=["flat-ids", "string-page", "wrong-width"])
def test_source_keys_of_the_wrong_shape_fail_reconcile_naming_the_contract_and_mark_nothing(loader, db, pages, shown):
    from elt.extractors.function import FunctionExtractor
    from elt.runner import Runner

    class Listed(FunctionExtractor):
        name = "items"
        primary_key = "id"
        detect_deletes = True

        def source_keys(self):
            yield from pages

    stream = Listed()
    stream.function = lambda: iter([{"id": i} for i in range(1, 6)])
    pipeline = Pipeline("shop", streams=[stream])
    assert run(pipeline, loader).status == "success"
    result = Runner(pipeline, loader=loader).reconcile()
    message = result.summary.error_message or ""
    assert result.status == "failed"
    assert "source_keys() must yield pages (lists) of key tuples" in message and shown in message, message
    assert db.execute("SELECT count(*) AS n FROM raw.shop_items WHERE _deleted_at IS NOT NULL").fetchone()["n"] == 0
