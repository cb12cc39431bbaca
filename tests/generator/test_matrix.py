"""The generator matrix: every source type × auth kind × cursor type × destination generates a project that runs.

What runs (kept to about a minute on a busy 2-core machine): the matrix project (a REST
source per auth kind and a source of every other type, each with a timestamp, an integer
and no cursor) runs `elt run` twice, the second run re-reading only what the cursors and
lookbacks say, and passes its own tests; it also reads a live API (a FakeApi on 127.0.0.1)
with every auth kind set in its .env. The destination kind (postgres, supabase, bigquery)
changes only documents and comments: the other two are generated and compared with it
file by file (everything that runs must be the same), instead of being run again.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys

import pytest

from elt.generator import generate
from tests.fixtures.projects import elt_env, run_elt
from tests.generator.matrix import AUTHS, DESTINATIONS, ENTITIES, OTHER_TYPES, matrix_spec

pytestmark = pytest.mark.slow

PIPELINES = [f"api_{name}" for name in AUTHS] + list(OTHER_TYPES)


@pytest.fixture(autouse=True)
def _stop_sample_api():
    """Generating imports the project, which starts its sample API in this process: stop it after."""
    yield
    module = sys.modules.get("sample_api")
    if module is not None and module._api is not None:
        module._api.stop()
        module._api = None


def _runs(project, database_url):
    status = run_elt(["status", "--json", "--limit", "100"], cwd=project, database_url=database_url)
    return json.loads(status.stdout)


@pytest.mark.parametrize("destination", [d for d in DESTINATIONS if d not in ("postgres", "bigquery")])
def test_the_destination_kind_changes_only_documents(tmp_path, destination):
    base = generate(matrix_spec("postgres"), tmp_path / "postgres").directory
    other = generate(matrix_spec(destination), tmp_path / destination).directory
    runs = ["pipelines.py", "sample_api.py", "tests/test_pipelines.py", *(str(p.relative_to(base)) for p in
                                                                          base.glob("sql/**/*.sql"))]
    for name in runs:
        assert (other / name).read_text().replace(f"matrix_{destination}", "matrix_postgres") == (base / name).read_text(), name
    for data in base.glob("sample_data/**/*"):
        if data.is_file():
            assert (other / data.relative_to(base)).read_bytes() == data.read_bytes(), data
    assert destination in (other / "docs" / "architecture.md").read_text().lower()


def test_the_matrix_project_runs_twice_and_the_second_run_reads_only_the_lookback(tmp_path, database_url, db):
    destination = "postgres"
    generated = generate(matrix_spec(destination), tmp_path / destination)
    project = generated.directory
    assert sorted(sp.pipeline for sp in generated.plan.sources) == sorted(PIPELINES)
    for attempt in (1, 2):
        run = run_elt(["run"], cwd=project, database_url=database_url, timeout=300)
        assert run.returncode == 0, f"run {attempt}: " + run.stderr[-4000:]
    runs = _runs(project, database_url)
    # A webhook source is received by `elt serve`, not run as a pipeline: its tables fill as events arrive.
    polled = [p for p in PIPELINES if p != "webhook"]
    assert len(runs) == 2 * (len(polled) + 1) and {r["status"] for r in runs} == {"success"}
    second = {r["pipeline_name"]: r["streams"] for r in runs[:len(polled) + 1]}
    # Multi-source: a cross-source mart, built by a `marts` pipeline that runs after every source.
    assert second["marts"] == {}
    assert f"after=[{', '.join(repr(p).replace(chr(39), chr(34)) for p in polled)}]" in (
        project / "pipelines.py").read_text()
    activity = db.execute("SELECT source, entity, records FROM mart.cross_source_activity").fetchall()
    assert {(r["source"], r["entity"]) for r in activity} == {(p, e["name"]) for p in polled for e in ENTITIES}
    for pipeline in polled:
        streams = second[pipeline]
        if pipeline.startswith("api_") or pipeline == "database":
            # timestamps 5 h apart, 10-minute lookback: the last record again; integers 10 apart,
            # lookback 100: the last 11; no cursor: read whole.
            # (the database reads its boundary row inclusively: one more at most)
            assert 1 <= streams["events"]["extracted"] <= 2, (pipeline, streams)
            assert 11 <= streams["ledger"]["extracted"] <= 12, (pipeline, streams)
            assert streams["plans"]["extracted"] == 25, (pipeline, streams)
        else:  # files: each loaded once
            assert all(f["extracted"] == 0 for f in streams.values()), (pipeline, streams)
    for pipeline in polled:
        for entity in ENTITIES:
            table = f"raw.{pipeline}_{entity['name']}"
            keys = db.execute(f"SELECT count(DISTINCT _raw_payload->>'{entity['primary_key']}') AS n FROM {table}")
            assert keys.fetchone()["n"] == 25, table

    for line in (project / "pipelines.py").read_text().splitlines():
        if "#" in line and " if LIVE_" in line:  # a comment must never swallow the live/sample condition
            assert line.index(" if LIVE_") < line.index("#"), line

    own = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=project,
                         env=elt_env(database_url), capture_output=True, text=True, timeout=600)
    assert own.returncode == 0, own.stdout[-3000:]
    assert "3 passed" in own.stdout


def test_every_auth_kind_reaches_a_live_api_set_in_dotenv(tmp_path, database_url, db, fake_api):
    project = generate(matrix_spec("postgres"), tmp_path / "live").directory
    seen: dict[str, list] = {name: [] for name in AUTHS}

    def serve(request):
        source = request.path_params["source"]
        seen[source].append(request)
        page = int(request.params.get("page", 1))
        rows = [{"id": i, "code": f"c{i}", "seq": i, "updated_at": f"2026-06-0{i}T00:00:00Z", "live": True}
                for i in range(1, 4)]
        return {"data": rows if page == 1 else []}

    fake_api.route("/{source}/{entity}", serve)
    fake_api.route("/token", lambda r: {"access_token": "oauth-token-xyz", "expires_in": 3600}, method="POST")
    settings = {
        "KEY_HEADER_SECRET": "header-key-123", "KEY_QUERY_SECRET": "query-key-456", "BEARER_TOKEN": "bearer-789",
        "API_BASIC_USER": "reader", "BASIC_PASSWORD": "basic-pw-000",
        "API_OAUTH2_TOKEN_URL": f"{fake_api.url}/token", "API_OAUTH2_CLIENT_ID": "client-1",
        "OAUTH_CLIENT_SECRET": "oauth-secret-111",
    }
    settings |= {f"API_{name.upper()}_BASE_URL": f"{fake_api.url}/{name}" for name in AUTHS}
    (project / ".env").write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    apis = [f"api_{name}" for name in AUTHS]
    run = run_elt(["run", *apis], cwd=project, database_url=database_url, timeout=300)
    assert run.returncode == 0, run.stderr[-4000:]
    for pipeline in apis:
        for entity in ENTITIES:
            rows = db.execute(f"SELECT _raw_payload AS p FROM raw.{pipeline}_{entity['name']}").fetchall()
            assert len(rows) == 3 and all(r["p"]["live"] for r in rows), (pipeline, entity["name"])
    assert all(len(requests) >= 3 for requests in seen.values()), {k: len(v) for k, v in seen.items()}
    assert all("X-Api-Token" not in r.headers and "Authorization" not in r.headers for r in seen["none"])
    assert all(r.headers.get("X-Api-Token") == "header-key-123" for r in seen["key_header"])
    assert all(r.params.get("apikey") == "query-key-456" for r in seen["key_query"])
    assert all(r.headers.get("Authorization") == "Bearer bearer-789" for r in seen["bearer"])
    basic = "Basic " + base64.b64encode(b"reader:basic-pw-000").decode()
    assert all(r.headers.get("Authorization") == basic for r in seen["basic"])
    assert all(r.headers.get("Authorization") == "Bearer oauth-token-xyz" for r in seen["oauth2"])
    output = run.stdout + run.stderr
    assert not [v for k, v in settings.items() if "SECRET" in k or "TOKEN" in k or "PASSWORD" in k
                if not v.startswith("http") and v in output]
    assert "sample data" not in run.stderr


def test_a_bigquery_project_differs_only_in_where_it_loads(tmp_path):
    """Written, not imported (running it needs elt.BigQuery): the destination lines, the models' tie-break and
    the tests' row count differ; everything else is the PostgreSQL project's."""
    import yaml

    from elt.generator import parse, plan
    from elt.generator.scaffold import BIGQUERY_DESTINATION, write_project

    def write(destination):
        text = matrix_spec(destination)
        target = tmp_path / destination
        write_project(plan(parse(yaml.safe_load(text))), target, text)
        return target

    base, other = write("postgres"), write("bigquery")

    def same(name):
        return (other / name).read_text().replace("matrix_bigquery", "matrix_postgres")

    code = same("pipelines.py")
    assert code.count("destination=DESTINATION,") == code.count("\nPipeline(\n") > 0
    without = code.replace(BIGQUERY_DESTINATION, "").replace("    destination=DESTINATION,\n", "").replace("    BigQuery,\n", "")
    assert without == (base / "pipelines.py").read_text()
    for path in base.glob("sql/**/*.sql"):
        name = str(path.relative_to(base))
        assert same(name) == path.read_text().replace("_row_seq DESC", "_loaded_at DESC"), name
    assert (other / "sample_api.py").read_text() == (base / "sample_api.py").read_text()
    for data in base.glob("sample_data/**/*"):
        if data.is_file():
            assert (other / data.relative_to(base)).read_bytes() == data.read_bytes(), data
