"""Attack 6, concurrency: five simultaneous `elt run` of one pipeline, and another pipeline beside them.

Seven real `elt run` processes start at once on one fresh database (which none
has migrated yet): five of ``alpha``, two of ``beta``. The run that takes a
pipeline's lock holds it until every other process of that pipeline has
exited (its source waits for a release file the test creates then), so a
second run of the same pipeline cannot slip in after the first finished:
exactly one runs each pipeline, the others exit 4 (skipped) saying which run
holds it, and both pipelines run side by side. Every ``execution_log`` row is
then checked against the destination.
"""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

from tests.fixtures.projects import popen_elt, write_project
from tests.reliability.conftest import Attack, AttackReport

RECORDS = 300

PROJECT = """
    import os
    import time
    from pathlib import Path

    from elt import Pipeline, extractor

    RELEASE = Path(os.environ["RELEASE_FILE"])


    def make(pipeline):
        @extractor(name="items", primary_key="id", batch_size=50)
        def items():
            # The run holding the lock waits here until the test has seen every other run exit.
            deadline = time.monotonic() + 120
            while not RELEASE.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            for n in range(RECORDS):
                yield {"id": n, "pipeline": pipeline}

        return items


    Pipeline("alpha", streams=[make("alpha")])
    Pipeline("beta", streams=[make("beta")])
""".replace("RECORDS", str(RECORDS))


def test_one_run_per_pipeline_and_every_log_row_true(tmp_path: Path, database_url: str,
                                                      attack_report: AttackReport) -> None:
    project = write_project(tmp_path / "p", PROJECT)
    release = tmp_path / "release"
    wanted = ["alpha"] * 5 + ["beta"] * 2
    procs = [(name, popen_elt(["run", name], cwd=project, database_url=database_url, RELEASE_FILE=str(release)))
             for name in wanted]
    outputs: list[tuple[str, int, str]] = []
    try:
        # Wait for the losers: 4 of alpha, 1 of beta. A second winner would block instead (and fail below).
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and sum(p.poll() is not None for _, p in procs) < len(wanted) - 2:
            time.sleep(0.1)
        release.touch()
        for name, proc in procs:
            out, err = proc.communicate(timeout=120)
            outputs.append((name, proc.returncode, out + err))
    finally:
        release.touch()
        for _, proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)

    with psycopg.connect(database_url, row_factory=dict_row) as conn:
        log = conn.execute("SELECT * FROM pipeline.execution_log ORDER BY id").fetchall()
        stored = {name: conn.execute(
            f"SELECT count(*) AS rows, count(DISTINCT _raw_payload->>'id') AS keys FROM raw.{name}_items").fetchone()
            for name in ("alpha", "beta")}

    duplicated = 0
    for name, runs in (("alpha", 5), ("beta", 2)):
        codes = sorted(code for pipeline, code, _ in outputs if pipeline == name)
        assert codes == [0] + [4] * (runs - 1), (name, outputs)
        for pipeline, code, text in outputs:
            if pipeline == name and code == 4:  # each skipped run says why, and which run holds the pipeline
                assert f"another run of {name} is in progress" in text and "this run was skipped" in text, text
                assert "pid" in text, text
        rows = [r for r in log if r["pipeline_name"] == name]
        assert len(rows) == runs, rows
        assert sorted(r["status"] for r in rows) == ["skipped"] * (runs - 1) + ["success"]
        winner = next(r for r in rows if r["status"] == "success")
        # The winner's figures are the destination's; a skipped run claims nothing.
        assert winner["rows_extracted"] == winner["rows_loaded"] == RECORDS == stored[name]["rows"]
        assert stored[name]["keys"] == RECORDS
        duplicated += stored[name]["rows"] - stored[name]["keys"]
        for row in rows:
            assert row["completed_at"] is not None
            if row["status"] == "skipped":
                assert row["rows_loaded"] == row["rows_extracted"] == 0
                assert f"another run of {name} is in progress" in (row["error_message"] or "")
    alpha = next(r for r in log if r["pipeline_name"] == "alpha" and r["status"] == "success")
    beta = next(r for r in log if r["pipeline_name"] == "beta" and r["status"] == "success")
    # Different pipelines ran side by side, not one after the other.
    assert alpha["started_at"] < beta["completed_at"] and beta["started_at"] < alpha["completed_at"]
    attack_report.record(Attack(
        attack="concurrency", runs=len(wanted), compared=2 * RECORDS, lost=2 * RECORDS - sum(
            s["keys"] for s in stored.values()), duplicated=duplicated,
        notes="5 simultaneous `elt run alpha` and 2 `elt run beta` on one fresh database: one run per pipeline,"
              " the others skipped with a message naming the holder; every execution_log row matches the destination",
        extra={"skipped": sum(1 for r in log if r["status"] == "skipped")},
    ))
