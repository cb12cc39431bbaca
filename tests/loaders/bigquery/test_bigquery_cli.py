"""The real ``elt`` command on a BigQuery project (ELT_DESTINATION=bigquery, the emulator): a run killed
mid-load and run again, then `elt status`, `elt check` and `elt dead-letter list` on what it left."""

from __future__ import annotations

import json
import signal
import time

from tests.fixtures.projects import popen_elt, run_elt, stop, write_project

PROJECT = """
import pydantic
from elt import Pipeline, extractor

class Item(pydantic.BaseModel):
    n: int
    v: str

def read(since):
    for n in range(150):
        if since is None or n > since:
            yield {"n": n, "v": f"value {n}"} if n != 7 else {"n": n, "v": None}

items = extractor(read, name="items", primary_key="n", cursor="n", write_strategy="upsert", batch_size=25,
                  contract=Item, max_bad_ratio=0.01)
Pipeline("shop", streams=[items])
"""


def test_a_run_killed_between_batches_reruns_to_exactly_the_source(tmp_path, bq_emulator, bq_prefix):
    project = write_project(tmp_path / "proj", PROJECT)
    env = {"ELT_DESTINATION": "bigquery", "ELT_BIGQUERY_PROJECT": bq_emulator.project,
           "ELT_BIGQUERY_DATASET_PREFIX": bq_prefix, "ELT_BIGQUERY_ENDPOINT": bq_emulator.endpoint}
    client = bq_emulator.client()
    state = f"`{bq_emulator.project}.{bq_prefix}pipeline.state`"

    proc = popen_elt(["run"], cwd=project, database_url=None, **env)  # type: ignore[arg-type]
    try:
        # SIGKILL as soon as a first batch (rows and watermark in one transaction) is committed.
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if list(client.query(f"SELECT 1 FROM {state} WHERE key = 'watermark'").result()):
                    break
            except Exception:  # noqa: BLE001 - the dataset or table is not there yet
                pass
            time.sleep(0.3)
        assert proc.poll() is None, "the run ended before it could be killed; make the source larger"
    finally:
        stop(proc, signal.SIGKILL)

    again = run_elt(["run"], cwd=project, database_url=None, timeout=300, **env)  # type: ignore[arg-type]
    # Record 7 (no v) was dead-lettered by the killed run's first batch; the re-run reads on from its watermark.
    assert again.returncode == 0, again.stderr[-3000:]

    raw = f"`{bq_emulator.project}.{bq_prefix}raw.shop_items`"
    rows = [dict(r) for r in client.query(f"SELECT n, TO_JSON_STRING(_raw_payload) AS p FROM {raw}").result()]
    assert sorted(int(r["n"]) for r in rows) == [n for n in range(150) if n != 7]  # no duplicate, no gap
    assert all(json.loads(r["p"]) == {"n": int(r["n"]), "v": f"value {r['n']}"} for r in rows)

    status = run_elt(["status", "--json"], cwd=project, database_url=None, **env)  # type: ignore[arg-type]
    assert status.returncode == 0, status.stderr[-2000:]
    runs = json.loads(status.stdout)
    assert [r["status"] for r in runs] == ["success", "failed"]  # the killed run: closed as abandoned
    assert "abandoned" in runs[1]["error_message"]

    letters = run_elt(["dead-letter", "list", "--json"], cwd=project, database_url=None, **env)  # type: ignore[arg-type]
    assert letters.returncode == 0, letters.stderr[-2000:]
    assert [letter["stream_name"] for letter in json.loads(letters.stdout)] == ["items"]

    # The failed (killed) run is history once a run succeeded after it; the letter is not a day old.
    check = run_elt(["check", "--json"], cwd=project, database_url=None, **env)  # type: ignore[arg-type]
    assert check.returncode == 0 and json.loads(check.stdout) == {"ok": True, "problems": []}, check.stdout + check.stderr


HUGE = """
from elt import Pipeline, extractor

def read(since):
    yield {"id": 1, "n": 5}
    yield {"id": 2, "n": 123456789012345678901234567890}

Pipeline("shop", streams=[extractor(read, name="items", primary_key="id", max_bad_ratio=1)])
"""


def test_a_record_bigquery_json_cannot_hold_is_shown_exactly_and_replay_keeps_it(tmp_path, bq_emulator, bq_prefix):
    project = write_project(tmp_path / "proj", HUGE)
    env = {"ELT_DESTINATION": "bigquery", "ELT_BIGQUERY_PROJECT": bq_emulator.project,
           "ELT_BIGQUERY_DATASET_PREFIX": bq_prefix, "ELT_BIGQUERY_ENDPOINT": bq_emulator.endpoint}
    first = run_elt(["run"], cwd=project, database_url=None, timeout=300, **env)  # type: ignore[arg-type]
    assert first.returncode != 0 and "1 record(s) rejected" in first.stdout + first.stderr, first.stdout + first.stderr

    listed = run_elt(["dead-letter", "list", "--json"], cwd=project, database_url=None, **env)  # type: ignore[arg-type]
    (letter,) = json.loads(listed.stdout)
    assert "record id='2': field 'n' = 123456789012345678901234567890" in letter["error_message"]
    shown = run_elt(["dead-letter", "show", str(letter["id"])], cwd=project, database_url=None, **env)  # type: ignore[arg-type]
    assert json.loads(shown.stdout)["source_record"] == {"id": 2, "n": 123456789012345678901234567890}

    replay = run_elt(["dead-letter", "replay", "shop"], cwd=project, database_url=None, **env)  # type: ignore[arg-type]
    assert replay.returncode != 0 and "0 record(s) loaded and resolved" in replay.stdout and "1 still rejected" in replay.stdout
    again = run_elt(["dead-letter", "list", "--json"], cwd=project, database_url=None, **env)  # type: ignore[arg-type]
    assert [r["id"] for r in json.loads(again.stdout)] == [letter["id"]]
