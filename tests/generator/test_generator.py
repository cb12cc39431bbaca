"""`elt init --spec`: each pattern's project installs, runs on its sample data, passes its own tests, and is documented."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from elt.errors import ConfigError
from elt.generator import generate, parse, plan
from elt.generator.architecture import SECTIONS
from tests.fixtures.projects import elt_env, run_elt
from tests.generator.specs import SPECS

pytestmark = pytest.mark.slow

EXPECTED = {
    "rate_limited_api": ("API-to-DB sync", {"campaigns": "append_dedup", "spend": "append_dedup"}),
    "big_database": ("simple ELT", {"journal_lines": "upsert", "accounts": "replace"}),
    "webhook": ("event-driven", {"orders": "append", "refunds": "append"}),
    "csv_only": ("file processing", {"sales": "append", "price_lists": "append"}),
    "hybrid": ("hybrid", {"orders": "append_dedup", "charges": "append"}),
}


@pytest.mark.parametrize("name", list(SPECS))
def test_generated_project_runs_on_sample_data_and_passes_its_own_tests(tmp_path, database_url, name):
    generated = generate(SPECS[name], tmp_path / name)
    pattern, strategies = EXPECTED[name]
    assert generated.plan.pattern.choice == pattern
    assert {s.entity.name: s.write_strategy for sp in generated.plan.sources for s in sp.streams} == strategies
    project = generated.directory
    for path in ("pipelines.py", ".env.example", "README.md", "tests/test_pipelines.py", "docs/architecture.md",
                 f"deploy/elt-{name}.service", "deploy/crontab", "requirements.yaml"):
        assert (project / path).is_file(), path
    assert list((project / "sql" / "stg").glob("*.sql")) and list((project / "sql" / "mart").glob("*.sql"))

    run = run_elt(["run"], cwd=project, database_url=database_url)
    assert run.returncode == 0, run.stderr[-3000:]
    own_tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=project,
                               env=elt_env(database_url), capture_output=True, text=True, timeout=600)
    assert own_tests.returncode == 0, own_tests.stdout[-3000:]
    assert "3 passed" in own_tests.stdout

    document = (project / "docs" / "architecture.md").read_text()
    assert [m.group(1) for m in re.finditer(r"^## \d+\. (.+)$", document, re.M)] == list(SECTIONS)
    assert document.count("```mermaid") == 2 and "flowchart LR" in document and "gantt" in document
    assert "CREATE TABLE raw." in document and "CREATE VIEW stg." in document
    secrets = {s.auth.secret_env for s in generated.plan.requirements.sources if s.auth.secret_env}
    env_example = (project / ".env.example").read_text()
    assert all(secret in env_example for secret in secrets)


def test_the_full_sync_arithmetic_and_the_fix_are_written_down(tmp_path):
    the_plan = plan(parse(__import__("yaml").safe_load(SPECS["rate_limited_api"])))
    advice = {d.topic: d for d in the_plan.sources[0].advice}
    full = advice["full sync"]
    # 1,500,000 rows / 200 per page = 7,500 requests at 1 request/s: 125 minutes, more than the hourly need.
    assert full.choice == "backfill once, then incremental"
    assert full.reason.startswith("At 1 requests/s and 200 records/request, a full sync of 1,500,000 rows takes"
                                  " 7,500 requests, 2.1 h. That is longer than the hourly need (60 min).")
    assert "about 3,000 rows, 15 requests, 15 s" in full.reason
    big = plan(parse(__import__("yaml").safe_load(SPECS["big_database"]))).sources[0]
    assert [d.topic for d in big.advice] == ["schedule", "large source"]
    assert big.advice[1].reason.startswith("50,000,000 rows: never re-read it whole.")
    # accounts has no cursor: the source cannot say what changed, so it is read whole (replace).
    accounts = next(s for s in big.streams if s.entity.name == "accounts")
    assert [(d.choice, d.reason) for d in accounts.decisions][0] == (
        "full refresh", "the source has no change tracking (no cursor field): only a full read sees every change")


@pytest.mark.parametrize("change, message", [
    ({"sources": [{"name": "x", "type": "ftp", "entities": ["a"]}]},
     "sources.0.type: must be one of 'rest_api', 'database', 'file_drop', 'webhook' or 'manual', got 'ftp'"),
    ({"sources": [{"name": "x", "type": "rest_api", "freshness": "weekly", "entities": ["a"]}]},
     "sources.0.freshness: must be one of 'real_time', 'near_real_time', 'hourly', 'daily' or 'on_demand'"),
    ({"sources": [{"name": "x", "type": "rest_api", "auth": {"kind": "bearer"}, "entities": ["a"]}]},
     "sources.0.auth: auth kind 'bearer' needs secret_env"),
    ({"sources": [{"name": "x", "type": "rest_api", "entities": []}]}, "sources.0.entities: List should have at least 1"),
    ({"sources": [{"name": "x", "type": "rest_api", "entities": ["a"], "volumes": {}}]},
     "sources.0.volumes: is not a known field"),
])
def test_a_bad_requirements_file_names_the_field_and_the_allowed_values(change, message):
    data = {"project": "p", **change}
    with pytest.raises(ConfigError) as raised:
        parse(data, "requirements.yaml")
    assert str(raised.value).startswith("requirements.yaml has ")
    assert message in str(raised.value)


def test_elt_init_cli_and_elt_docs_redraw_without_changes_then_show_drift(tmp_path, database_url):
    spec = tmp_path / "req.yaml"
    spec.write_text(SPECS["csv_only"])
    created = run_elt(["init", str(tmp_path / "bakery"), "--spec", str(spec)], cwd=tmp_path, database_url=database_url)
    assert created.returncode == 0, created.stderr
    assert "file processing" in created.stdout
    project = tmp_path / "bakery"
    assert run_elt(["run"], cwd=project, database_url=database_url).returncode == 0
    first = run_elt(["docs"], cwd=project, database_url=database_url)
    assert first.returncode == 0, first.stderr
    again = run_elt(["docs", "--check"], cwd=project, database_url=database_url)
    assert again.returncode == 0 and "up to date" in again.stdout  # drawing twice changes nothing

    pipelines = project / "pipelines.py"
    # Someone changes the till's schedule in the code: the document no longer says what runs.
    text, replaced = re.subn(r'schedule="[^"]+"', 'every="1h"', pipelines.read_text(), count=1)
    assert replaced == 1
    pipelines.write_text(text)
    drift = run_elt(["docs", "--check"], cwd=project, database_url=database_url)
    assert drift.returncode == 1, drift.stdout + drift.stderr
    assert "+| till | every 1h |" in drift.stdout
    again_bad = run_elt(["init", str(project), "--spec", str(spec)], cwd=tmp_path, database_url=database_url)
    assert again_bad.returncode == 2 and "not empty" in again_bad.stderr


def test_interactive_answers_become_a_project_and_its_requirements_file(tmp_path, database_url):
    answers = "\n".join([
        "kiosk", "A kiosk's sales", "Europe/Paris", "1",          # project, description, time zone, sources
        "pos", "ftp", "file_drop",                                  # a wrong type is asked again
        "daily", "5000", "200", "none", "sales:sold_at",
        "postgres", "",
    ]) + "\n"
    result = subprocess.run([sys.executable, "-m", "elt", "init", str(tmp_path / "kiosk"), "--interactive"],
                            input=answers, env=elt_env(database_url), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "please answer one of: rest_api, database, file_drop, webhook, manual" in result.stdout
    saved = (tmp_path / "kiosk" / "requirements.yaml").read_text()
    assert "type: file_drop" in saved and "timezone: Europe/Paris" in saved
    run = run_elt(["run"], cwd=tmp_path / "kiosk", database_url=database_url)
    assert run.returncode == 0, run.stderr


MERMAID = Path(__file__).resolve().parent / "mermaid"


def mermaid_errors(blocks: list[str]) -> list[dict]:
    """Parse each block with the real mermaid package (Node + jsdom); one result per block."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed here: the Mermaid diagrams are checked with the mermaid npm package under Node")
    if not (MERMAID / "node_modules" / "mermaid").is_dir():
        subprocess.run(["npm", "ci", "--silent", "--no-audit", "--no-fund"], cwd=MERMAID, check=True, timeout=600)
    out = subprocess.run([node, "check.mjs"], cwd=MERMAID, input=json.dumps(blocks), capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def test_the_mermaid_diagrams_are_valid_for_the_real_mermaid_parser(tmp_path):
    blocks, names = [], []
    for name, spec in SPECS.items():
        document = (generate(spec, tmp_path / name).directory / "docs" / "architecture.md").read_text()
        found = re.findall(r"```mermaid\n(.*?)```", document, re.S)
        assert len(found) == 2
        blocks += found
        names += [f"{name} flowchart", f"{name} gantt"]
    broken = "flowchart LR\n  a[\"unclosed --> b\n"  # the checker must be able to say no
    results = mermaid_errors(blocks + [broken])
    assert results[-1]["ok"] is False
    assert [(n, r["ok"]) for n, r in zip(names, results, strict=False)] == [(n, True) for n in names], results
    assert {r["type"] for r in results[:-1]} == {"flowchart-v2", "gantt"}


@pytest.mark.parametrize("runtime, destination, expected", [
    ("vps", "postgres", ("`elt serve` under systemd on the VPS", "PostgreSQL")),
    ("supabase", "supabase", ("extract on a small host, transform with pg_cron", "Supabase (PostgreSQL)")),
    ("serverless", "bigquery", ("one `elt run` per schedule, no long-running process", "PostgreSQL now, BigQuery-ready SQL")),
])
def test_constraints_and_destination_shape_the_deployment_decision(runtime, destination, expected):
    import yaml

    data = yaml.safe_load(SPECS["csv_only"])
    data["constraints"] = {"runtime": runtime}
    data["destination"] = {"kind": destination}
    the_plan = plan(parse(data))
    assert (the_plan.deployment.choice, the_plan.destination.choice) == expected


def test_a_generated_project_runs_on_the_embedded_default_straight_away(tmp_path, embedded_dir):
    project = generate(SPECS["csv_only"], tmp_path / "bakery").directory
    env = {"ELT_EMBEDDED_DIR": str(embedded_dir)}  # and no ELT_DATABASE_URL at all
    result = run_elt(["run"], cwd=project, database_url=None, timeout=300, **env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "embedded PostgreSQL" in result.stderr
    own = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=project,
                         env=elt_env(None, **env), capture_output=True, text=True, timeout=600)
    assert own.returncode == 0, own.stdout[-3000:]


def test_generated_webhook_sources_store_signed_events_and_refuse_forged_ones(tmp_path, database_url, db):
    import socket
    import time

    import httpx

    from elt.webhooks.signatures import Shopify, sign

    project = generate(SPECS["webhook"], tmp_path / "orders_live").directory
    assert not (project / "webhook_receiver.py").exists()
    source = (project / "pipelines.py").read_text()
    assert 'WebhookSource(\n    "shopify", "/webhooks/shopify/orders"' in source and 'signature="shopify"' in source
    assert "Receiving webhooks" in (project / "README.md").read_text()
    document = (project / "docs" / "architecture.md").read_text()
    assert "CREATE TABLE raw.shopify_orders" in document and "reverse proxy" in document and "Rotate" in document
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    secret = "shpss_generated_test_secret"
    receiver = subprocess.Popen([sys.executable, "-m", "elt", "webhooks", "--port", str(port)], cwd=project,
                                env=elt_env(database_url, SHOPIFY_WEBHOOK_SECRET=secret),
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/webhooks/shopify/orders"
    body = json.dumps({"id": 9001, "total": "12.50"}).encode()
    try:
        for _ in range(300):  # until it listens and has its database
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz").json()["database"] == "up":
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        headers = {"content-type": "application/json", "X-Shopify-Webhook-Id": "wh-1", **sign(Shopify(), body, secret)}
        assert httpx.post(url, content=body, headers=headers).status_code == 200
        assert httpx.post(url, content=body, headers=headers).json()["status"] == "duplicate"
        forged = {**headers, "X-Shopify-Webhook-Id": "wh-2", **sign(Shopify(), body, "not-the-secret")}
        assert httpx.post(url, content=body, headers=forged).status_code == 401
    finally:
        receiver.terminate()
        receiver.wait(timeout=60)
    rows = db.execute("SELECT event_id, _raw_payload AS p FROM raw.shopify_orders").fetchall()
    assert [(r["event_id"], r["p"]["id"]) for r in rows] == [("wh-1", 9001)]


def test_a_generated_rest_source_switches_to_the_real_api_when_configured(tmp_path, database_url, db, fake_api):
    project = generate(SPECS["rate_limited_api"], tmp_path / "ads_sync").directory
    seen = []

    @fake_api.route("/v2/campaigns")
    def campaigns(request):
        seen.append(request)
        page = int(request.params.get("page", 1))
        rows = [{"id": i, "name": f"live {i}", "updated_at": "2026-06-01T00:00:00Z"} for i in range(1, 4)]
        return {"data": rows if page == 1 else []}

    fake_api.route("/v2/spend", lambda request: {"data": []})
    fake_api.route("/oauth/token", lambda r: {"access_token": "tok-live-123", "expires_in": 3600}, method="POST")
    env = {"ADSAPI_BASE_URL": f"{fake_api.url}/v2", "ADS_CLIENT_SECRET": "s3cret-live-value",
           "ADSAPI_CLIENT_ID": "client-1", "ADSAPI_TOKEN_URL": f"{fake_api.url}/oauth/token"}
    run = run_elt(["run"], cwd=project, database_url=database_url, **env)
    assert run.returncode == 0, run.stderr[-2000:]
    names = [r["p"]["name"] for r in db.execute("SELECT _raw_payload AS p FROM raw.adsapi_campaigns ORDER BY 1").fetchall()]
    assert names == ["live 1", "live 2", "live 3"]  # the configured API, not sample_data/
    assert seen and all(r.headers.get("Authorization") == "Bearer tok-live-123" for r in seen)
    assert "s3cret-live-value" not in run.stdout + run.stderr
