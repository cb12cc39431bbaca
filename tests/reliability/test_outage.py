"""Attack 2, destination outage: the PostgreSQL server stops in the middle of an ``elt run`` and comes back.

A server of this test's own (not the session's shared one) is stopped the way
a crash stops it (``pg_ctl stop -m immediate``: every connection cut, no
checkpoint) while a real ``elt run`` is loading batches of two streams (a
batch-atomic ``upsert`` and a stream-atomic ``replace``), then started again.
The run must either ride it out (retry with backoff) or fail clearly: a
message naming the database, no password, no traceback. The next run closes
the interrupted run's log row, and the destination then equals the source:
nothing half-applied (no shadow left, no partial swap), nothing lost or doubled.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.fixtures.comparison import Comparison, stored_rows
from tests.fixtures.kills import WatchedRun
from tests.fixtures.postgres import OutageServer
from tests.fixtures.projects import popen_elt, run_elt, stop, write_project
from tests.reliability.conftest import Attack

ATTACK = "destination outage"
PASSWORD = "Outage-pw-7f3a9c"
N = 1500

PROJECT = '''
import os
import time
from elt import Pipeline, extractor

N = {n}
VERSION = int(os.environ["VERSION"])


def records():
    return [{{"id": i, "v": VERSION, "note": f"r{{i}} — ü"}} for i in range(N + 10 * VERSION)]


def slowly(rows):
    for start in range(0, len(rows), 50):
        time.sleep(0.04)  # a slow source: the outage lands between and inside batches
        yield from rows[start:start + 50]


@extractor(name="items", primary_key="id", write_strategy="upsert", batch_size=50)
def items(since):
    yield from slowly(records())


@extractor(name="ref", primary_key="id", write_strategy="replace", batch_size=50)
def ref(since):
    yield from slowly(records())


Pipeline("shop", streams=[items, ref], transforms=False)
'''


def source(version: int) -> dict[str, dict[str, Any]]:
    return {str(i): {"id": i, "v": version, "note": f"r{i} — ü"} for i in range(N + 10 * version)}


@pytest.fixture
def outage_server() -> Iterator[OutageServer]:
    server = OutageServer()
    try:
        yield server
    finally:
        server.stop()


def with_password(url: str) -> str:
    """The same database reached as a role whose URL carries a password (which must never be shown)."""
    parts = urlsplit(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE elt_outage LOGIN SUPERUSER PASSWORD '{PASSWORD}'")
    return urlunsplit(parts._replace(netloc=f"elt_outage:{PASSWORD}@{parts.hostname or ''}"))


def test_a_database_outage_mid_run_is_ridden_out_or_reported_and_the_next_run_repairs_all(
        tmp_path, outage_server, reliability_size, attack_report):
    url = with_password(outage_server.create_database())
    dbname = urlsplit(url).path.lstrip("/")
    project = write_project(tmp_path / "p", PROJECT.format(n=N))
    outages = 4 if reliability_size.full else 2  # alternately while the upsert and the replace stream load
    figures: dict[str, Any] = {"outcomes": [], "unclear": [], "seconds_down": []}
    outputs: list[str] = []
    version = runs = 0
    first = run_elt(["run"], cwd=project, database_url=url, VERSION="0")
    runs += 1
    assert first.returncode == 0, first.stderr[-2000:]

    for n in range(outages):
        version += 1
        watched = WatchedRun(popen_elt(["run"], cwd=project, database_url=url, VERSION=str(version)), "run started")
        runs += 1
        assert watched.started.wait(timeout=60), "the run did not start"
        stream = ("items", "ref")[n % 2]
        deadline = time.monotonic() + 60
        while not any("stream started" in line and f'"stream": "{stream}"' in line for line in watched.output):
            assert time.monotonic() < deadline and watched.proc.poll() is None, f"stream {stream} did not start"
            time.sleep(0.02)
        time.sleep(0.3 + 0.2 * n)  # some batches committed, a batch in flight
        down = time.monotonic()
        outage_server.stop_server()
        time.sleep(1.0)
        outage_server.start_server()
        figures["seconds_down"].append(round(time.monotonic() - down, 1))
        try:
            code = watched.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            code = stop(watched.proc, signal.SIGKILL)
            figures["unclear"].append(f"outage {n}: the run hung for 120 s after the server came back")
        watched.finish()
        output = "".join(watched.output)
        outputs.append(output)
        figures["outcomes"].append(code)
        figures["reconnects"] = figures.get("reconnects", 0) + output.count("loading the batch again once it is back")
        if code != 0:
            # Failing is allowed only clearly: the database named, no traceback.
            errors = [json.loads(line).get("error", "") for line in watched.output if line.startswith("{")]
            said = output if not errors else " ".join(str(e) for e in errors)
            if dbname not in said or "Traceback" in output:
                figures["unclear"].append(f"outage {n}: exit {code}: {output[-1500:]}")

        # The next run repairs: it closes the interrupted run's log row and loads the source whole.
        again = run_elt(["run"], cwd=project, database_url=url, VERSION=str(version))
        runs += 1
        outputs.append(again.stdout + again.stderr)
        assert again.returncode == 0, again.stderr[-2000:]

    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as db:
        comparison = Comparison()
        expected = source(version)
        comparison.add(expected, stored_rows(db, "raw.shop_items"))
        comparison.add(expected, stored_rows(db, "raw.shop_ref"))
        log = db.execute("SELECT id, status, error_message, error_detail::text AS detail"
                         " FROM pipeline.execution_log ORDER BY id").fetchall()
        leftovers = [r["t"] for r in db.execute(
            "SELECT table_name AS t FROM information_schema.tables WHERE table_schema = 'raw'"
            " AND table_name NOT IN ('shop_items', 'shop_ref')").fetchall()]
        dead = db.execute("SELECT d::text AS letter FROM pipeline.dead_letter AS d").fetchall()
    stored_text = json.dumps([dict(r) for r in log] + [dict(r) for r in dead], default=str)
    leaked = sum(text.count(PASSWORD) for text in [*outputs, stored_text])

    attack_report.record(Attack(
        attack=ATTACK, runs=runs, faults=outages, compared=comparison.compared, lost=comparison.lost,
        duplicated=comparison.duplicated + comparison.unexpected, leaked=leaked,
        notes=f"{outages} server stops (immediate) mid-run, alternately in an upsert and a replace stream,"
              " each restarted after about a second",
        extra={"exit_codes_of_interrupted_runs": figures["outcomes"], "batches_loaded_again": figures["reconnects"],
               "seconds_down": figures["seconds_down"],
               "unclear_failures": len(figures["unclear"]), "leftover_tables": leftovers,
               "statuses": [r["status"] for r in log], "checksums_equal": comparison.checksums_equal},
    ))
    assert not figures["unclear"], figures["unclear"]
    assert leaked == 0, "the password was shown"
    assert all(r["status"] != "running" for r in log), log
    assert not leftovers, f"half-applied work left behind: {leftovers}"
    assert comparison.lost == 0 and comparison.duplicated == 0 and comparison.unexpected == 0, str(comparison)
    assert comparison.checksums_equal
