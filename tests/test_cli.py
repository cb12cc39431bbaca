"""The real ``elt`` command in subprocesses: kills, concurrency, secrets, exit codes, bookkeeping commands."""

from __future__ import annotations

import hashlib
import json
import signal
import time

import orjson
import pytest

from tests.fixtures.projects import popen_elt, run_elt, stop, write_project

N_RECORDS = 30_000

# A source of N_RECORDS records in cursor order; SLOW (seconds per batch) lets a
# test kill the run while it is loading.
SLOW_PROJECT = '''
import os, time
from elt import Pipeline, extractor

N = {n}
SLOW = float(os.environ.get("SLOW", "0"))

def source():
    for i in range(N):
        yield {{"id": i, "seq": i // 7, "name": f"record {{i}} — ünïcode", "tags": {{"even": i % 2 == 0}}}}

@extractor(name="items", primary_key="id", batch_size=1000, {settings})
def items(since):
    for n, record in enumerate(source()):
        if since is not None and {filter}:
            continue
        if SLOW and n % 1000 == 0:
            time.sleep(SLOW)
        yield record

Pipeline("shop", streams=[items])
'''


def checksum(records: list[dict]) -> str:
    hashes = [hashlib.md5(orjson.dumps(record, option=orjson.OPT_SORT_KEYS)).hexdigest() for record in records]
    return hashlib.md5("".join(hashes).encode()).hexdigest()


