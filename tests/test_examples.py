"""The bundled examples run as a user would run them: `elt run --project examples/<name>`, twice."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.projects import run_elt

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

pytestmark = pytest.mark.slow


def count(db, table: str) -> int:
    return db.execute(f"SELECT count(*) AS n FROM {table}").fetchone()["n"]


def test_stripe_style_cursor_api_with_upsert(tmp_path, database_url, db):
    for _ in range(2):
        result = run_elt(["--project", str(EXAMPLES / "stripe_upsert"), "run"], cwd=tmp_path, database_url=database_url)
        assert result.returncode == 0, result.stderr
    # Upsert: one row per object however often it runs.
    assert count(db, "raw.stripe_customers") == 230
    assert count(db, "raw.stripe_charges") == 500
    assert db.execute("SELECT count(DISTINCT id) AS n FROM raw.stripe_charges").fetchone()["n"] == 500
    # The second customers run asked only for customers created since the watermark minus the lookback.
    runs = db.execute("SELECT streams FROM pipeline.execution_log ORDER BY id").fetchall()
    assert runs[0]["streams"]["customers"]["extracted"] == 230
    assert runs[1]["streams"]["customers"]["extracted"] == 2  # the newest customer and the one an hour before
    assert runs[1]["streams"]["charges"]["inserted"] == 0
    # Its sql/ folder: staging views, a mart table and a reporting materialised view.
    succeeded = [c for c in db.execute("SELECT _raw_payload AS p FROM raw.stripe_charges").fetchall()
                 if c["p"]["status"] == "succeeded"]
    revenue = db.execute("SELECT sum(revenue) AS r, sum(charges) AS n FROM mart.daily_revenue").fetchone()
    assert revenue["n"] == len(succeeded)
    assert revenue["r"] * 100 == sum(c["p"]["amount"] for c in succeeded)  # cents to dollars, exactly
    health = db.execute("SELECT count(*) AS n, sum(charges) AS charges FROM rpt.client_health").fetchone()
    assert health == {"n": 230, "charges": 500}
    assert db.execute("SELECT relkind FROM pg_class WHERE oid = 'rpt.client_health'::regclass").fetchone()["relkind"] == "m"


def test_github_style_link_header_api_with_child_streams(tmp_path, database_url, db):
    for _ in range(2):
        result = run_elt(["--project", str(EXAMPLES / "github_children"), "run"], cwd=tmp_path, database_url=database_url)
        assert result.returncode == 0, result.stderr
    assert count(db, "raw.github_repos") == 7
    per_repo = db.execute(
        "SELECT _raw_payload->>'repository_id' AS repo, count(DISTINCT id) AS n FROM raw.github_issues GROUP BY 1"
    ).fetchall()
    assert len(per_repo) == 7 and all(r["n"] >= 19 for r in per_repo)
    # append_dedup: the second run re-read only the lookback window, and the stg view has one row per issue.
    assert count(db, "stg.github_issues") == db.execute("SELECT count(DISTINCT id) AS n FROM raw.github_issues").fetchone()["n"]
    runs = db.execute("SELECT streams FROM pipeline.execution_log ORDER BY id").fetchall()
    assert runs[1]["streams"]["issues"]["extracted"] < runs[0]["streams"]["issues"]["extracted"] / 10
    # Its sql/ folder: a typed stg model in place of the generated view, an incremental mart, a report.
    issues = db.execute("SELECT count(*) AS n FROM mart.issues").fetchone()["n"]
    assert issues == count(db, "stg.github_issues") == db.execute(
        "SELECT count(DISTINCT id) AS n FROM raw.github_issues").fetchone()["n"]
    health = db.execute("SELECT sum(open_issues + closed_issues) AS n, count(*) AS repos FROM rpt.repo_health").fetchone()
    assert health == {"n": issues, "repos": 7}
    logged = db.execute("SELECT rows_transformed, models FROM pipeline.execution_log ORDER BY id").fetchall()
    assert logged[0]["rows_transformed"] >= issues
    assert logged[1]["models"]["mart.issues"]["action"] == "merged"


def test_csv_drop_folder(tmp_path, database_url, db):
    import shutil

    project = tmp_path / "csv_drop"
    shutil.copytree(EXAMPLES / "csv_drop", project)  # the test drops files in: work on a copy
    first = run_elt(["run"], cwd=project, database_url=database_url)
    assert first.returncode == 0, first.stderr
    assert count(db, "raw.shopfront_sales") == 120
    totals = db.execute("SELECT sum(items) AS items, count(DISTINCT day) AS days FROM mart.daily_sales").fetchone()
    assert totals["days"] == 3
    assert totals["items"] == db.execute("SELECT sum(quantity) AS q FROM stg.shopfront_sales").fetchone()["q"]

    (project / "drop" / "sales-2026-05-04.csv").write_text("sale_id,sold_at,product,quantity,unit_price\n", encoding="utf-8")
    (project / "drop" / "sales-2026-05-05.csv").write_text("", encoding="utf-8")
    second = run_elt(["run"], cwd=project, database_url=database_url)
    assert second.returncode == 3  # partial: the empty file is in dead_letter, nothing else changed
    letter = db.execute("SELECT source_record, error_message FROM pipeline.dead_letter").fetchone()
    assert letter["source_record"]["file"] == "sales-2026-05-05.csv" and "the file is empty" in letter["error_message"]
    assert count(db, "raw.shopfront_sales") == 120


def test_postgres_to_postgres_incremental_and_deletes(tmp_path, database_url, db):
    import subprocess
    import sys

    from tests.fixtures.projects import elt_env

    project = EXAMPLES / "postgres_to_postgres"
    first = run_elt(["--project", str(project), "run"], cwd=tmp_path, database_url=database_url)
    assert first.returncode == 0, first.stderr
    assert count(db, "raw.shop_orders") == 5000 and count(db, "raw.shop_customers") == 200
    churn = subprocess.run([sys.executable, str(project / "source_db.py")], env=elt_env(database_url),
                           capture_output=True, text=True, timeout=60)
    assert churn.returncode == 0, churn.stderr
    second = run_elt(["--project", str(project), "run"], cwd=tmp_path, database_url=database_url)
    assert second.returncode == 0, second.stderr
    streams = db.execute("SELECT streams FROM pipeline.execution_log ORDER BY id DESC LIMIT 1").fetchone()["streams"]
    # Only what changed (plus the lookback window) is read again: 5 refunds and 20 new orders.
    assert streams["orders"]["inserted"] == 20 and streams["orders"]["updated"] == 5
    assert streams["orders"]["extracted"] < 100
    assert count(db, "raw.shop_orders") == 5020
    assert db.execute("SELECT count(*) AS n FROM stg.shop_orders WHERE status = 'refunded'").fetchone()["n"] >= 5

    reconciled = run_elt(["--project", str(project), "reconcile"], cwd=tmp_path, database_url=database_url)
    assert reconciled.returncode == 0, reconciled.stderr
    assert "customers: 1 rows marked deleted" in reconciled.stdout
    assert db.execute("SELECT id FROM raw.shop_customers WHERE _deleted_at IS NOT NULL").fetchall() == [{"id": "1"}]
    rebuilt = run_elt(["--project", str(project), "transform"], cwd=tmp_path, database_url=database_url)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert count(db, "mart.customer_orders") == 199
