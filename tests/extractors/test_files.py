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
    run(pipeline(drop, pattern="semi.csv", delimiter=";"), loader)  # the stream's sniffed dialect is ','; declared here

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
    assert letters[0]["e"] == "orders.csv line 6: ragged row: 2 fields, the header has 3"
    assert letters[1]["e"].startswith("orders.csv line 22: truncated last line (no newline at the end")


def test_bad_ndjson_lines_are_rejected_with_their_line_numbers(tmp_path, loader, db):
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "events.ndjson").write_text('{"id": 1}\n{"id": 2\n[1, 2]\n{"id": 4}\n', encoding="utf-8")
    result = run(pipeline(drop), loader)
    assert result.status == "partial"
    assert [r["p"]["id"] for r in payloads(db)] == [1, 4]
    assert [(r["r"]["line"], r["e"].split(":")[:2]) for r in dead_letters(db)] == [
        (2, ["events.ndjson line 2", " not valid JSON"]), (3, ["events.ndjson line 3", " a JSON list, not an object"])]


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
    assert letter["e"].startswith("till.csv:4: contract Sale rejected the record")  # the message says where, too
    again = run(pipeline(drop, contract=Sale, write_strategy="append"), loader)  # the manifest: nothing new
    assert again.streams["rows"].extracted == 0 and len(payloads(db)) == 2


# --- issue 14: progress per file, positions, rejected/ and retry, one dialect, truncation, BOM ---------------


def manifest(db, name):
    row = db.execute("SELECT value FROM pipeline.state WHERE key = %s", [f"file:{name}"]).fetchone()
    return row["value"] if row else None


def test_a_file_failing_after_some_batches_keeps_its_rows_and_its_manifest_says_so(tmp_path, loader, db):
    drop = tmp_path / "drop"
    drop.mkdir()
    lines = [f'{{"id": {i}, "note": "ok"}}\n'.encode() for i in range(1, 501)]
    lines[399] = b'{"id": 400, "note": "caf\xe9"}\n'  # latin-1 on line 400: not UTF-8
    (drop / "events.ndjson").write_bytes(b"".join(lines))
    result = run(pipeline(drop, batch_size=100), loader)
    assert result.status == "partial"
    loaded = len(payloads(db))
    entry = manifest(db, "events.ndjson")
    # What the table holds and what the manifest says agree: the batches through line 300 committed.
    assert loaded == 300 and entry["status"] == "rejected" and entry["rows"] == 300 and entry["committed_line"] == 300
    [letter] = dead_letters(db)
    assert "at line 400, byte 25 of the line" in letter["e"] and "rows through line 300 (300) are loaded" in letter["e"]
    assert letter["r"] == {"file": "events.ndjson", "line": 400}

    fixed = run(pipeline(drop, batch_size=100, encoding="latin-1"), loader)  # the settings changed: read again
    assert fixed.status == "success" and fixed.streams["rows"].extracted == 200  # after line 300 only
    rows = payloads(db)
    assert sorted(r["p"]["id"] for r in rows) == list(range(1, 501))
    assert [r["p"]["note"] for r in rows if r["p"]["id"] == 400] == ["café"]
    assert manifest(db, "events.ndjson")["status"] == "loaded" and manifest(db, "events.ndjson")["rows"] == 500
    [letter] = db.execute("SELECT resolved_at FROM pipeline.dead_letter").fetchall()
    assert letter["resolved_at"] is not None  # the load after the fix resolved the file's dead letter


def test_a_long_file_records_its_progress_with_each_batch(tmp_path, loader, db):
    drop = tmp_path / "drop"
    drop.mkdir()
    rows = [f"{i},n{i},{i}\n" if i != 9 else "9,n9\n" for i in range(1, 251)]  # line 10 is ragged
    (drop / "big.csv").write_text(HEADER + "".join(rows), encoding="utf-8")

    class Stops(Drop):
        """Fails after its second batch commits, like a run killed in the middle of a file."""

        def extract(self, state):
            for number, batch in enumerate(super().extract(state), start=1):
                if number == 3:
                    raise RuntimeError("killed")
                yield batch

    first = run(Pipeline("files", streams=[Stops(folder=str(drop), batch_size=100)]), loader)
    assert first.status == "failed" and len(payloads(db)) == 199
    entry = manifest(db, "big.csv")
    assert entry["status"] == "loading" and entry["committed_line"] == 201
    assert (entry["rows"], entry["rejected"]) == (199, 1)
    second = run(pipeline(drop, batch_size=100), loader)
    assert second.status == "success" and second.streams["rows"].extracted == 50
    assert len(payloads(db)) == 249 and manifest(db, "big.csv")["status"] == "loaded"
    # Line 10 was not read again: its dead letter stays open.
    [letter] = db.execute("SELECT source_record, resolved_at FROM pipeline.dead_letter").fetchall()
    assert letter["source_record"]["line"] == 10 and letter["resolved_at"] is None


