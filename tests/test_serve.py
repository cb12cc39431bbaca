"""`elt serve` for real: a scheduler process with second-long intervals, child runs, timeouts, alerts, SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from tests.fixtures.projects import elt_env, write_project

pytestmark = pytest.mark.slow

PROJECT = '''
import os, time
from elt import Alerts, Pipeline, Webhook, extractor

@extractor(primary_key="id")
def ticks():
    time.sleep(0.3)  # long enough for an overlap to show, were there one
    yield {"id": int(time.time() * 1000)}

@extractor(primary_key="id")
def rollup():
    yield {"id": 1}

@extractor(primary_key="id")
def stuck():
    yield {"id": 1}
    time.sleep(600)  # a source call that never returns

Pipeline("up", streams=[ticks], every="2s")
Pipeline("down", streams=[rollup], after=["up"])
Pipeline("hung", streams=[stuck], every="3s", timeout=2)
Alerts(Webhook(os.environ["HOOK_URL"]), check_every="2s", remind_every="1h", retry_wait=0.1)
'''


def test_serve_runs_on_schedule_in_order_without_overlap_kills_hung_runs_and_alerts_once(
        tmp_path, database_url, db, fake_api):
    hooks = []
    fake_api.route("/hook", lambda r: hooks.append(r.body.decode()) or {"ok": True}, method="POST")
    project = write_project(tmp_path / "p", PROJECT)
    env = elt_env(database_url, HOOK_URL=f"{fake_api.url}/hook", ELT_STOP_GRACE="5")
    serve = subprocess.Popen([sys.executable, "-m", "elt", "serve"], cwd=project, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    # No fixed sleep: on a busy machine runs start late, so wait (bounded) until the scheduler
    # has shown what this test checks, then stop it. Margins are generous for a loaded 2-core CI.
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and serve.poll() is None:
            if db.execute("SELECT to_regclass('pipeline.execution_log') AS t").fetchone()["t"] is None:
                time.sleep(0.5)  # the scheduler's first run has not created elt's schema yet
                continue
            rows = db.execute("SELECT pipeline_name AS p, status, error_message FROM pipeline.execution_log"
                              " WHERE status <> 'running'").fetchall()
            ups = [r for r in rows if r["p"] == "up" and r["status"] == "success"]
            downs = [r for r in rows if r["p"] == "down"]
            timed_out = [r for r in rows if r["p"] == "hung" and (r["error_message"] or "").startswith("timed out")]
            if len(ups) >= 3 and downs and timed_out and any("failed run: hung" in h for h in hooks):
                break
            time.sleep(0.5)
        serve.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        _, stderr = serve.communicate(timeout=90)
        stop_seconds = time.monotonic() - stopped
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.communicate()
    assert serve.returncode == 0, stderr[-3000:]
    assert stop_seconds < 60  # a hung run gets ELT_STOP_GRACE (5 s), then the kill; not the 600 s sleep

    rows = db.execute("SELECT pipeline_name AS p, status, trigger, started_at, completed_at, error_message"
                      " FROM pipeline.execution_log ORDER BY started_at").fetchall()
    by = {name: [r for r in rows if r["p"] == name] for name in ("up", "down", "hung")}
    assert len(by["up"]) >= 3 and all(r["trigger"] == "schedule" for r in by["up"])
    # No overlap: each run of `up` starts after the previous one ended.
    ups = [r for r in by["up"] if r["completed_at"]]
    assert all(later["started_at"] >= earlier["completed_at"] for earlier, later in zip(ups, ups[1:], strict=False))
    # Order under `after`: every run of `down` started after a successful `up` had finished.
    assert by["down"]
    for run in by["down"]:
        assert any(u["status"] == "success" and u["completed_at"] <= run["started_at"] for u in by["up"])
    # The hung runs were stopped at their timeout and say so; only the one SIGTERM caught
    # (the newest, when it was still inside its 2 s) may say "interrupted" instead.
    hung = [r for r in by["hung"] if r["status"] == "failed"]
    assert hung and all(r["error_message"].startswith("timed out after 2 s") for r in hung[:-1])
    assert hung[-1]["error_message"].startswith(("timed out after 2 s", "interrupted")), hung[-1]
    assert hung[0]["error_message"].startswith("timed out after 2 s")
    assert not [r for r in rows if r["status"] == "running"]  # SIGTERM left no open row
    # One alert for the failing pipeline, however many checks saw it.
    failed_alerts = [h for h in hooks if "failed run: hung" in h]
    assert len(failed_alerts) == 1, hooks
    assert "timed out after 2 s" in failed_alerts[0]
    assert not [h for h in hooks if "missing run" in h]  # nothing was overdue


def test_schedule_table(tmp_path, database_url):
    from tests.fixtures.projects import run_elt

    project = write_project(tmp_path / "p", PROJECT)
    result = run_elt(["schedule", "--json"], cwd=project, database_url=database_url, HOOK_URL="http://127.0.0.1:9")
    assert result.returncode == 0, result.stderr
    import json

    rows = {r["pipeline"]: r for r in json.loads(result.stdout)}
    assert rows["up"]["frequency"] == "every 2s" and rows["up"]["next_run"]
    assert rows["down"]["frequency"] == "after up" and rows["down"]["next_run"] is None
    assert rows["hung"]["timeout_s"] == 2


def test_scheduler_jobs_include_reconciliation_and_refuse_unknown_upstreams(tmp_path, database_url):
    from elt import Pipeline
    from elt.errors import ConfigError
    from elt.serve import Scheduler

    pipelines = {p.name: p for p in [Pipeline("shop", every="1h", reconcile="0 3 * * *"), Pipeline("marts", after=["shop"])]}
    scheduler = Scheduler(tmp_path, pipelines, stop_grace=1)
    scheduler.start()
    try:
        jobs = {job.id: job for job in scheduler._scheduler.get_jobs()}
        assert set(jobs) == {"shop", "shop-reconcile", "elt-check"}
        assert jobs["shop"].max_instances == 1 and jobs["shop"].coalesce is True
        assert jobs["shop"].misfire_grace_time == 3600
    finally:
        scheduler.stop()
    with pytest.raises(ConfigError, match=r"after=\['nope'\] names no pipeline"):
        Scheduler(tmp_path, {"x": Pipeline("x", after=["nope"])})
