"""The BigQuery destination against the local emulator: every write strategy, replay, the lock, the byte guard.

The emulator (local-bigquery, DuckDB underneath) is slow per job, so the
strategies share one pipeline of five streams, run twice.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import pydantic
import pytest

from elt import Pipeline
from elt.loaders.bigquery import BigQueryLoader, BigQuerySettings
from elt.records import ExactNumber
from elt.runner import Runner
from tests.helpers import list_stream, run


def _records() -> list[dict[str, Any]]:
    return [{"id": i, "amount": i, "day": f"2024-01-0{1 + i % 3}", "updated": f"2024-01-0{1 + i % 3}T00:00:00Z"}
            for i in range(6)]


def _payloads(bq: Any, table: str) -> list[tuple[str, str]]:
    rows = bq(f"SELECT JSON_VALUE(_raw_payload, '$.id') AS id, JSON_VALUE(_raw_payload, '$.amount') AS amount"
              f" FROM {{raw}}.{table} ORDER BY _row_seq")
    return sorted((r["id"], r["amount"]) for r in rows)


def test_every_write_strategy_loads_and_reloads_into_bigquery(bq_loader, bq, monkeypatch):
    source = _records()
    streams = [
        list_stream(source, name="events", write_strategy="append"),
        list_stream(source, name="history", primary_key="id", cursor="updated", write_strategy="append_dedup"),
        list_stream(source, name="current", primary_key="id", cursor="updated", write_strategy="upsert"),
        list_stream(source, name="days", primary_key="id", partition_by="day", write_strategy="delete_reload"),
        list_stream(source, name="reference", primary_key="id", write_strategy="replace"),
    ]
    # The emulator does not enforce maximum_bytes_billed, so what elt sends is checked: the limit on the
    # job configuration of every query the client runs (the real client, the real emulator behind it).
    limits: list[Any] = []
    client = bq_loader.connection.client
    real_query = client.query

    def query(sql: str, job_config: Any = None, **kwargs: Any) -> Any:
        limits.append(job_config.maximum_bytes_billed)
        return real_query(sql, job_config=job_config, **kwargs)

    monkeypatch.setattr(client, "query", query)
    first = run(Pipeline("shop", streams=streams), bq_loader)
    assert first.status == "success", first.summary.error_message
    assert len(limits) > 10 and set(limits) == {10 * 1024**3}
    assert first.summary.rows_loaded == 30

    # The source changes: id 0 gets a new amount and cursor, id 5 is gone, id 6 is new.
    source[0].update(amount=100, updated="2024-01-09T00:00:00Z")
    source.pop(5)
    source.append({"id": 6, "amount": 6, "day": "2024-01-01", "updated": "2024-01-09T00:00:00Z"})
    second = run(Pipeline("shop", streams=streams), bq_loader)
    assert second.status == "success", second.summary.error_message

    original = [(str(i), str(i)) for i in range(6)]
    # append: every distinct record once (a re-read record is not stored twice).
    assert _payloads(bq, "shop_events") == sorted([*original, ("0", "100"), ("6", "6")])
    # append_dedup: both versions of id 0 in raw, the generated stg view shows the latest.
    assert _payloads(bq, "shop_history") == sorted([*original, ("0", "100"), ("6", "6")])
    latest = bq("SELECT JSON_VALUE(_raw_payload, '$.amount') AS amount FROM {stg}.shop_history WHERE id = '0'")
    assert latest == [{"amount": "100"}]
    # upsert: one row per key, id 0 updated in place.
    assert _payloads(bq, "shop_current") == sorted([("0", "100"), *original[1:], ("6", "6")])
    # delete_reload: the partitions read (every day) replaced whole: id 5 is gone with its day's old rows.
    assert _payloads(bq, "shop_days") == sorted([("0", "100"), *original[1:5], ("6", "6")])
    # replace: exactly the last read.
    assert _payloads(bq, "shop_reference") == sorted([("0", "100"), *original[1:5], ("6", "6")])

    # The watermarks committed with the batches; the run log has both runs, closed.
    marks = {m["stream_name"]: m["value"]["value"] for m in bq_loader.store.watermarks("shop")}
    assert marks == {"history": "2024-01-09T00:00:00+00:00", "current": "2024-01-09T00:00:00+00:00"}
    runs = bq_loader.store.last_runs("shop")
    assert [r["status"] for r in runs] == ["success", "success"]
    assert runs[0]["rows_loaded"] == second.summary.rows_loaded and runs[0]["bytes_processed"] is not None
    # Nothing of elt's work tables is left or listed as a raw table.
    assert bq_loader.store.raw_tables() == {f"shop_{s}" for s in ("events", "history", "current", "days", "reference")}


class Order(pydantic.BaseModel):
    id: int
    amount: int


class LenientOrder(pydantic.BaseModel):
    id: int
    amount: int | str


def test_dead_letters_are_kept_and_replayed_after_the_fix(bq_loader, bq):
    records = [{"id": 1, "amount": 1}, {"id": 2, "amount": "lots"}]
    stream = list_stream(records, primary_key="id", write_strategy="upsert", contract=Order, max_bad_ratio=1)
    result = run(Pipeline("shop", streams=[stream]), bq_loader)
    assert result.status == "partial"
    letters = bq_loader.store.dead_letters("shop")
    assert len(letters) == 1 and "contract Order rejected the record: amount" in letters[0]["error_message"]
    assert bq_loader.store.dead_letter(letters[0]["id"])["source_record"] == {"id": 2, "amount": "lots"}

    fixed = list_stream(records, primary_key="id", write_strategy="upsert", contract=LenientOrder, max_bad_ratio=1)
    replay = Runner(Pipeline("shop", streams=[fixed]), loader=bq_loader).replay()
    assert replay.status == "success", replay.summary.error_message
    assert _payloads(bq, "shop_items") == [("1", "1"), ("2", "lots")]
    assert bq_loader.store.dead_letters("shop") == []
    resolved = bq_loader.store.dead_letters("shop", include_resolved=True)
    assert [r["resolution"] for r in resolved] == ["replayed"]


def test_numbers_bigquery_json_cannot_hold_are_dead_lettered_alone_and_kept_exactly(bq_loader, bq):
    # Before: PARSE_JSON refused the integer ("loss of precision") and the whole batch failed without
    # naming it, while the long decimal was silently rounded to a double.
    huge = 123456789012345678901234567890
    long_decimal = ExactNumber("0.12345678901234567890")
    records = [
        {"id": 1, "n": 5},
        {"id": 2, "n": huge},
        {"id": 3, "deep": {"prices": [1.5, long_decimal]}},
        {"id": 4, "n": 2**64 - 1, "s": "a\u0000b"},  # the widest UINT64, and a NUL: both fit
        {"id": 5, "n": -(2**63) - 1},
    ]
    pipeline = Pipeline("shop", streams=[list_stream(records, primary_key="id", max_bad_ratio=1)])
    result = run(pipeline, bq_loader)
    assert result.status == "partial", result.summary.error_message
    assert result.summary.rows_loaded == 2 and result.summary.rows_rejected == 3

    stored = bq("SELECT TO_JSON_STRING(_raw_payload) AS p FROM {raw}.shop_items ORDER BY _row_seq")
    assert [json.loads(r["p"]) for r in stored] == [records[0], records[3]]

    letters = {r["id"]: r for r in bq_loader.store.dead_letters("shop")}
    by_record = {bq_loader.store.dead_letter(i)["source_record"]["id"]: bq_loader.store.dead_letter(i) for i in letters}
    assert sorted(by_record) == [2, 3, 5]
    reason = by_record[2]["error_message"]
    assert "stream 'items', record id='2'" in reason and "field 'n' = 123456789012345678901234567890" in reason
    assert "within 64 bits" in reason and "as a string" in reason
    assert "field 'deep.prices[1]' = 0.12345678901234567890" in by_record[3]["error_message"]
    assert "double" in by_record[3]["error_message"]
    assert "field 'n' = -9223372036854775809" in by_record[5]["error_message"]
    # The letters hold the records digit for digit (as text: BigQuery's JSON cannot).
    assert by_record[2]["source_record"] == {"id": 2, "n": huge}
    assert by_record[3]["source_record"]["deep"]["prices"][1] == long_decimal
    assert by_record[2]["kind"] == "record"

    # Replay re-checks them with the same rule: still rejected, nothing rounded into raw, letters kept.
    replay = Runner(pipeline, loader=bq_loader).replay()
    assert replay.status == "failed" and replay.streams["items"].rejected == 3  # rejected again: exit 1
    assert len(bq("SELECT 1 AS x FROM {raw}.shop_items")) == 2
    assert sorted(r["id"] for r in bq_loader.store.dead_letters("shop")) == sorted(letters)


def test_of_two_concurrent_runs_exactly_one_takes_the_pipeline_lock(bq_settings: BigQuerySettings):
    loaders = [BigQueryLoader(bq_settings) for _ in range(3)]
    try:
        loaders[0].store.migrate()
        loaders[0].store.try_lock("warmup")  # creates the lock table's first row; the race below is on a new one
        results: dict[int, bool] = {}
        barrier = threading.Barrier(len(loaders))

        def take(i: int) -> None:
            barrier.wait(timeout=30)
            results[i] = loaders[i].store.try_lock("shop")

        threads = [threading.Thread(target=take, args=(i,)) for i in range(len(loaders))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert sorted(results.values()) == [False] * (len(loaders) - 1) + [True]
        winner = next(i for i, ok in results.items() if ok)
        loser = next(i for i, ok in results.items() if not ok)
        assert not loaders[loser].store.try_lock("shop")
        loaders[winner].store.unlock("shop")
        assert loaders[loser].store.try_lock("shop")
    finally:
        for loader in loaders:
            loader.close()


def test_a_lock_left_by_a_dead_process_is_stale(bq_loader, bq):
    assert bq_loader.store.try_lock("shop")
    bq_loader.store.close()  # stop the heartbeat; the row stays taken
    # Pretend the holder was a process on this host that no longer exists (a killed run).
    bq("UPDATE {pipeline}.locks SET pid = 2147483646 WHERE pipeline_name = 'shop'")
    other = BigQueryLoader(bq_loader.settings)
    try:
        assert other.store.try_lock("shop")
    finally:
        other.close()


def test_a_query_over_the_byte_guard_fails_with_the_fix(bq_loader, monkeypatch):
    # The emulator never refuses a query for its bytes (it reports 0 bytes processed), so BigQuery's refusal
    # is stood in for here: the client's query raises the error BigQuery sends (reason bytesBilledLimitExceeded).
    from google.api_core.exceptions import BadRequest

    from elt.errors import LoadError

    def refuse(sql: str, job_config: Any = None, **kwargs: Any) -> Any:
        raise BadRequest("Query exceeded limit for bytes billed: 1000. 10485760 or higher required.",
                         errors=[{"reason": "bytesBilledLimitExceeded"}])

    monkeypatch.setattr(bq_loader.connection.client, "query", refuse)
    with pytest.raises(LoadError) as caught:
        bq_loader.store.last_runs()
    message = str(caught.value)
    assert "more than maximum_bytes_billed (10,737,418,240 bytes)" in message
    assert "ELT_BIGQUERY_MAXIMUM_BYTES_BILLED" in message and "10485760 or higher required" in message


def test_bigquery_destination_reads_its_settings_from_arguments_then_environment(monkeypatch):
    from elt import BigQuery
    from elt.destinations import FromEnvironment, resolve

    monkeypatch.setenv("ELT_BIGQUERY_PROJECT", "from-env")
    monkeypatch.setenv("ELT_BIGQUERY_DATASET_PREFIX", "env_")
    settings = BigQuery(dataset_prefix="mine_", maximum_bytes_billed=5_000).settings()
    assert (settings.project, settings.dataset("raw"), settings.maximum_bytes_billed) == ("from-env", "mine_raw", 5_000)
    assert BigQuery(maximum_bytes_billed=0).settings().maximum_bytes_billed is None  # 0: no limit
    monkeypatch.setenv("ELT_DESTINATION", "bigquery")
    assert isinstance(resolve(None), FromEnvironment)
    assert resolve(None).chosen() == BigQuery()
    assert Pipeline("p", streams=[]).destination.chosen() == BigQuery()  # type: ignore[union-attr]
    monkeypatch.setenv("ELT_DESTINATION", "oracle")
    with pytest.raises(Exception, match="ELT_DESTINATION='oracle' is not one of"):
        resolve(None).chosen()


def test_keys_gone_from_the_source_are_marked_deleted_and_leave_the_latest_view(bq_loader, bq):
    from elt.loaders.base import StreamTarget

    stream = list_stream([{"id": i} for i in range(5)], primary_key="id", write_strategy="append_dedup")
    assert run(Pipeline("shop", streams=[stream]), bq_loader).status == "success"
    target = StreamTarget("shop", "items", "shop_items", stream)
    assert bq_loader.writer.mark_deleted(target, iter([[("0",), ("1",)], [("2",)]])) == (2, 0)
    marked = bq("SELECT id FROM {raw}.shop_items WHERE _deleted_at IS NOT NULL ORDER BY id")
    assert [r["id"] for r in marked] == ["3", "4"]
    assert [r["id"] for r in bq("SELECT id FROM {stg}.shop_items ORDER BY id")] == ["0", "1", "2"]
    assert bq_loader.writer.mark_deleted(target, iter([[("0",), ("3",)]])) == (2, 1)  # 1, 2 gone; 3 back


def test_bigquery_out_of_reach_fails_within_the_reach_window_naming_where(monkeypatch):
    # Found by a new-user trial: with nothing listening, a run said nothing for 10 minutes (the
    # client's own retry deadline) and then printed a traceback. No emulator here on purpose.
    import socket
    import time

    from elt.errors import LoadError
    from elt.loaders.bigquery import BigQueryConnection

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(BigQueryConnection, "reach_seconds", 2.0)
    connection = BigQueryConnection(BigQuerySettings(project="test", endpoint=f"http://127.0.0.1:{port}"))
    for call in (lambda: connection.query("SELECT 1"), lambda: connection.ensure_dataset("raw")):
        started = time.monotonic()
        with pytest.raises(LoadError, match=f"cannot reach BigQuery at http://127.0.0.1:{port}"):
            call()
        assert time.monotonic() - started < 30


def test_an_incremental_stream_records_each_schema_change_once_and_keeps_its_known_fields(bq_loader, bq):
    # One batch writes state twice (the known fields, then the watermark): both must land, so the
    # second run knows the fields and records only what changed.
    from elt import Cursor

    records = [{"id": 1, "u": 1, "x": 1}]
    stream = list_stream(records, primary_key="id", cursor=Cursor("u", kind="integer"), write_strategy="upsert")
    pipeline = Pipeline("shop", streams=[stream])
    assert run(pipeline, bq_loader).status == "success"
    records[:] = [{"id": 2, "u": 2, "x": "s"}]
    assert run(pipeline, bq_loader).status == "success"

    state = {r["key"] for r in bq("SELECT key FROM {pipeline}.state WHERE pipeline_name = 'shop'")}
    assert {"schema", "watermark"} <= state
    changes = bq("SELECT field_name, change FROM {pipeline}.schema_changes WHERE pipeline_name = 'shop'"
                 " ORDER BY id")
    assert [(r["field_name"], r["change"]) for r in changes if r["change"] != "initial"] == [("x", "type_changed")]
    assert len([r for r in changes if r["change"] == "initial"]) == 3  # id, u, x: once, on the first run