def test_an_encoding_error_names_line_and_byte_column(tmp_path, loader, db):
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "till.csv").write_bytes(HEADER.encode() + b"1,ok,1\n2,Cr\xe8me,2\n")
    assert run(pipeline(drop), loader).status == "partial"
    [letter] = dead_letters(db)
    assert "not valid utf-8 (invalid continuation byte) at line 3, byte 5 of the line (file offset 26)" in letter["e"]
    assert letter["r"]["line"] == 3 and not payloads(db)


def test_a_rejected_file_goes_to_rejected_with_its_reason_and_loads_after_the_fix(tmp_path, loader, db):
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "ok.csv").write_text(HEADER + "1,a,1\n", encoding="utf-8")
    (drop / "legacy.csv").write_bytes(HEADER.encode() + "2,Crème,2\n".encode("cp1252"))
    assert run(pipeline(drop, move_processed=True), loader).status == "partial"
    assert (drop / "processed" / "ok.csv").exists() and not (drop / "processed" / "legacy.csv").exists()
    assert (drop / "rejected" / "legacy.csv").exists()
    reason = (drop / "rejected" / "legacy.csv.reason.txt").read_text(encoding="utf-8")
    assert "not valid utf-8" in reason and "elt files retry" in reason
    assert run(pipeline(drop, move_processed=True), loader).status == "success"  # nothing new to read

    # Dropping the same file again after fixing the setting loads it: a rejected file is not "already loaded".
    (drop / "rejected" / "legacy.csv").rename(drop / "legacy.csv")
    again = run(pipeline(drop, move_processed=True, encoding="cp1252"), loader)
    assert again.status == "success" and again.streams["rows"].inserted == 1
    assert [r["p"]["name"] for r in payloads(db)] == ["a", "Crème"]
    assert (drop / "processed" / "legacy.csv").exists()
    # The file's dead letter is resolved by the load that fixed it.
    [letter] = db.execute("SELECT resolved_at, resolution FROM pipeline.dead_letter").fetchall()
    assert letter["resolved_at"] is not None and letter["resolution"] == "the source loaded again"


def test_elt_files_retry_puts_rejected_files_back_and_loads_them(tmp_path, database_url, db):
    from tests.fixtures.projects import run_elt, write_project

    drop = tmp_path / "drop"
    drop.mkdir()
    project = write_project(tmp_path / "proj", f"""
        from elt import FileExtractor, Pipeline

        class Sales(FileExtractor):
            name = "sales"
            folder = {str(drop)!r}
            move_processed = True
            max_ragged_ratio = {{ratio}}

        Pipeline("shop", streams=[Sales()], transforms=False)
    """)
    source = (project / "pipelines.py").read_text(encoding="utf-8")
    (project / "pipelines.py").write_text(source.replace("{ratio}", "0.1"), encoding="utf-8")
    (drop / "sales.csv").write_text(HEADER + "1,a,1\n2,b\n3,c\n", encoding="utf-8")  # 2 of 2 rows ragged
    first = run_elt(["run"], cwd=project, database_url=database_url)
    assert first.returncode == 3 and (drop / "rejected" / "sales.csv").exists()
    (project / "pipelines.py").write_text(source.replace("{ratio}", "1.0"), encoding="utf-8")  # the fix
    retried = run_elt(["files", "retry", "shop", "sales"], cwd=project, database_url=database_url)
    assert retried.returncode == 3, retried.stderr  # partial: the two ragged rows are dead letters now
    assert "put back: sales.csv" in retried.stdout
    assert (drop / "processed" / "sales.csv").exists() and not list((drop / "rejected").glob("*"))
    assert db.execute("SELECT count(*) AS n FROM raw.shop_sales").fetchone()["n"] == 1
    assert manifest(db, "sales.csv")["status"] == "loaded"


