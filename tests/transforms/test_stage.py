"""`elt stage` starter models: identifiers quoted, deleted keys left out, types from the schema trail."""

from __future__ import annotations

from elt import Pipeline
from elt.transforms.stage import write_starter
from tests.helpers import list_stream, run


def test_a_starter_for_a_hostile_stream_name_quotes_it_and_leaves_deleted_keys_out(loader, db, tmp_path):
    name = 'odd"name; DROP TABLE x; --'
    records = [{"id": 1, "amount": 5}, {"id": 2, "amount": "7.50"}]
    stream = list_stream(records, name=name, primary_key="id", write_strategy="upsert", batch_size=1)
    pipeline = Pipeline("shop", streams=[stream])
    run(pipeline, loader)
    db.execute('UPDATE raw."shop_odd""name; DROP TABLE x; --" SET _deleted_at = now() WHERE _raw_payload->>\'id\' = \'2\'')

    path = write_starter(tmp_path, "shop", stream, loader.store)
    text = path.read_text()
    assert 'FROM "raw"."shop_odd""name; DROP TABLE x; --"' in text
    rows = db.execute(_select_of(text)).fetchall()
    assert [r["id"] for r in rows] == [1]
    # Several types seen for a field keep it as jsonb rather than a cast that would fail.
    assert "_raw_payload -> 'amount' AS amount" in text


def _select_of(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.startswith("--"))


def test_long_field_names_and_integers_beyond_bigint_still_make_a_readable_starter(loader, db, tmp_path):
    # Found by the reliability suite (tests/reliability/test_bad_input.py): two fields whose names
    # share their first 63 bytes became one column twice, and a 40-digit integer failed its bigint cast.
    long = "k" * 100
    records = [{"ID": "x", "id": 1, long: 1, long + "2": 2, "big": 10**40}, {"id": 2, long: 3, long + "2": 4, "big": 5}]
    stream = list_stream(records, primary_key="id", write_strategy="upsert")
    run(Pipeline("shop", streams=[stream]), loader)
    text = write_starter(tmp_path, "shop", stream, loader.store).read_text()
    rows = db.execute(f"SELECT * FROM ({_select_of(text)}) s ORDER BY id").fetchall()
    assert [r["big"] for r in rows] == [10**40, 5]
    assert sorted(rows[0])[:4] == ["_loaded_at", "big", "id", "id_2"]
    assert [r["id"] for r in rows] == [1, 2] and rows[0]["id_2"] == "x"  # the key keeps its name; "ID" yields
    assert {len(name) for name in rows[0] if name.startswith("k")} == {63}
    assert sorted(v for k, v in rows[0].items() if k.startswith("k")) == [1, 2]