def expected_checksum(n: int = N_RECORDS) -> str:
    return checksum([{"id": i, "seq": i // 7, "name": f"record {i} — ünïcode", "tags": {"even": i % 2 == 0}}
                     for i in range(n)])


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def count(db, table: str) -> int:
    exists = db.execute("SELECT to_regclass(%s) AS t", (table,)).fetchone()["t"]
    return db.execute(f"SELECT count(*) AS n FROM {table}").fetchone()["n"] if exists else 0


@pytest.mark.slow
@pytest.mark.parametrize(
    "settings, filter_",
    [
        ('cursor="seq", write_strategy="append_dedup"', 'record["seq"] < since'),
        ('write_strategy="upsert"', "False"),
        ('write_strategy="replace"', "False"),
        ('cursor="seq", write_strategy="append"', 'record["seq"] < since'),
    ],
    ids=["append_dedup", "upsert", "replace", "append"],
)
def test_a_run_killed_mid_stream_and_re_run_ends_with_exactly_the_source(tmp_path, database_url, db, settings, filter_):
    project = write_project(tmp_path / "p", SLOW_PROJECT.format(n=N_RECORDS, settings=settings, filter=filter_))
    proc = popen_elt(["run"], cwd=project, database_url=database_url, SLOW="0.15")
    try:
        # The run log shows committed progress (for replace, rows sit in the shadow table).
        wait_for(lambda: count(db, "pipeline.execution_log") and db.execute(
            "SELECT max(rows_loaded) AS n FROM pipeline.execution_log").fetchone()["n"] >= 3000)
    finally:
        code = stop(proc, signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert count(db, "raw.shop_items") < N_RECORDS
    assert db.execute("SELECT status FROM pipeline.execution_log").fetchone()["status"] == "running"

    rerun = run_elt(["run"], cwd=project, database_url=database_url)
    assert rerun.returncode == 0, rerun.stderr

    assert count(db, "raw.shop_items") == N_RECORDS
    # The payloads read back, compared with the source records (not with a hash elt computed).
    payloads = db.execute("SELECT _raw_payload FROM raw.shop_items ORDER BY id::int").fetchall()
    assert checksum([p["_raw_payload"] for p in payloads]) == expected_checksum()
    assert db.execute("SELECT count(DISTINCT id) AS n FROM raw.shop_items").fetchone()["n"] == N_RECORDS
    statuses = [r["status"] for r in db.execute("SELECT status FROM pipeline.execution_log ORDER BY id").fetchall()]
    assert statuses == ["failed", "success"]  # the killed run is closed as abandoned


@pytest.mark.slow
def test_a_second_concurrent_run_is_skipped_with_a_clear_message(tmp_path, database_url, db):
    project = write_project(tmp_path / "p", SLOW_PROJECT.format(n=N_RECORDS, settings='write_strategy="upsert"', filter="False"))
    first = popen_elt(["run"], cwd=project, database_url=database_url, SLOW="0.2")
    try:
        wait_for(lambda: count(db, "raw.shop_items") > 0)
        second = run_elt(["run"], cwd=project, database_url=database_url)
        assert second.returncode == 4
        assert "another run of shop is in progress" in second.stderr + second.stdout
        rows = db.execute("SELECT status, error_message FROM pipeline.execution_log ORDER BY id").fetchall()
        assert [r["status"] for r in rows] == ["running", "skipped"]
    finally:
        code = stop(first, signal.SIGTERM)
    assert code == 128 + signal.SIGTERM
    closed = db.execute("SELECT status, error_message, completed_at FROM pipeline.execution_log ORDER BY id LIMIT 1").fetchone()
    assert closed["status"] == "failed" and closed["error_message"] == "interrupted" and closed["completed_at"]


@pytest.mark.slow
def test_sigterm_mid_run_commits_the_batch_in_flight_and_leaves_a_consistent_log(tmp_path, database_url, db):
    project = write_project(tmp_path / "p", SLOW_PROJECT.format(n=N_RECORDS, settings='cursor="seq"', filter="False"))
    proc = popen_elt(["run"], cwd=project, database_url=database_url, SLOW="0.3")
    try:
        wait_for(lambda: count(db, "pipeline.execution_log") and db.execute(
            "SELECT max(rows_loaded) AS n FROM pipeline.execution_log").fetchone()["n"] >= 2000)
    finally:
        code = stop(proc, signal.SIGTERM)
    assert code == 128 + signal.SIGTERM
    row = db.execute("SELECT status, error_message, rows_loaded, completed_at FROM pipeline.execution_log").fetchone()
    assert row["status"] == "failed" and row["error_message"] == "interrupted" and row["completed_at"]
    loaded = count(db, "raw.shop_items")
    # Whole batches only (batch_size 1000), exactly what the log row says, and the watermark matches them.
    assert loaded % 1000 == 0 and loaded == row["rows_loaded"] and loaded < N_RECORDS
    mark = db.execute("SELECT value FROM pipeline.state WHERE key = 'watermark'").fetchone()["value"]["value"]
    assert mark == db.execute("SELECT max(seq) AS m FROM raw.shop_items").fetchone()["m"]


SECRET_PROJECT = '''
from elt import Pipeline, extractor, from_env

TOKEN = from_env("SHOP_API_TOKEN")

@extractor(name="items", primary_key="id")
def items(since):
    yield {"id": 1}
    raise RuntimeError(f"401 Unauthorized for https://api.example.test/items?api_key={TOKEN.value}")

Pipeline("shop", streams=[items])
'''


def test_a_secret_never_appears_in_logs_errors_or_the_run_log(tmp_path, database_url, db):
    secret = "sk_live_5f3a9c0e7d1b42a8"
    password = "hunter2-db-password"
    url = database_url.replace("postgres:@", f"postgres:{password}@")
    project = write_project(tmp_path / "p", SECRET_PROJECT)
    result = run_elt(["run"], cwd=project, database_url=url, SHOP_API_TOKEN=secret)
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert "401 Unauthorized" in output and "api_key=***" in output
    stored = json.dumps(db.execute("SELECT error_message, error_detail FROM pipeline.execution_log").fetchall())
    assert "api_key=***" in stored
    for leaked in (secret, password):
        assert leaked not in output
        assert leaked not in stored


def test_status_state_and_dead_letter_commands(tmp_path, database_url, db):
    project = write_project(tmp_path / "p", '''
        from pydantic import BaseModel
        from elt import Pipeline, extractor

        class Item(BaseModel):
            id: int
            price: float

        @extractor(primary_key="id", cursor="id", contract=Item, max_bad_ratio=0.5)
        def items(since):
            yield from [{"id": 1, "price": 2}, {"id": 2, "price": "n/a"}, {"id": 3, "price": 4}]

        Pipeline("shop", streams=[items])
    ''')
    first = run_elt(["run", "shop"], cwd=project, database_url=database_url)
    assert first.returncode == 3, first.stderr  # partial
    assert "1 record(s) rejected" in first.stderr

    status = run_elt(["status", "--json"], cwd=project, database_url=database_url)
    runs = json.loads(status.stdout)
    assert runs[0]["status"] == "partial" and runs[0]["rows_loaded"] == 2 and runs[0]["rows_rejected"] == 1

    state = json.loads(run_elt(["state", "show", "--json"], cwd=project, database_url=database_url).stdout)
    assert [(s["stream_name"], s["value"]["value"]) for s in state] == [("items", 3)]

    letters = json.loads(run_elt(["dead-letter", "list", "--json"], cwd=project, database_url=database_url).stdout)
    assert len(letters) == 1 and "price" in letters[0]["error_message"]
    shown = json.loads(run_elt(["dead-letter", "show", str(letters[0]["id"])], cwd=project, database_url=database_url).stdout)
    assert shown["source_record"] == {"id": 2, "price": "n/a"}

    resolved = run_elt(["dead-letter", "resolve", str(letters[0]["id"]), "--by", "bob", "--note", "bad upstream row"],
                       cwd=project, database_url=database_url)
    assert resolved.returncode == 0 and "resolved 1" in resolved.stdout
    row = db.execute("SELECT resolved_by, resolution FROM pipeline.dead_letter").fetchone()
    assert row == {"resolved_by": "bob", "resolution": "bad upstream row"}
    # An id that is unknown (or resolved already) is an error a script can see.
    again = run_elt(["dead-letter", "resolve", str(letters[0]["id"]), "999999", "--by", "bob"],
                    cwd=project, database_url=database_url)
    assert again.returncode == 1 and "2 id(s) were unknown or already resolved" in again.stderr

    reset = run_elt(["state", "reset", "shop", "--yes"], cwd=project, database_url=database_url)
    assert reset.returncode == 0 and "reset 1 watermark" in reset.stdout
    assert count(db, "pipeline.state WHERE key = 'watermark'") == 0

    refused = run_elt(["state", "reset", "shop"], cwd=project, database_url=database_url)
    assert refused.returncode == 1  # no confirmation on a closed stdin: nothing reset


def test_dead_letter_replay_from_the_command_line(tmp_path, database_url, db):
    source = '''
        import os
        from pydantic import BaseModel
        from elt import Pipeline, extractor

        class Item(BaseModel):
            id: int
            price: float

        @extractor(primary_key="id", contract=Item if os.environ.get("STRICT") else None, max_bad_ratio=1)
        def items():
            yield from [{"id": 1, "price": 2}, {"id": 2, "price": "n/a"}]

        Pipeline("shop", streams=[items])
    '''
    project = write_project(tmp_path / "p", source)
    assert run_elt(["run"], cwd=project, database_url=database_url, STRICT="1").returncode == 3
    replay = run_elt(["dead-letter", "replay", "shop", "--by", "carol"], cwd=project, database_url=database_url)
    assert replay.returncode == 0, replay.stderr
    assert ("1 record(s) loaded and resolved, 0 resolved as superseded (a newer version is stored),"
            " 0 still rejected") in replay.stdout
    assert count(db, "raw.shop_items") == 2
    assert db.execute("SELECT trigger FROM pipeline.execution_log ORDER BY id DESC LIMIT 1").fetchone()["trigger"] == "replay"


def test_a_replay_that_rejects_records_again_exits_1_naming_how_many_and_why(tmp_path, database_url, db):
    source = '''
        import os
        from typing import Literal
        from pydantic import BaseModel
        from elt import Pipeline, extractor

        class Item(BaseModel):
            id: int
            price: float

        class Fixed(BaseModel):  # the fix only covers "n/a"
            id: int
            price: float | Literal["n/a"]

        @extractor(primary_key="id", contract=Fixed if os.environ.get("FIXED") else Item, max_bad_ratio=1)
        def items():
            yield from [{"id": 1, "price": 2}, {"id": 2, "price": "n/a"}, {"id": 3, "price": "x"},
                        {"id": 4, "price": "free"}]

        Pipeline("shop", streams=[items])
    '''
    project = write_project(tmp_path / "p", source)
    assert run_elt(["run"], cwd=project, database_url=database_url).returncode == 3
    replay = run_elt(["dead-letter", "replay", "shop"], cwd=project, database_url=database_url, FIXED="1")
    assert replay.returncode == 1, replay.stderr
    assert "1 record(s) loaded and resolved" in replay.stdout and "2 still rejected" in replay.stdout
    message = " ".join(replay.stderr.split())
    assert "stream 'items': 2 of 3 replayed record(s) were rejected again" in message
    assert "2 × contract Fixed rejected the record: price" in message
    assert sorted(r["id"] for r in db.execute("SELECT id FROM raw.shop_items")) == ["1", "2"]
    unresolved = db.execute("SELECT source_record FROM pipeline.dead_letter WHERE resolved_at IS NULL ORDER BY id")
    assert [r["source_record"]["id"] for r in unresolved] == [3, 4]
    log = db.execute("SELECT status, rows_loaded FROM pipeline.execution_log ORDER BY id DESC LIMIT 1").fetchone()
    assert (log["status"], log["rows_loaded"]) == ("failed", 1)


def test_errors_name_the_fix(tmp_path, database_url):
    missing = run_elt(["run"], cwd=tmp_path, database_url=database_url)
    assert missing.returncode == 2
    assert "no pipelines module" in missing.stderr and "--project" in missing.stderr

    project = write_project(tmp_path / "p", 'from elt import Pipeline, extractor\n'
                            '@extractor(primary_key="id")\ndef items():\n    yield {"id": 1}\n'
                            'Pipeline("shop", streams=[items])\n')
    unknown = run_elt(["run", "nope"], cwd=project, database_url=database_url)
    assert unknown.returncode == 2 and "unknown pipeline(s) nope; this project has shop" in unknown.stderr

    unreachable = run_elt(["status"], cwd=project, database_url="postgresql://elt:pw1234567@127.0.0.1:1/none")
    assert unreachable.returncode == 1  # a database that cannot be reached: failed, not a usage error
    assert "cannot connect to the database" in unreachable.stderr and "pw1234567" not in unreachable.stderr


SINCE_PROJECT = '''
from elt import Cursor, Pipeline, extractor

@extractor(name="orders", primary_key="id", cursor="updated_at")
def orders(since):
    yield {"id": 1, "updated_at": "2026-01-31T08:00:00+00:00"}

@extractor(name="counts", primary_key="id", cursor=Cursor("seq", kind="integer"))
def counts(since):
    yield {"id": 1, "seq": 7}

Pipeline("a_shop", streams=[orders])
Pipeline("b_stock", streams=[counts])
'''


def test_a_malformed_since_is_a_usage_error_before_any_run_starts(tmp_path, database_url, db):
    project = write_project(tmp_path / "p", SINCE_PROJECT)
    # Before any run: pipeline a_shop's cursor kind is not known yet, b_stock's is declared.
    garbage = run_elt(["run", "--since", "garbage"], cwd=project, database_url=database_url)
    assert garbage.returncode == 2, garbage.stderr
    assert "--since 'garbage' for stream 'orders' (cursor 'updated_at')" in garbage.stderr
    assert "ISO-8601 timestamp" in garbage.stderr
    assert count(db, "pipeline.execution_log") == 0

    assert run_elt(["run"], cwd=project, database_url=database_url).returncode == 0
    # Now a_shop's stored kind (timestamp) takes the date, but b_stock's integer cursor cannot: neither runs.
    wrong = run_elt(["run", "--since", "2026-01-01"], cwd=project, database_url=database_url)
    assert wrong.returncode == 2, wrong.stderr
    assert "--since '2026-01-01' for stream 'counts' (cursor 'seq'): not a valid integer; give a whole number" \
        in wrong.stderr
    assert count(db, "pipeline.execution_log") == 2
    assert run_elt(["run", "a_shop", "--since", "2026-01-01"], cwd=project, database_url=database_url).returncode == 0


@pytest.mark.slow
def test_demo_runs_on_the_embedded_default_and_a_second_run_changes_nothing(tmp_path, embedded_dir):
    # The real embedded default: no ELT_DATABASE_URL at all.
    env = {"ELT_EMBEDDED_DIR": str(embedded_dir)}
    demo = run_elt(["demo"], cwd=tmp_path, database_url="", timeout=180, **env)
    assert demo.returncode == 0, demo.stderr
    assert "embedded PostgreSQL" in demo.stdout + demo.stderr
    project = tmp_path / "elt-demo"
    assert (project / "pipelines.py").is_file()
    again = run_elt(["run"], cwd=project, database_url="", **env)
    assert again.returncode == 0, again.stderr
    runs = json.loads(run_elt(["status", "--json"], cwd=project, database_url="", **env).stdout)
    assert [r["status"] for r in runs] == ["success", "success"]
    assert runs[1]["rows_loaded"] == 3400
    second = runs[0]["streams"]
    assert second["orders"]["inserted"] == 0 and second["orders"]["updated"] == 0
    assert second["customers"]["inserted"] == 0 and second["customers"]["updated"] == 0
    # The demo's sql/ models built after each load.
    assert runs[1]["rows_transformed"] > 0
    built = json.loads(run_elt(["status", "--json"], cwd=project, database_url="", **env).stdout)[0]
    assert built["status"] == "success" and built["rows_transformed"] > 0
    dry = run_elt(["transform", "--dry-run"], cwd=project, database_url="", **env)
    assert "CREATE MATERIALIZED VIEW rpt.customer_value AS" in dry.stdout
    again_demo = run_elt(["demo"], cwd=tmp_path, database_url="", **env)
    assert again_demo.returncode == 2 and "already exists" in again_demo.stderr




def test_the_database_url_comes_from_the_projects_env_file_and_stream_selects(tmp_path, database_url, db):
    project = write_project(tmp_path / "p", '''
        from elt import Pipeline, extractor

        @extractor(primary_key="id")
        def items():
            yield {"id": 1}

        @extractor(primary_key="id")
        def other():
            yield {"id": 2}

        Pipeline("shop", streams=[items, other])
    ''')
    (project / ".env").write_text(f"ELT_DATABASE_URL={database_url}\n")
    result = run_elt(["run", "shop", "--stream", "other"], cwd=project, database_url=None)
    assert result.returncode == 0, result.stderr
    assert count(db, "raw.shop_other") == 1 and count(db, "raw.shop_items") == 0
    both = run_elt(["run", "--stream", "other"], cwd=project, database_url="")  # empty var: .env still used
    assert both.returncode == 0, both.stderr
    assert [r["status"] for r in db.execute("SELECT status FROM pipeline.execution_log").fetchall()] == ["success"] * 2


def test_project_option_is_accepted_after_the_command_too(tmp_path, database_url, db):
    from elt.cli import _hoist_project

    assert _hoist_project(["run", "shop", "--project", "p"]) == ["--project", "p", "run", "shop"]
    assert _hoist_project(["--project", "p", "run"]) == ["--project", "p", "run"]
    assert _hoist_project(["state", "show", "-p", "p"]) == ["-p", "p", "state", "show"]
    assert _hoist_project(["run", "--project=p"]) == ["--project=p", "run"]
    project = write_project(tmp_path / "p", "from elt import Pipeline, extractor\n\n"
                            "@extractor(primary_key='id')\ndef items():\n    yield {'id': 1}\n\n"
                            "Pipeline('shop', streams=[items])\n")
    result = run_elt(["run", "--project", str(project)], cwd=tmp_path, database_url=database_url)
    assert result.returncode == 0, result.stderr
    assert db.execute("SELECT count(*) AS n FROM raw.shop_items").fetchone()["n"] == 1


READS_SETTINGS_AT_IMPORT = '''
    import os
    from elt import Pipeline, extractor

    WHERE = os.environ.get("SHOP_SOURCE", "samples")  # read at import, as generated projects do

    @extractor(primary_key="id")
    def items():
        yield {"id": 1, "where": WHERE}

    Pipeline("shop", streams=[items], every="1h")
'''


def test_settings_in_env_are_loaded_before_pipelines_py_is_imported(tmp_path, database_url, db):
    project = write_project(tmp_path / "p", READS_SETTINGS_AT_IMPORT)
    (project / ".env").write_text(f"ELT_DATABASE_URL={database_url}\nSHOP_SOURCE=live\n")
    # From another folder with --project, as systemd and cron call it.
    result = run_elt(["--project", str(project), "run"], cwd=tmp_path, database_url=None)
    assert result.returncode == 0, result.stderr
    assert db.execute("SELECT _raw_payload->>'where' AS w FROM raw.shop_items").fetchone()["w"] == "live"

    other = tmp_path / "staging.env"
    other.write_text(f"ELT_DATABASE_URL={database_url}\nSHOP_SOURCE=staging\n")
    result = run_elt(["--project", str(project), "run", "--full-refresh"], cwd=tmp_path, database_url=None,
                     ELT_ENV_FILE=str(other))
    assert result.returncode == 0, result.stderr
    rows = db.execute("SELECT _raw_payload->>'where' AS w FROM raw.shop_items").fetchall()
    assert [r["w"] for r in rows] == ["staging"]  # upsert by id: the record as the other settings file made it
    missing = run_elt(["run"], cwd=project, database_url=None, ELT_ENV_FILE=str(tmp_path / "nope.env"))
    assert missing.returncode == 2 and "ELT_ENV_FILE=" in missing.stderr and "no such file" in missing.stderr


def test_schedule_table_prints_next_runs_in_utc(tmp_path, database_url):
    import datetime as dt

    from elt import Pipeline
    from elt.schedules import Schedule

    project = write_project(tmp_path / "p", '''
        from elt import Pipeline
        Pipeline("sydney", schedule="0 6 * * *", tz="Australia/Sydney")
    ''')
    before = dt.datetime.now(dt.UTC)
    result = run_elt(["schedule"], cwd=project, database_url=database_url)
    assert result.returncode == 0, result.stderr
    nxt = Schedule.of(Pipeline("sydney", schedule="0 6 * * *", tz="Australia/Sydney")).next_after(before)
    utc = nxt.astimezone(dt.UTC)
    assert utc.hour in (19, 20)  # 06:00 in Sydney is 19:00 or 20:00 UTC, never "06:00"
    assert f"{utc:%Y-%m-%d %H:%M}" in result.stdout, result.stdout