def test_one_dialect_per_stream_a_differing_file_is_rejected_naming_both(tmp_path, loader, db):
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "a.csv").write_text(HEADER + "1,a,1\n", encoding="utf-8")
    assert run(pipeline(drop), loader).status == "success"
    (drop / "b.csv").write_text("id;name;amount\n" + "".join(f"{i};n{i};{i}\n" for i in range(2, 69)), encoding="utf-8")
    (drop / "c.csv").write_text(HEADER + "70,c,3\n", encoding="utf-8")
    result = run(pipeline(drop), loader)
    assert result.status == "partial" and result.streams["rows"].inserted == 1  # c.csv only
    [letter] = dead_letters(db)
    assert "file b.csv not loaded at line 1" in letter["e"]
    assert "its header 'id;name;amount' (delimiter ',', read with the stream's delimiter; this file's looks like ';')" \
        in letter["e"]
    assert "differs from the stream's 'id,name,amount' (delimiter ','), fixed by its first file 'a.csv'" in letter["e"]

    # A folder known to mix exports may sniff each file; the header is still the stream's.
    (drop / "d.csv").write_text("id;name;total\n71;d;4\n", encoding="utf-8")
    mixed = run(pipeline(drop, sniff_each_file=True), loader)
    assert mixed.status == "partial" and mixed.streams["rows"].inserted == 67  # b.csv now; not d.csv
    letter = dead_letters(db)[-1]
    assert "its header 'id;name;total' (delimiter ';', read with its own delimiter) differs" in letter["e"]


def test_an_unterminated_quote_at_the_end_is_a_truncated_line(tmp_path, loader, db):
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "cut.csv").write_text(HEADER + '1,a,1\n2,"b is cut', encoding="utf-8")
    (drop / "cut2.csv").write_text(HEADER + '1,a,1\n2,b,"12', encoding="utf-8")  # cut inside its last field
    result = run(pipeline(drop), loader)
    assert result.status == "partial" and len(payloads(db)) == 2
    reasons = {x["r"]["file"]: x["e"] for x in dead_letters(db)}
    assert reasons == {
        "cut.csv": "cut.csv line 3: truncated last line (a quoted field is never closed: the file was cut)",
        "cut2.csv": "cut2.csv line 3: truncated last line (a quoted field is never closed: the file was cut)"}


def test_the_bom_is_stripped_for_an_explicit_utf8(tmp_path, loader, db):
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "bom.csv").write_bytes("\ufeffid,name,amount\n1,é,1\n".encode())
    assert run(pipeline(drop, encoding="UTF-8"), loader).status == "success"
    assert [r["p"] for r in payloads(db)] == [{"id": "1", "name": "é", "amount": "1"}]


@pytest.mark.parametrize("settings", [{}, {"primary_key": "id", "write_strategy": "upsert"}])
def test_a_changed_file_replaces_its_old_version(tmp_path, loader, db, settings):
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "prices.csv").write_text(HEADER + "1,a,1\n2,b,2\n3,c,3\n", encoding="utf-8")
    (drop / "other.csv").write_text(HEADER + "9,z,9\n", encoding="utf-8")
    run(pipeline(drop, **settings), loader)
    (drop / "prices.csv").write_text(HEADER + "1,a,1\n3,c,30\n4,d,4\n", encoding="utf-8")  # 2 gone, 3 changed, 4 new
    (drop / "junk.csv").write_text(HEADER + "5,e\n6,f,6\n7,g,7\n8,h,8\n9,i,9\n10,j,10\n", encoding="utf-8")
    assert run(pipeline(drop, batch_size=2, **settings), loader).status == "partial"  # junk.csv: a ragged row
    live = db.execute("SELECT _raw_payload ->> 'id' AS id, _raw_payload ->> 'amount' AS amount FROM raw.files_rows"
                      " WHERE _deleted_at IS NULL AND _source_id NOT LIKE 'junk.csv:%'"
                      " ORDER BY (_raw_payload ->> 'id')::int").fetchall()
    assert [(r["id"], r["amount"]) for r in live] == [("1", "1"), ("3", "30"), ("4", "4"), ("9", "9")]
    gone = db.execute("SELECT _raw_payload ->> 'id' AS id FROM raw.files_rows WHERE _deleted_at IS NOT NULL"
                      " ORDER BY (_raw_payload ->> 'id')::int").fetchall()
    # Every row of the old version is marked, in append; an upserted key still present was updated in place.
    assert [r["id"] for r in gone] == (["2"] if settings else ["1", "2", "3"])
    # A dead letter from this run (junk.csv line 2) stays open: only earlier runs' letters are resolved.
    assert db.execute("SELECT count(*) AS n FROM pipeline.dead_letter WHERE resolved_at IS NULL").fetchone()["n"] == 1


