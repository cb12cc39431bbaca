"""`elt init` with `destination: bigquery`: a project that loads into BigQuery, documented with BigQuery's DDL and costs.

The project's files are checked as written (parsed with Python's and sqlglot's BigQuery
parsers; the raw DDL of the document runs on the local emulator). Running the generated
project needs ``elt.BigQuery`` (the BigQuery loader): the last test does that and is
skipped until the loader is in this checkout.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys

import pytest
import sqlglot
import yaml
from sqlglot import exp

import elt
from elt.generator import generate, parse, plan
from elt.generator.architecture import render
from elt.generator.scaffold import write_project
from elt.pipeline import load_project
from elt.transforms.dialects import transpile
from tests.fixtures.projects import elt_env, run_elt
from tests.generator.specs import SPECS


def bigquery_spec(name: str) -> str:
    data = yaml.safe_load(SPECS[name])
    data["destination"] = {"kind": "bigquery"}
    return yaml.safe_dump(data, sort_keys=False)


def test_the_project_loads_into_bigquery_and_says_what_to_set(tmp_path):
    the_plan = plan(parse(yaml.safe_load(bigquery_spec("hybrid"))))
    assert the_plan.destination.choice == "BigQuery"
    assert "PostgreSQL now" not in the_plan.destination.reason
    project = tmp_path / "shop"
    write_project(the_plan, project, bigquery_spec("hybrid"))  # written, not imported: elt.BigQuery runs it

    code = (project / "pipelines.py").read_text()
    tree = ast.parse(code)
    imported = {a.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module == "elt"
                for a in node.names}
    assert "BigQuery" in imported
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Pipeline"]
    assert calls and all(any(k.arg == "destination" and getattr(k.value, "id", "") == "DESTINATION" for k in c.keywords)
                         for c in calls)
    assert "DESTINATION = BigQuery()" in code

    env = (project / ".env.example").read_text()
    for variable in ("ELT_BIGQUERY_PROJECT=", "ELT_BIGQUERY_DATASET_PREFIX=shop_hybrid_", "ELT_BIGQUERY_LOCATION=",
                     "ELT_BIGQUERY_MAXIMUM_BYTES_BILLED=", "GOOGLE_APPLICATION_CREDENTIALS="):
        assert variable in env, variable
    assert "ELT_DATABASE_URL" not in env

    own_tests = (project / "tests" / "test_pipelines.py").read_text()
    ast.parse(own_tests)
    assert "BigQuerySettings.from_env" in own_tests and "psycopg" not in own_tests

    # The starter models run on BigQuery's raw tables (no _row_seq there) and translate.
    for path in (project / "sql").glob("*/*.sql"):
        text = path.read_text()
        assert "_row_seq" not in text, path
        sqlglot.parse_one(transpile(text, "bigquery", where=str(path)), read="bigquery")
    assert "## Try it (sample data, BigQuery)" in (project / "README.md").read_text()


def test_the_architecture_document_has_bigquery_ddl_and_cost_notes(tmp_path, bq_emulator, bq_prefix):
    # Drawn from a project of the same requirements (csv_only: no sample API), its destination switched
    # to BigQuery: the document follows requirements.yaml, and drawing it needs no BigQuery loader.
    project = generate(SPECS["csv_only"], tmp_path / "bakery").directory
    (project / "requirements.yaml").write_text(bigquery_spec("csv_only"))
    project_dir, pipelines = load_project(project)
    document = render(project_dir, pipelines)

    assert "- Destination: bigquery (`ELT_BIGQUERY_PROJECT`" in document
    assert "Destination: **BigQuery**" in document
    assert "Every layer is a dataset (`ELT_BIGQUERY_DATASET_PREFIX`" in document
    assert "swapped in by a copy job" in document
    schema = document[document.index("## 4."):document.index("## 5.")]
    blocks = re.findall(r"```sql\n(.*?)```", schema, re.S)
    creates = [sqlglot.parse_one(b, read="bigquery") for b in blocks if b.startswith("CREATE TABLE IF NOT EXISTS raw.")]
    assert len(creates) == sum(len(p.streams) for p in pipelines.values())
    client = bq_emulator.client()
    client.create_dataset(f"{bq_emulator.project}.{bq_prefix}raw")
    for create in creates:
        columns = {c.name: c.args["kind"].sql("bigquery") for c in create.find_all(exp.ColumnDef)}
        assert columns["_raw_payload"] == "JSON" and columns["_loaded_at"] == "TIMESTAMP"
        partition = create.find(exp.PartitionedByProperty)
        assert partition is not None and partition.this.sql("bigquery", comments=False) == "DATE(_loaded_at)"
        assert create.find(exp.ClusterProperty) is not None
        # The DDL runs as it stands (in the test's own datasets).
        table = create.find(exp.Table)
        table.set("db", exp.to_identifier(f"{bq_prefix}raw"))
        table.set("catalog", exp.to_identifier(bq_emulator.project))
        client.query(create.sql("bigquery")).result()
        stored = client.get_table(f"{bq_emulator.project}.{bq_prefix}raw.{table.name}")
        assert stored.time_partitioning.field == "_loaded_at" and stored.clustering_fields
    # Models as BigQuery runs them, and what costs money.
    assert "CREATE OR REPLACE VIEW stg." in schema and "JSON_EXTRACT_SCALAR(_raw_payload" in schema
    for phrase in ("### Costs (BigQuery)", "bytes they scan", "maximum_bytes_billed", "Partition pruning",
                   "`DATE(_loaded_at)`", "a full scan"):
        assert phrase in schema, phrase
    retention = document[document.index("## 10."):]
    assert "partition_expiration_days = " in retention and "VACUUM" not in retention


@pytest.mark.slow
def test_the_generated_bigquery_project_runs_and_passes_its_own_tests(tmp_path, bq_emulator, bq_prefix, database_url):
    if not hasattr(elt, "BigQuery"):
        pytest.skip("elt.BigQuery (the BigQuery loader) is not in this checkout yet")
    env = {"ELT_BIGQUERY_PROJECT": bq_emulator.project, "ELT_BIGQUERY_ENDPOINT": bq_emulator.endpoint,
           "ELT_BIGQUERY_DATASET_PREFIX": bq_prefix}
    project = generate(bigquery_spec("csv_only"), tmp_path / "bakery").directory
    run = run_elt(["run"], cwd=project, database_url=database_url, timeout=300, **env)
    assert run.returncode == 0, run.stderr[-3000:]
    own = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=project,
                         env=elt_env(database_url, **env), capture_output=True, text=True, timeout=600)
    assert own.returncode == 0, own.stdout[-3000:]
    assert "3 passed" in own.stdout
