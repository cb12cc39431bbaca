"""`elt deploy`: the systemd unit, crontab lines and pg_cron statements say what the project needs."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest

from elt import Pipeline
from elt.deploy import crontab, pg_cron, systemd_unit
from elt.errors import ConfigError
from elt.transforms import Builder, project_graph
from tests.fixtures.projects import run_elt, write_project
from tests.transforms.conftest import write_models


def test_systemd_unit_runs_elt_serve_as_a_named_user_hardened_and_needs_the_env_file(tmp_path):
    project, drop, later = tmp_path / "project", tmp_path / "drop", tmp_path / "not_created_yet"
    project.mkdir()
    drop.mkdir()
    unit = systemd_unit(project, user="etl", write_paths=[drop, later, project / "inside"])
    assert f"ExecStart={sys.executable} -m elt --project {project} serve" in unit
    # No "-": a missing .env fails the service loudly instead of running on sample data.
    assert f"EnvironmentFile={project}/.env\n" in unit and "EnvironmentFile=-" not in unit
    assert "Restart=on-failure" in unit and "\nUser=etl\n" in unit and "KillSignal=SIGTERM" in unit
    for line in ("NoNewPrivileges=yes", "PrivateTmp=yes", "ProtectSystem=strict"):
        assert f"\n{line}\n" in unit
    # The project (embedded database, state) and a drop folder outside it are writable; nothing else.
    assert f"\nReadWritePaths={project} {drop} -{later}\n" in unit


@pytest.mark.parametrize("user, allow_root, message", [
    (None, False, "give the account the service runs as: --user NAME"),
    ("", False, "give the account the service runs as: --user NAME"),
    ("root", False, "--user root: a pipeline service should not run as root"),
    ("etl\nExecStartPre=/bin/sh -c evil", False, "is not a valid user name"),
    ("Etl User", False, "is not a valid user name"),
])
def test_systemd_unit_refuses_a_missing_invalid_or_root_user(tmp_path, user, allow_root, message):
    with pytest.raises(ConfigError) as raised:
        systemd_unit(tmp_path, user=user, allow_root=allow_root)
    assert message in str(raised.value)


def test_systemd_unit_runs_as_root_only_when_asked(tmp_path):
    unit = systemd_unit(tmp_path, user="root", allow_root=True)
    assert "\nUser=root\n" in unit and "ReadWritePaths=" in unit and "/var/lib/elt" in unit


def test_the_cron_health_line_is_silent_while_healthy_and_prints_the_problems_otherwise(tmp_path):
    """Run the generated check line with /bin/sh, with a stand-in `elt check` (healthy, then not)."""
    line = next(x for x in crontab(tmp_path, {"a": Pipeline("a", every="1h")}).splitlines() if " check" in x
                and not x.startswith("#"))
    command = line.split(" ", 5)[5]
    fake = tmp_path / "fake_elt.sh"
    fake.write_text('echo "problem: stale data"; exit "$(cat "$(dirname "$0")/exit_code")"\n')
    command = command.replace(f"{shlex.quote(sys.executable)} -m elt check", f"sh {fake}")
    assert command.count(f"sh {fake}") == 2, command
    for code, expected_out, expected_rc in (("0", "", 0), ("1", "problem: stale data\n", 1)):
        (tmp_path / "exit_code").write_text(code)
        done = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True, timeout=30)
        assert (done.stdout, done.returncode) == (expected_out, expected_rc)


def test_the_cron_log_is_bounded(tmp_path):
    line = next(x for x in crontab(tmp_path, {"a": Pipeline("a", every="1h")}).splitlines() if "mv -f" in x)
    command = line.split(" ", 5)[5]
    log = tmp_path / "elt-cron.log"
    log.write_bytes(b"x" * 1000)
    subprocess.run(["/bin/sh", "-c", command], check=False, timeout=30)
    assert log.exists() and not (tmp_path / "elt-cron.log.1").exists()  # small: left alone
    log.write_bytes(b"x" * (11 * 1024 * 1024))
    subprocess.run(["/bin/sh", "-c", command], check=True, timeout=30)
    assert not log.exists() and (tmp_path / "elt-cron.log.1").stat().st_size == 11 * 1024 * 1024


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
    assert any(line.startswith("*/15 * * * * ") and line.endswith(" check)") for line in lines)
    assert "Debian's and Ubuntu's default `cron`" in text and "These lines need Australia/Sydney" in text


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
    missing = run_elt(["deploy", "systemd"], cwd=project, database_url=database_url)
    assert missing.returncode == 2 and "--user NAME" in missing.stderr
    root = run_elt(["deploy", "systemd", "--user", "root"], cwd=project, database_url=database_url)
    assert root.returncode == 2 and "--allow-root" in root.stderr
    result = run_elt(["deploy", "systemd", "--user", "etl", "--output", str(out)], cwd=project,
                     database_url=database_url)
    assert result.returncode == 0, result.stderr
    assert "serve" in out.read_text() and "User=etl" in out.read_text()
    bad = run_elt(["deploy", "kubernetes"], cwd=project, database_url=database_url)
    assert bad.returncode == 2 and "use one of: systemd, cron, pg-cron" in bad.stderr