def test_a_run_killed_in_the_middle_of_a_file_continues_after_its_committed_line(tmp_path, database_url, db):
    import signal
    import time

    from tests.fixtures.projects import popen_elt, run_elt, stop, write_project

    drop = tmp_path / "drop"
    drop.mkdir()
    n = 60_000
    (drop / "big.csv").write_text(HEADER + "".join(f"{i},n{i},{i % 97}\n" for i in range(1, n + 1)), encoding="utf-8")
    project = write_project(tmp_path / "proj", f"""
        from elt import FileExtractor, Pipeline

        class Big(FileExtractor):
            name = "big"
            folder = {str(drop)!r}
            batch_size = 500

        Pipeline("drop", streams=[Big()], transforms=False)
    """)
    proc = popen_elt(["run"], cwd=project, database_url=database_url)
    entry = None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        found = db.execute("SELECT to_regclass('pipeline.state') IS NOT NULL AS ok").fetchone()["ok"] and db.execute(
            "SELECT value FROM pipeline.state WHERE key = 'file:big.csv'").fetchone()
        if found and found["value"]["status"] == "loading" and found["value"]["committed_line"] > 2_000:
            entry = found["value"]
            break
        time.sleep(0.05)
    stop(proc, signal.SIGKILL)
    assert entry is not None, "the run finished before it could be killed mid-file"
    state = db.execute("SELECT value FROM pipeline.state WHERE key = 'file:big.csv'").fetchone()["value"]
    loaded = db.execute("SELECT count(*) AS n FROM raw.drop_big").fetchone()["n"]
    assert state["status"] == "loading" and loaded == state["rows"] == state["committed_line"] - 1  # they agree

    again = run_elt(["run"], cwd=project, database_url=database_url)
    assert again.returncode == 0, again.stderr
    counts = db.execute("SELECT count(*) AS n, count(DISTINCT _source_id) AS d FROM raw.drop_big").fetchone()
    assert counts == {"n": n, "d": n}
    final = db.execute("SELECT value FROM pipeline.state WHERE key = 'file:big.csv'").fetchone()["value"]
    assert final["status"] == "loaded" and final["rows"] == n
    log = db.execute("SELECT streams FROM pipeline.execution_log ORDER BY id DESC LIMIT 1").fetchone()["streams"]
    assert log["big"]["extracted"] == n - state["rows"]  # read on from the committed line, not from the top


def test_whole_files_a_file_failing_part_way_leaves_no_rows(tmp_path, loader, db):
    drop = tmp_path / "drop"
    drop.mkdir()
    lines = [f'{{"id": {i}}}\n'.encode() for i in range(1, 501)]
    lines[399] = b'{"id": 400, "note": "caf\xe9"}\n'
    (drop / "a.ndjson").write_bytes(b"".join(lines))
    (drop / "b.ndjson").write_bytes(b"".join(f'{{"id": {i}}}\n'.encode() for i in range(501, 751)))
    result = run(pipeline(drop, batch_size=100, whole_files=True), loader)
    assert result.status == "partial" and result.streams["rows"].batches == 1  # b.ndjson whole, in one batch
    assert sorted(r["p"]["id"] for r in payloads(db)) == list(range(501, 751))
    entry = manifest(db, "a.ndjson")
    assert (entry["status"], entry["rows"], entry["committed_line"]) == ("rejected", 0, 0)
    fixed = run(pipeline(drop, batch_size=100, whole_files=True, encoding="latin-1"), loader)
    assert fixed.status == "success" and fixed.streams["rows"].extracted == 500  # from the top
    assert len(payloads(db)) == 750


@pytest.mark.parametrize("name", ["events.ndjson", "events.json"])
def test_a_record_nested_thousands_of_levels_deep_is_dead_lettered_and_the_rest_of_the_file_loads(
        tmp_path, loader, db, name):
    # The standard library's parser stops near 1,000 levels (RecursionError): the file failed the stream.
    drop = tmp_path / "drop"
    drop.mkdir()
    records = ['{"id": 1}', '{"id": 2, "deep": ' + "[" * 5000 + "]" * 5000 + "}", '{"id": 3}']
    text = "".join(r + "\n" for r in records) if name.endswith("ndjson") else "[" + ", ".join(records) + "]"
    (drop / name).write_text(text, encoding="utf-8")
    result = run(pipeline(drop, max_bad_ratio=0.5), loader)

    assert result.status == "partial", result.summary.error_message
    assert [r["p"]["id"] for r in payloads(db)] == [1, 3]
    (letter,) = dead_letters(db)
    assert "record is nested too deeply" in letter["e"] and name in letter["e"]
