"""Schema drift is recorded once per real change: types accumulate, fields that disappear are noted."""

from __future__ import annotations

from typing import Any

from elt import Pipeline
from elt.schema import diff_fields, removed_fields
from tests.helpers import list_stream, run


def test_a_field_that_alternates_between_number_and_string_is_recorded_once(loader, db):
    records: list[dict[str, Any]] = []
    pipeline = Pipeline("shop", streams=[list_stream(records, primary_key="id", write_strategy="upsert")])
    for n, amount in enumerate([5, "5.00", 7, "n/a", 9.5, "x", 3], start=1):
        records[:] = [{"id": n, "amount": amount}]
        run(pipeline, loader)
    changes = db.execute("SELECT field_name, change, old_type, new_type FROM pipeline.schema_changes"
                         " WHERE change <> 'initial' ORDER BY id").fetchall()
    assert changes == [
        {"field_name": "amount", "change": "type_changed", "old_type": "integer", "new_type": "integer|string"},
        {"field_name": "amount", "change": "type_changed", "old_type": "integer|string",
         "new_type": "integer|number|string"},
    ]


def test_a_field_no_record_of_a_full_read_carries_is_recorded_as_removed_once(loader, db):
    records = [{"id": 1, "coupon": "X", "note": None}, {"id": 2}]
    pipeline = Pipeline("shop", streams=[list_stream(records, primary_key="id", write_strategy="upsert")])
    run(pipeline, loader)
    records[:] = [{"id": 1, "note": None}, {"id": 2}]  # coupon gone; note still present (as null)
    run(pipeline, loader)
    run(pipeline, loader)
    removed = db.execute("SELECT field_name, old_type FROM pipeline.schema_changes WHERE change = 'removed'").fetchall()
    assert removed == [{"field_name": "coupon", "old_type": "string"}]


def test_state_written_by_older_versions_reads_as_accumulated_types():
    changes, known = diff_fields({"amount": "integer|string"}, {"amount": {int}, "x": {str}})
    assert [c.change for c in changes] == ["added"] and known["amount"] == ["integer", "string"]
    assert [c.field for c in removed_fields({"amount": ["integer"], "x": ["string"]}, ["x"])] == ["amount"]
