"""FileExtractor on real files and a real PostgreSQL: formats, the manifest, and bad files that never stop good ones."""

from __future__ import annotations

import gzip
import json

import pytest

from elt import FileExtractor, Pipeline
from tests.helpers import run

HEADER = "id,name,amount\n"


class Drop(FileExtractor):
    name = "rows"
    folder = "."


def pipeline(folder, **settings):
    return Pipeline("files", streams=[Drop(folder=str(folder), **settings)])


def payloads(db):
    return db.execute("SELECT _raw_payload AS p, _source_id AS source, _source_version AS version FROM raw.files_rows"
                      " ORDER BY _row_seq").fetchall()


def dead_letters(db):
    return db.execute("SELECT source_record AS r, error_message AS e FROM pipeline.dead_letter ORDER BY id").fetchall()


def test_csv_tsv_json_ndjson_and_gzip_all_load_with_their_source_ids(tmp_path, loader, db):
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "a.csv").write_text(HEADER + '1,"Ann, Jr.",10.50\n2,"multi\nline note",3\n', encoding="utf-8")
    (drop / "b.tsv").write_text("id\tname\tamount\n3\tBo\t7\n", encoding="utf-8")
    (drop / "c.json").write_text(json.dumps({"data": {"items": [{"id": 4, "name": "Cy"}]}}), encoding="utf-8")
    (drop / "d.ndjson").write_text('{"id": 5}\n\n{"id": 6}\n', encoding="utf-8")
    with gzip.open(drop / "e.csv.gz", "wt", encoding="utf-8") as fh:
        fh.write(HEADER + "7,Di,1\n")
    (drop / "f.json").write_text(json.dumps([{"id": 8}, {"id": 9}]), encoding="utf-8")
    (drop / "semi.csv").write_bytes("\ufeffid;name;amount\n10;Éva;2,5\n".encode())  # BOM, ';' and a decimal comma

    # One stream per layout: the JSON object needs its records_path.
    result = run(pipeline(drop, pattern="[abdef]*"), loader)
    assert result.status == "success", result.summary.error_message
    run(Pipeline("files", streams=[Drop(folder=str(drop), pattern="c.json", records_path="data.items"),]), loader)
    run(pipeline(drop, pattern="semi.csv"), loader)

    rows = payloads(db)
    by_id = {str(r["p"]["id"]): r for r in rows}
    assert sorted(by_id, key=int) == [str(i) for i in range(1, 11)]
    assert by_id["1"]["p"]["name"] == "Ann, Jr." and by_id["2"]["p"]["name"] == "multi\nline note"
    # Where each row came from is in columns of its own; the payload is the row alone.
    assert by_id["1"]["source"] == "a.csv:2" and by_id["2"]["source"] == "a.csv:3"
    assert by_id["6"]["source"] == "d.ndjson:3"
    assert by_id["10"]["p"] == {"id": "10", "name": "Éva", "amount": "2,5"}
    assert by_id["10"]["source"] == "semi.csv:2" and len(by_id["10"]["version"]) == 12


def test_each_file_loads_once_and_a_changed_file_loads_again_as_a_new_version(tmp_path, loader, db):
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "orders.csv").write_text(HEADER + "1,a,1\n2,b,2\n", encoding="utf-8")
    assert run(pipeline(drop), loader).streams["rows"].extracted == 2
    second = run(pipeline(drop), loader)
    assert second.status == "success" and second.streams["rows"].extracted == 0
    (drop / "orders.csv").write_text(HEADER + "1,a,1\n2,b,20\n3,c,3\n", encoding="utf-8")
    third = run(pipeline(drop), loader)
    assert third.streams["rows"].extracted == 3
    rows = payloads(db)
    assert len(rows) == 5
    versions = {r["version"] for r in rows}
    assert len(versions) == 2
    manifest = db.execute("SELECT value FROM pipeline.state WHERE key = 'file:orders.csv'").fetchone()["value"]
    assert manifest["version"] == 2 and manifest["rows"] == 3 and manifest["status"] == "loaded"


def test_processed_files_move_after_their_rows_commit(tmp_path, loader, db):
    drop = tmp_path / "drop"
    (drop / "2026" / "05").mkdir(parents=True)
    (drop / "2026" / "05" / "x.csv").write_text(HEADER + "1,a,1\n", encoding="utf-8")
    (drop / "y.csv").write_text(HEADER + "2,b,2\n", encoding="utf-8")
    result = run(pipeline(drop, pattern="**/*.csv", move_processed=True), loader)
    assert result.status == "success"
    assert sorted(p.relative_to(drop).as_posix() for p in drop.rglob("*.csv")) == [
        "processed/2026/05/x.csv", "processed/y.csv"]
    assert len(payloads(db)) == 2
    # The processed folder is never read again.
    assert run(pipeline(drop, pattern="**/*.csv", move_processed=True), loader).streams["rows"].extracted == 0


