"""Every code block in README.md that is meant to run does run: each Python block as a project's pipelines.py.

Blocks that reach the internet (billing.example.com, api.stripe.com) are imported, which checks
their declarations; the others run with `elt run` against the test PostgreSQL. The SQL block
runs against a table shaped like the one it reads. A new block must be classified below.
"""

from __future__ import annotations

import re
from pathlib import Path

import psycopg
import pytest

from tests.fixtures.projects import run_elt, write_project

pytestmark = pytest.mark.slow

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
PYTHON = re.findall(r"```python\n(.*?)```", README, re.S)
SQL = re.findall(r"```sql\n(.*?)```", README, re.S)

#: How each Python block is checked, by a line it holds.
KINDS = {
    "class Invoices(Extractor):": "import",       # calls billing.example.com
    "def orders(since):": "run",
    "class Charges(RestExtractor):": "import",    # calls api.stripe.com
    "class Orders(RestExtractor):": "import",     # calls api.example.com
    'WebhookSource("stripe"': "import",          # received by `elt serve`; tests/webhooks run it
    "class Orders(SqlExtractor):": "run",         # against a source database made here
    'transforms=["mart+"]': "run",
    "destination=BigQuery(": "import",    # loads into BigQuery; tests/loaders/bigquery run it on the emulator
}


def kind(block: str) -> str:
    found = [k for line, k in KINDS.items() if line in block]
    assert len(found) == 1, f"a README block the test does not know; classify it in KINDS:\n{block[:300]}"
    return found[0]


def test_every_python_block_is_classified():
    assert len(PYTHON) == len(KINDS) and sorted(kind(b) for b in PYTHON) == sorted(KINDS.values())


@pytest.mark.parametrize("block", PYTHON, ids=[next((k for k in KINDS if k in b), "unclassified") for b in PYTHON])
def test_readme_python_block(tmp_path, database_url, db, source_url, block):
    project = write_project(tmp_path / "p", block)
    if kind(block) == "import":
        result = run_elt(["schedule", "--json"], cwd=project, database_url=database_url)
        assert result.returncode == 0, result.stderr[-2000:]
        return
    env = {}
    if "SqlExtractor" in block:
        with psycopg.connect(source_url, autocommit=True) as source:
            source.execute("CREATE TABLE public.orders (id int PRIMARY KEY, total numeric,"
                           " updated_at timestamptz NOT NULL DEFAULT now())")
            source.execute("INSERT INTO public.orders (id, total) VALUES (1, 12.5), (2, 7)")
        env["SHOP_DATABASE_URL"] = source_url
    if "mart+" in block:
        (project / "sql" / "mart").mkdir(parents=True)
        (project / "sql" / "mart" / "sales.sql").write_text(
            "SELECT (SELECT count(*) FROM raw.shop_orders) AS orders, (SELECT count(*) FROM raw.stripe_charges) AS charges\n")
    for _ in range(2):  # and a second run changes nothing
        result = run_elt(["run"], cwd=project, database_url=database_url, **env)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert db.execute("SELECT count(*) AS n FROM raw.shop_orders").fetchone()["n"] >= 1
    if "mart+" in block:
        assert db.execute("SELECT orders, charges FROM mart.sales").fetchone() == {"orders": 1, "charges": 1}


def test_readme_sql_block_runs(db):
    # The model block (the GRANTs for CDC need a source with elt_cdc installed: tests/extractors/test_cdc.py).
    (block,) = [b for b in SQL if "stg.stripe_charges" in b]
    db.execute("CREATE SCHEMA IF NOT EXISTS stg")
    db.execute("CREATE TABLE stg.stripe_charges (created_at timestamptz, currency text, amount bigint, status text)")
    db.execute("INSERT INTO stg.stripe_charges VALUES ('2026-01-05 10:00Z', 'eur', 1250, 'succeeded'),"
               " ('2026-01-05 11:00Z', 'eur', 250, 'succeeded'), ('2026-01-05 12:00Z', 'eur', 999, 'failed')")
    body = "\n".join(line for line in block.splitlines() if not line.startswith("--"))
    rows = db.execute(body).fetchall()
    assert [(r["currency"], r["revenue"]) for r in rows] == [("eur", 1500)]
