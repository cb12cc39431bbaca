"""`elt transform` and `elt stage` as a user runs them."""

from __future__ import annotations

import pytest

from tests.fixtures.projects import run_elt, write_project
from tests.transforms.conftest import MODELS, write_models

pytestmark = pytest.mark.slow

PROJECT = '''
from elt import Cursor, Pipeline, extractor

@extractor(primary_key="id", cursor=Cursor("updated_at"))
def orders(since):
    for version in (0, 1):  # every order twice: the starter model must keep the latest
        for i in range(1, 21):
            yield {"id": i, "customerId": i % 4, "amount": f"{i}.{version}5", "paid": i % 2 == 0,
                   "updated_at": f"2026-05-{1 + version:02d}T10:{i:02d}:00Z", "ordered_on": "2026-04-30",
                   "tags": {"channel": "web"}}

Pipeline("shop", streams=[orders], transforms=False)
'''


def test_stage_writes_a_typed_starter_model_that_builds(tmp_path, database_url, db):
    project = write_project(tmp_path / "p", PROJECT)
    assert run_elt(["run"], cwd=project, database_url=database_url).returncode == 0
    staged = run_elt(["stage", "orders"], cwd=project, database_url=database_url)
    assert staged.returncode == 0, staged.stderr
    text = (project / "sql/stg/shop_orders.sql").read_text()
    assert "-- tests: readable, unique(id), not_null(id)" in text
    again = run_elt(["stage", "orders"], cwd=project, database_url=database_url)
    assert again.returncode == 2 and "exists and is yours now" in again.stderr

    built = run_elt(["transform", "--select", "shop_orders"], cwd=project, database_url=database_url)
    assert built.returncode == 0, built.stderr
    types = {r["column_name"]: r["data_type"] for r in db.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = 'stg'"
        " AND table_name = 'shop_orders'").fetchall()}
    assert types == {"id": "bigint", "customer_id": "bigint", "amount": "numeric", "paid": "boolean",
                     "updated_at": "timestamp with time zone", "ordered_on": "date", "tags": "jsonb",
                     "_loaded_at": "timestamp with time zone"}
    rows = db.execute("SELECT id, amount FROM stg.shop_orders ORDER BY id").fetchall()
    assert len(rows) == 20 and str(rows[0]["amount"]) == "1.15"  # the later version of each order


CSV_PROJECT = """
from elt import FileExtractor, Pipeline

class Sales(FileExtractor):
    name = "sales"
    folder = {folder!r}
    primary_key = "id"

Pipeline("shop", streams=[Sales()], transforms=False)
"""


def test_stage_of_a_csv_stream_types_integers_nulls_empty_fields_and_fails_on_a_bad_cast(tmp_path, database_url, db):
    drop = tmp_path / "drop"
    drop.mkdir()
    # An amount that is no number, on a line the starter's 200-row sample does not see.
    lines = ["1,n/a,3,2026-04-01"] + [f"{i},{i}.50,{'' if i % 5 == 0 else i},2026-04-{1 + i % 28:02d}" for i in range(2, 251)]
    (drop / "sales.csv").write_text("id,amount,qty,day\n" + "\n".join(lines) + "\n", encoding="utf-8")
    project = write_project(tmp_path / "p", CSV_PROJECT.format(folder=str(drop)))
    assert run_elt(["run"], cwd=project, database_url=database_url).returncode == 0
    assert run_elt(["stage", "sales"], cwd=project, database_url=database_url).returncode == 0
    text = (project / "sql/stg/shop_sales.sql").read_text()
    assert "NULLIF(_raw_payload ->> 'qty', '')::bigint AS qty" in text

    failed = run_elt(["transform", "--select", "shop_sales"], cwd=project, database_url=database_url)
    assert failed.returncode != 0  # not "success" and a view that fails its first SELECT *
    assert 'invalid input syntax for type numeric: "n/a"' in failed.stdout + failed.stderr

    db.execute("DELETE FROM raw.shop_sales WHERE _raw_payload ->> 'amount' = 'n/a'")  # the data fixed
    built = run_elt(["transform", "--select", "shop_sales"], cwd=project, database_url=database_url)
    assert built.returncode == 0, built.stdout + built.stderr
    types = {r["column_name"]: r["data_type"] for r in db.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = 'stg'"
        " AND table_name = 'shop_sales'").fetchall()}
    assert (types["id"], types["amount"], types["qty"], types["day"]) == ("bigint", "numeric", "bigint", "date")
    counts = db.execute("SELECT count(*) AS n, count(qty) AS q, sum(amount) AS a FROM stg.shop_sales").fetchone()
    assert counts["n"] == 249 and counts["q"] == 249 - 50 and counts["a"] == sum(i + 0.5 for i in range(2, 251))


