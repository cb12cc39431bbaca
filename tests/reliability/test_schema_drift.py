"""Attack 5, schema drift: a source adds a field, drops one and changes a type across runs.

Each shape is read twice (a re-run must not record a change again). Raw keeps
every payload exactly; ``pipeline.schema_changes`` holds each change once; the
generated ``stg`` view keeps working throughout; the typed starter model
(``elt stage``) keeps working until a field's type changes under its cast, and
then the run ends ``partial`` saying which field (the model's ``readable`` test
names the column).
"""

from __future__ import annotations

import json
from typing import Any

from elt import Pipeline
from elt.transforms.stage import write_starter
from tests.helpers import list_stream, run
from tests.reliability.conftest import Attack, AttackReport

SHAPES: list[tuple[str, list[dict[str, Any]]]] = [
    ("initial", [{"id": 1, "name": "a", "amount": 5}, {"id": 2, "name": "b", "amount": 7}]),
    ("field added", [{"id": 1, "name": "a", "amount": 5, "coupon": "X"}, {"id": 3, "name": "c", "amount": 9}]),
    ("field dropped", [{"id": 1, "amount": 5, "coupon": "X"}, {"id": 3, "amount": 9, "coupon": None}]),
    ("type changed", [{"id": 1, "amount": "n/a", "coupon": "X"}, {"id": 4, "amount": 11, "coupon": "Y"}]),
]


def test_drift_is_kept_in_raw_recorded_once_and_named_by_the_staging_model(loader, db, tmp_path,
                                                                          attack_report: AttackReport) -> None:
    records: list[dict[str, Any]] = []
    typed = list_stream(records, name="items", primary_key="id", write_strategy="append_dedup")
    plain = list_stream(records, name="plain", primary_key="id", write_strategy="append_dedup")
    pipeline = Pipeline("shop", streams=[typed, plain])
    sent: set[str] = set()
    runs = 0
    for step, (shape, rows) in enumerate(SHAPES):
        records[:] = rows
        sent.update(json.dumps(r, sort_keys=True) for r in rows)
        for again in (False, True):
            result = run(pipeline, loader, project_dir=tmp_path)
            runs += 1
            # Raw keeps every payload as sent, whatever its shape.
            for table in ("raw.shop_items", "raw.shop_plain"):
                stored = {json.dumps(r["p"], sort_keys=True) for r in db.execute(f"SELECT _raw_payload AS p FROM {table}")}
                assert stored == sent, (shape, table)
            # The generated view keeps working: the latest version of every key.
            latest = {r["id"]: r["p"] for r in db.execute(
                "SELECT (_raw_payload->>'id')::int AS id, _raw_payload AS p FROM stg.shop_plain")}
            assert latest[rows[0]["id"]] == rows[0], shape
            if shape == "type changed":
                # The typed model's cast of amount (bigint) meets "n/a": the run names the field;
                # raw and the other stream are loaded.
                assert result.status == "partial", result.summary.error_message
                message = result.summary.error_message or ""
                assert "'amount'" in message and "readable" in message, message
                assert result.summary.rows_loaded == (0 if again else 4)
            else:
                assert result.status == "success", (shape, result.summary.error_message)
                if step > 0:
                    names = {r["id"]: r for r in db.execute("SELECT id, amount FROM stg.shop_items")}
                    assert names[rows[0]["id"]]["amount"] == rows[0]["amount"], shape
        if step == 0:
            # The user runs `elt stage` after the first load: a typed model with amount as bigint.
            text = write_starter(tmp_path, "shop", typed, loader.store).read_text()
            assert "NULLIF(_raw_payload ->> 'amount', '')::bigint AS amount" in text

    changes = db.execute(
        "SELECT stream_name, field_name, change, old_type, new_type FROM pipeline.schema_changes"
        " WHERE stream_name = 'items' ORDER BY id").fetchall()
    trail = [(c["field_name"], c["change"], c["old_type"], c["new_type"]) for c in changes]
    assert sorted(trail[:3]) == [
        ("amount", "initial", None, "integer"), ("id", "initial", None, "integer"), ("name", "initial", None, "string")]
    assert trail[3:] == [
        ("coupon", "added", None, "string"),
        ("name", "removed", "string", None),
        ("amount", "type_changed", "integer", "integer|string"),
    ]
    plain_changes = db.execute("SELECT count(*) AS n FROM pipeline.schema_changes WHERE stream_name = 'plain'").fetchone()
    assert plain_changes["n"] == len(changes)
    attack_report.record(Attack(
        attack="schema drift", runs=runs, compared=len(sent) * 2, lost=0, duplicated=0,
        notes="field added, dropped, type changed, each shape read twice: raw kept every payload, each change"
              " recorded once, generated stg view kept working, typed model failed naming the field",
        extra={"schema_changes": len(changes) * 2},
    ))
