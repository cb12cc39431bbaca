"""`elt deploy`: the systemd unit, crontab lines and pg_cron statements say what the project needs."""

from __future__ import annotations

import re
import sys

from elt import Pipeline
from elt.deploy import crontab, pg_cron, systemd_unit
from elt.transforms import Builder, project_graph
from tests.fixtures.projects import run_elt, write_project
from tests.transforms.conftest import write_models


def test_systemd_unit_runs_elt_serve_with_the_env_file(tmp_path):
    unit = systemd_unit(tmp_path, user="etl")
    assert f"ExecStart={sys.executable} -m elt --project {tmp_path} serve" in unit
    assert f"EnvironmentFile=-{tmp_path}/.env" in unit
    assert "Restart=on-failure" in unit and "User=etl" in unit and "KillSignal=SIGTERM" in unit


def test_crontab_lines(tmp_path):
    pipelines = {p.name: p for p in [
        Pipeline("shop", schedule="0 6 * * *", tz="Australia/Sydney", reconcile="0 3 * * 0"),
        Pipeline("marts", after=["shop"]),
        Pipeline("often", every="15m"),
        Pipeline("hours", every="6h"),
        Pipeline("manual"),
    ]}
    text = crontab(tmp_path, pipelines)
    lines = text.splitlines()
    shop = lines.index("CRON_TZ=Australia/Sydney") + 1
    assert re.fullmatch(r"0 6 \* \* \* cd .* -m elt run shop --trigger cron"
                        r" && cd .* -m elt run marts --trigger cron >> .*", lines[shop])
    assert any(line.startswith("*/15 * * * * ") and "run often" in line for line in lines)
    assert any(line.startswith("0 */6 * * * ") and "run hours" in line for line in lines)
    assert "run manual" not in text
    assert any(line.startswith("0 3 * * 0 ") and "reconcile shop" in line for line in lines)
    assert any(line.startswith("*/15 * * * * ") and line.endswith(" check") for line in lines)


def test_pg_cron_statements_refill_tables_and_refresh_views_in_build_order(tmp_path, database_url, db):
    project = write_models(tmp_path, {
        "stg/a.sql": "SELECT g AS id FROM generate_series(1, 3) g",
        "mart/b.sql": "SELECT id, id * 2 AS doubled FROM stg.a",
        "rpt/c.sql": "-- materialized: materialized_view\nSELECT count(*) AS n FROM mart.b",
    })
    pipelines = {"nightly": Pipeline("nightly", schedule="30 2 * * *", transforms=["+rpt.c"])}
    text = pg_cron(project, pipelines)
    assert "SELECT cron.schedule('elt-nightly', '30 2 * * *', $elt$" in text
    body = text.split("$elt$")[1]
    assert body.index("mart.b") < body.index("REFRESH MATERIALIZED VIEW rpt.c")
    # The statements are valid against the real models: build them, then run the body.
    graph = project_graph(project, [])
    assert Builder(database_url, graph).run(graph.select()).status == "success"
    db.execute("CREATE TABLE stg_extra AS SELECT 1")  # unrelated; the body must not depend on the search path
    with db.transaction():
        db.execute(body)
    assert db.execute("SELECT n FROM rpt.c").fetchone()["n"] == 3


def test_elt_deploy_cli_writes_the_unit(tmp_path, database_url):
    project = write_project(tmp_path / "p", "from elt import Pipeline\nPipeline('shop', every='1h')\n")
    out = tmp_path / "elt.service"
    result = run_elt(["deploy", "systemd", "--output", str(out)], cwd=project, database_url=database_url)
    assert result.returncode == 0, result.stderr
    assert "serve" in out.read_text()
    bad = run_elt(["deploy", "kubernetes"], cwd=project, database_url=database_url)
    assert bad.returncode == 2 and "use one of: systemd, cron, pg-cron" in bad.stderr
