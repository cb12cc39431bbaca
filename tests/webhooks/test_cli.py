"""`elt webhooks`, `elt serve`, `elt status` and `elt check` with webhook sources, as real subprocesses."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import orjson
import psycopg
import pytest

from elt.webhooks.signatures import GitHub, sign
from tests.fixtures.projects import elt_env, run_elt, write_project
from tests.fixtures.webhooks import free_port, wait_healthy

SECRET = "gh_hook_secret_0123456789"

PROJECT = '''
from elt import WebhookSource, from_env

WebhookSource("github", "/hooks/github", secret=from_env("GITHUB_WEBHOOK_SECRET"), signature="github",
              expect_every="{expect}", transforms=True, transform_every=1)
'''

STG = """-- one row per push event
SELECT event_id AS delivery, _raw_payload->>'ref' AS ref, _received_at AS received_at
FROM raw.github_events
"""


def _project(tmp_path: Path, expect: str = "1h") -> Path:
    project = write_project(tmp_path / "project", PROJECT.format(expect=expect))
    (project / "sql" / "stg").mkdir(parents=True)
    (project / "sql" / "stg" / "github_pushes.sql").write_text(STG)
    return project


def _start(command: str, project: Path, database_url: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "elt", command, *(["--port", str(port)] if command == "webhooks" else [])],
        cwd=project, env=elt_env(database_url, GITHUB_WEBHOOK_SECRET=SECRET, ELT_WEBHOOK_PORT=str(port)),
        stdin=subprocess.DEVNULL, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def _stop(child: subprocess.Popen[bytes]) -> int:
    child.send_signal(signal.SIGTERM)
    try:
        return child.wait(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)


def _push(port: int, delivery: str) -> httpx.Response:
    body = orjson.dumps({"ref": "refs/heads/main", "after": delivery})
    headers = {"content-type": "application/json", "X-GitHub-Delivery": delivery, "X-GitHub-Event": "push",
               **sign(GitHub(), body, SECRET)}
    return httpx.post(f"http://127.0.0.1:{port}/hooks/github", content=body, headers=headers)


def test_elt_webhooks_stores_events_builds_their_models_and_status_shows_them(tmp_path: Path, database_url: str) -> None:
    project = _project(tmp_path)
    port = free_port()
    child = _start("webhooks", project, database_url, port, tmp_path / "webhooks.log")
    try:
        wait_healthy(f"http://127.0.0.1:{port}")
        answers = [_push(port, f"d-{n}") for n in range(5)] + [_push(port, "d-0")]
        assert [a.status_code for a in answers] == [200] * 6
        # transforms=True, transform_every=1: the stg model reading raw.github_events is built within seconds.
        deadline = time.monotonic() + 60
        count = 0
        while time.monotonic() < deadline and count < 5:
            with psycopg.connect(database_url) as conn:
                exists = conn.execute("SELECT to_regclass('stg.github_pushes') IS NOT NULL").fetchone()[0]
                count = conn.execute("SELECT count(*) FROM stg.github_pushes").fetchone()[0] if exists else 0
            time.sleep(0.3)
        assert count == 5, (tmp_path / "webhooks.log").read_text()
    finally:
        assert _stop(child) == 0, (tmp_path / "webhooks.log").read_text()
    status = run_elt(["status"], cwd=project, database_url=database_url)
    assert status.returncode == 0, status.stderr
    assert "webhook sources" in status.stdout
    line = next(line for line in status.stdout.splitlines() if "raw.github_events" in line)
    assert "│ 5 " in line and "│ 1 " in line  # 5 events, 1 duplicate


def test_elt_check_flags_a_source_silent_longer_than_expected(tmp_path: Path, database_url: str) -> None:
    project = _project(tmp_path, expect="1m")
    quiet = run_elt(["check", "--json"], cwd=project, database_url=database_url,
                    GITHUB_WEBHOOK_SECRET=SECRET)
    assert quiet.returncode == 1
    problems = json.loads(quiet.stdout)["problems"]
    assert [p["check"] for p in problems] == ["webhook_silent"]
    assert "no event ever stored" in problems[0]["detail"]

    port = free_port()
    child = _start("webhooks", project, database_url, port, tmp_path / "webhooks.log")
    try:
        wait_healthy(f"http://127.0.0.1:{port}")
        assert _push(port, "fresh").status_code == 200
    finally:
        _stop(child)
    fresh = run_elt(["check", "--json"], cwd=project, database_url=database_url, GITHUB_WEBHOOK_SECRET=SECRET)
    assert fresh.returncode == 0, fresh.stdout
    with psycopg.connect(database_url) as conn:
        conn.execute("UPDATE pipeline.webhook_sources SET last_event_at = now() - interval '2 hours'")
    stale = run_elt(["check", "--json"], cwd=project, database_url=database_url, GITHUB_WEBHOOK_SECRET=SECRET)
    assert stale.returncode == 1
    detail = json.loads(stale.stdout)["problems"][0]["detail"]
    assert "2 h" in detail and "expected one at least every 0:01:00" in detail


@pytest.mark.parametrize("with_pipeline", [False, True])
def test_elt_serve_receives_webhooks_beside_the_scheduler(tmp_path: Path, database_url: str, with_pipeline: bool) -> None:
    project = _project(tmp_path)
    if with_pipeline:
        with (project / "pipelines.py").open("a") as f:
            f.write("\nfrom elt import Pipeline, extractor\n\n"
                    "@extractor(name='ticks')\ndef ticks(since):\n    yield {'n': 1}\n\n"
                    "Pipeline('clock', streams=[ticks], every='1h')\n")
    port = free_port()
    child = _start("serve", project, database_url, port, tmp_path / "serve.log")
    try:
        wait_healthy(f"http://127.0.0.1:{port}")
        assert _push(port, "via-serve").json()["status"] == "stored"
    finally:
        assert _stop(child) == 0, (tmp_path / "serve.log").read_text()
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT event_id FROM raw.github_events").fetchall() == [("via-serve",)]