def test_transform_dry_run_prints_sql_in_build_order_and_builds_nothing(tmp_path, database_url, db):
    project = write_models(tmp_path / "p", MODELS)  # a folder with only sql/ models is a project too
    result = run_elt(["transform", "--dry-run", "--select", "mart.orders+"], cwd=project, database_url=database_url)
    assert result.returncode == 0, result.stderr
    headers = [line for line in result.stdout.splitlines() if line.startswith("-- sql/")]
    assert [h.split(" -> ")[1].split(" ")[0] for h in headers] == [
        "mart.orders", "mart.daily_revenue", "rpt.client_health", "rpt.status_mix", "rpt.revenue_by_month",
        "rpt.top_customers"]
    assert "CREATE MATERIALIZED VIEW rpt.client_health AS" in result.stdout
    assert db.execute("SELECT to_regnamespace('mart') AS s").fetchone()["s"] is None


def test_transform_exit_code_and_log_when_a_model_fails(tmp_path, database_url, db):
    project = write_models(tmp_path / "p", {"stg/a.sql": "SELECT 1 AS id", "mart/b.sql": "SELECT nope FROM stg.a",
                                            "rpt/c.sql": "SELECT * FROM mart.b"})
    result = run_elt(["transform"], cwd=project, database_url=database_url)
    assert result.returncode == 3  # partial: stg.a built, mart.b failed, rpt.c skipped
    assert 'column "nope" does not exist' in result.stderr
    row = db.execute("SELECT pipeline_name, status, error_message FROM pipeline.execution_log").fetchone()
    assert row["pipeline_name"] == "transforms" and row["status"] == "partial"
    assert "model rpt.c: skipped: upstream mart.b failed" in row["error_message"]


def test_transform_dry_run_on_bigquery_prints_the_sql_bigquery_runs_and_builds_nothing(tmp_path, bq_emulator, bq_prefix):
    # Before: it printed the PostgreSQL SQL (`->>`, `::numeric`, `CREATE MATERIALIZED VIEW rpt...`), not what runs.
    project = write_models(tmp_path / "p", MODELS)
    env = {"ELT_DESTINATION": "bigquery", "ELT_BIGQUERY_PROJECT": bq_emulator.project,
           "ELT_BIGQUERY_ENDPOINT": bq_emulator.endpoint, "ELT_BIGQUERY_DATASET_PREFIX": bq_prefix}
    result = run_elt(["transform", "--dry-run"], cwd=project, database_url="", **env)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert f"CREATE OR REPLACE TABLE `{bq_emulator.project}.{bq_prefix}rpt.client_health` AS" in text
    assert "-- built as a table on BigQuery" in text and "CREATE MATERIALIZED VIEW" not in text
    assert f"FROM {bq_emulator.project}.{bq_prefix}raw.shop_customers" in text
    assert "JSON_EXTRACT_SCALAR(_raw_payload, '$.tier') AS tier" in text  # on one line: SQL is not wrapped
    assert "->>" not in text and "::" not in text
    # Nothing built: not even a dataset.
    assert not [d.dataset_id for d in bq_emulator.client().list_datasets() if d.dataset_id.startswith(bq_prefix)]