BAD_FILES = {
    "latin1.csv": ("id,name,amount\n1,Jos\xe9,1\n".encode("latin-1"), "not valid utf-8", "encoding = 'cp1252'"),
    "empty.csv": (b"", "the file is empty", None),
    "dupes.csv": (b"id,name,name\n1,a,b\n", "duplicate header names: 'name'", None),
    "ragged.csv": (b"id,name,amount\n1,a\n2,b\n3,c,3\n", "2 of 3 rows do not have the header's 3 fields", None),
    "broken.json": (b'[{"id": 1}, {"id": ', "not valid JSON", None),
    "cut.csv.gz": (gzip.compress(b"id,name,amount\n" + b"".join(f"{i},{i * 7919 % 10007},{i * i}\n".encode()
                                                            for i in range(5000)))[:5000], "corrupt or truncated gzip", None),
    # Read line by line, so rows come out before the cut: none of them may load.
    "cut.ndjson.gz": (gzip.compress(b"".join(f'{{"id": {i}, "v": {i * 7919 % 10007}}}\n'.encode()
                                             for i in range(5000)))[:5000], "corrupt or truncated gzip", None),
}


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_a_bad_file_goes_to_dead_letter_and_the_good_files_load(tmp_path, loader, db, name):
    content, reason, hint = BAD_FILES[name]
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "good.csv").write_text(HEADER + "1,a,1\n2,b,2\n", encoding="utf-8")
    (drop / name).write_bytes(content)
    result = run(pipeline(drop), loader)
    assert result.status == "partial"
    assert len(payloads(db)) == 2
    letters = dead_letters(db)
    assert len(letters) == 1
    assert letters[0]["r"]["file"] == name
    assert f"file {name} not loaded" in letters[0]["e"] and reason in letters[0]["e"]
    if hint:
        assert hint in letters[0]["e"]
    # Recorded in the manifest: not retried (and re-alerted) every run until the file changes.
    again = run(pipeline(drop), loader)
    assert again.status == "success" and len(dead_letters(db)) == 1


def test_a_few_ragged_rows_and_a_truncated_last_line_are_rejected_one_by_one(tmp_path, loader, db):
    drop = tmp_path / "drop"
    drop.mkdir()
    lines = [f"{i},n{i},{i}" for i in range(1, 21)]
    lines[4] = "5,n5"  # ragged
    body = HEADER + "\n".join(lines) + "\n21,n21"  # and the last line cut off mid-row, no newline
    (drop / "orders.csv").write_text(body, encoding="utf-8")
    result = run(pipeline(drop), loader)
    assert result.status == "partial"
    assert len(payloads(db)) == 19
    letters = dead_letters(db)
    assert [(r["r"]["line"], r["r"]["row"]) for r in letters] == [(6, ["5", "n5"]), (22, ["21", "n21"])]
    assert letters[0]["e"] == "ragged row: 2 fields, the header has 3"
    assert letters[1]["e"].startswith("truncated last line (no newline at the end")


def test_bad_ndjson_lines_are_rejected_with_their_line_numbers(tmp_path, loader, db):
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "events.ndjson").write_text('{"id": 1}\n{"id": 2\n[1, 2]\n{"id": 4}\n', encoding="utf-8")
    result = run(pipeline(drop), loader)
    assert result.status == "partial"
    assert [r["p"]["id"] for r in payloads(db)] == [1, 4]
    assert [(r["r"]["line"], r["e"].split(":")[0]) for r in dead_letters(db)] == [
        (2, "not valid JSON"), (3, "a JSON list, not an object")]


def test_a_folder_of_1000_small_files(tmp_path, loader, db):
    drop = tmp_path / "drop"
    drop.mkdir()
    for i in range(1000):
        (drop / f"part-{i:04d}.csv").write_text(f"{HEADER}{i},n{i},{i % 7}\n{i + 1000},m{i},1\n", encoding="utf-8")
    result = run(pipeline(drop, batch_size=500), loader)
    assert result.status == "success"
    assert result.streams["rows"].extracted == 2000
    assert result.streams["rows"].batches == 4  # small files share batches (and transactions)
    assert db.execute("SELECT count(*) AS n FROM pipeline.state WHERE key LIKE 'file:%'").fetchone()["n"] == 1000
    assert run(pipeline(drop, batch_size=500), loader).streams["rows"].extracted == 0


def test_a_missing_folder_is_a_clear_error(tmp_path, loader):
    result = run(pipeline(tmp_path / "nowhere"), loader)
    assert result.status == "failed"
    assert "nowhere does not exist; create it or fix `folder`" in result.summary.error_message


def test_identical_lines_are_two_records_and_a_dead_letter_says_where_its_row_was(tmp_path, loader, db):
    from pydantic import BaseModel

    class Sale(BaseModel):
        id: int
        amount: float

    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "till.csv").write_text(HEADER + "1,coffee,4.5\n1,coffee,4.5\n2,tea,n/a\n", encoding="utf-8")
    result = run(pipeline(drop, contract=Sale, write_strategy="append"), loader)
    assert result.status == "partial"
    rows = payloads(db)
    # Two sales of the same coffee are two rows (the line is part of a row's identity), payloads identical.
    assert [(r["source"], r["p"]) for r in rows] == [
        ("till.csv:2", {"id": "1", "name": "coffee", "amount": "4.5"}),
        ("till.csv:3", {"id": "1", "name": "coffee", "amount": "4.5"})]
    [letter] = dead_letters(db)
    assert letter["r"]["_source_id"] == "till.csv:4" and "amount" in letter["e"]
    again = run(pipeline(drop, contract=Sale, write_strategy="append"), loader)  # the manifest: nothing new
    assert again.streams["rows"].extracted == 0 and len(payloads(db)) == 2
