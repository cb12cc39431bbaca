"""`elt check`: the health checks, computed from the run log, raw tables and dead letters."""

from __future__ import annotations

import datetime as dt
import json

from elt import Pipeline
from elt.health import run_checks
from tests.fixtures.projects import run_elt, write_project
from tests.helpers import list_stream, run

NOW = dt.datetime.now(dt.UTC)


def log_run(db, pipeline, status, started, seconds=5, error=None):
    db.execute(
        "INSERT INTO pipeline.execution_log (pipeline_name, status, started_at, completed_at, error_message, trigger)"
        " VALUES (%s, %s, %s, %s, %s, 'schedule')",
        (pipeline, status, started, None if status == "running" else started + dt.timedelta(seconds=seconds), error))


def kinds(problems):
    return sorted((p.check, p.subject) for p in problems)


def test_a_healthy_project_has_no_problems(loader, db):
    pipeline = Pipeline("shop", every="1h", streams=[list_stream([{"id": 1}], primary_key="id")])
    assert run(pipeline, loader).status == "success"
    assert run_checks(loader.store, [pipeline]) == []


def test_each_check_finds_its_problem(loader, db):
    hourly = Pipeline("hourly", every="1h")
    daily = Pipeline("daily", schedule="0 6 * * *", tz="Australia/Sydney")
    never = Pipeline("never", every="15m")
    slow = Pipeline("slow", timeout=600)
    stream = list_stream([{"id": 1}], name="items", primary_key="id", freshness="6h")
    fresh = Pipeline("fresh", streams=[stream])
    assert run(fresh, loader).status == "success"
    # 3. stale: its last complete read was 7 hours ago.
    db.execute("UPDATE pipeline.execution_log SET completed_at = now() - interval '7 hours'"
               " WHERE pipeline_name = 'fresh'")

    # 1. failed in the last 24 h and not fixed since; an older failure that a success followed is history.
    log_run(db, "daily", "failed", NOW - dt.timedelta(minutes=30), error="stream 'x': HTTP 503")
    log_run(db, "hourly", "failed", NOW - dt.timedelta(hours=5), error="old")
    # 2. missing: the last hourly success was 4 hours ago.
    log_run(db, "hourly", "success", NOW - dt.timedelta(hours=4))
    log_run(db, "daily", "success", NOW - dt.timedelta(hours=1))  # not missing, whatever the time of day
    # 4. old unresolved dead letters.
    db.execute("INSERT INTO pipeline.dead_letter (pipeline_name, stream_name, source_record, error_message, created_at,"
               " record_hash) VALUES ('fresh', 'items', '{}', 'bad', now() - interval '2 days', 'h1'),"
               " ('fresh', 'items', '{}', 'bad', now() - interval '3 hours', 'h2')")
    # 5. stuck: running for an hour with a 10-minute timeout.
    log_run(db, "slow", "running", NOW - dt.timedelta(hours=1))

    problems = run_checks(loader.store, [hourly, daily, never, slow, fresh])
    assert kinds(problems) == [
        ("dead_letters", "fresh.items"),
        ("failed_run", "daily"),
        ("missing_run", "hourly"),
        ("missing_run", "never"),
        ("stale_data", "fresh.items"),
        ("stuck_run", "slow"),
    ]
    text = {p.key: p.detail for p in problems}
    assert "HTTP 503" in text["failed_run:daily"]
    assert "Is the scheduler running?" in text["missing_run:hourly"]
    assert text["missing_run:never"].startswith("never ran (every 15m)")
    assert "longer ago than its freshness SLA of 6:00:00" in text["stale_data:fresh.items"]
    assert text["dead_letters:fresh.items"].startswith("1 unresolved dead letter(s) older than a day")
    assert "past its timeout of 0:10:00" in text["stuck_run:slow"]


def test_elt_check_exits_1_with_json_when_something_is_wrong(tmp_path, database_url, db):
    project = write_project(tmp_path / "p", """
        from elt import Pipeline, extractor

        @extractor(primary_key="id")
        def items():
            yield {"id": 1}

        Pipeline("shop", streams=[items], every="1h")
    """)
    assert run_elt(["run"], cwd=project, database_url=database_url).returncode == 0
    healthy = run_elt(["check"], cwd=project, database_url=database_url)
    assert healthy.returncode == 0 and "all healthy" in healthy.stdout
    db.execute("UPDATE pipeline.execution_log SET started_at = started_at - interval '3 hours'")
    result = run_elt(["check", "--json"], cwd=project, database_url=database_url)
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False and [p["check"] for p in report["problems"]] == ["missing_run"]


def test_an_incremental_model_without_a_recent_full_refresh_is_a_problem(loader, tmp_path):
    from tests.transforms.conftest import write_models

    write_models(tmp_path, {"mart/events.sql": "-- materialized: incremental\n-- unique_key: id\n-- watermark: at\n"
                                               "-- full_refresh_every: 7d\nSELECT 1 AS id, now() AS at"})
    problems = run_checks(loader.store, [], project_dir=tmp_path)
    assert kinds(problems) == [("full_refresh_overdue", "mart.events")]
    assert "elt transform --full-refresh --select mart.events" in problems[0].detail


def test_partial_runs_and_failed_models_are_problems_until_a_success(loader, db):
    log_run(db, "shop", "partial", NOW - dt.timedelta(hours=2), error="model mart.revenue: division by zero")
    log_run(db, "transforms", "partial", NOW - dt.timedelta(hours=1), error="model mart.daily: syntax error")
    problems = {p.key: p.detail for p in run_checks(loader.store, [])}
    assert "division by zero" in problems["partial_run:shop"]
    assert "syntax error" in problems["partial_run:transforms"]
    log_run(db, "shop", "success", NOW - dt.timedelta(minutes=5))
    assert "partial_run:shop" not in {p.key for p in run_checks(loader.store, [])}


def test_freshness_comes_from_the_last_complete_read_not_the_newest_row(loader, db):
    # An upsert of unchanged records writes nothing: the newest row is old, the data is fresh.
    stream = list_stream([{"id": 1}], name="items", primary_key="id", write_strategy="upsert", freshness="6h")
    pipeline = Pipeline("shop", streams=[stream])
    run(pipeline, loader)
    db.execute("UPDATE raw.shop_items SET _loaded_at = now() - interval '3 days'")
    db.execute("UPDATE pipeline.execution_log SET completed_at = now() - interval '3 days'")
    assert [p.check for p in run_checks(loader.store, [pipeline])] == ["stale_data"]
    run(pipeline, loader)  # reads everything again, writes nothing
    assert run_checks(loader.store, [pipeline]) == []


def test_young_dead_letters_can_be_flagged(loader, db, monkeypatch):
    db.execute("INSERT INTO pipeline.dead_letter (pipeline_name, stream_name, source_record, error_message,"
               " record_hash) VALUES ('shop', 'items', '{}', 'bad', 'h1')")
    assert run_checks(loader.store, []) == []
    monkeypatch.setenv("ELT_DEAD_LETTERS_AFTER", "0s")
    assert [p.key for p in run_checks(loader.store, [])] == ["dead_letters:shop.items"]
