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
from tests.generator.specs import HONOURED, SPECS

pytestmark = pytest.mark.slow

EXPECTED = {
    "rate_limited_api": ("API-to-DB sync", {"campaigns": "append_dedup", "spend": "append_dedup"}),
    "big_database": ("simple ELT", {"journal_lines": "upsert", "accounts": "replace"}),
    "webhook": ("event-driven", {"orders": "append", "refunds": "append"}),
    "csv_only": ("file processing", {"sales": "append", "price_lists": "append"}),
    "cdc": ("CDC", {"invoices": "append", "customers": "append"}),
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
    # The raw DDL elt runs: a stream's table, or a webhook source's (drawn from its columns).
    assert ('CREATE TABLE IF NOT EXISTS "raw".' in document or "CREATE TABLE raw." in document)
    assert "CREATE VIEW stg." in document
    if name == "big_database":  # retention never deletes the current rows of an upsert table
        assert "`raw.erp_journal_lines` (upsert): holds the current rows, not history: never delete by age" in document
        assert "DELETE FROM raw.erp_journal_lines" not in document
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
    # Right after the first run the document still says what the project is: no false drift.
    fresh = run_elt(["docs", "--check"], cwd=project, database_url=database_url)
    assert fresh.returncode == 0 and "up to date" in fresh.stdout, fresh.stdout
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
        "Kiosk!", "kiosk", "A kiosk's sales", "Europe/Pariss", "Europe/Paris",  # each wrong answer is asked again
        "one", "1",                                                             # project, description, zone, sources
        "pos", "ftp", "file_drop",
        "daily", "lots", "5000", "200", "none", "Sales!", "sales:sold_at",
        "postgres", "",
    ]) + "\n"
    result = subprocess.run([sys.executable, "-m", "elt", "init", str(tmp_path / "kiosk"), "--interactive"],
                            input=answers, env=elt_env(database_url), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "please answer one of: rest_api, database, file_drop, webhook, manual" in result.stdout
    assert "please answer lower case letters, digits and _, starting with a letter" in result.stdout
    assert "'Europe/Pariss' is not a time zone" in result.stdout
    assert result.stdout.count("please answer a whole number") == 2  # "one" and "lots"
    assert "'Sales!': write name or name:cursor" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
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
    ("serverless", "bigquery", ("one `elt run` per schedule, no long-running process", "BigQuery")),
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


def test_a_generated_rest_source_says_it_reads_samples_then_switches_to_the_real_api_set_in_dotenv(
        tmp_path, database_url, db, fake_api):
    project = generate(SPECS["rate_limited_api"], tmp_path / "ads_sync").directory
    (project / ".env").write_text("ELT_ENV=production\n")
    on_samples = run_elt(["run"], cwd=project, database_url=database_url)
    assert on_samples.returncode == 0, on_samples.stderr[-2000:]
    assert "campaigns: read sample data, not its real source: sample_data/adsapi (set ADSAPI_BASE_URL" \
        in on_samples.stderr
    logged = [json.loads(line) for line in on_samples.stderr.splitlines() if line.startswith("{")]
    assert {e["stream"] for e in logged if e.get("event") == "stream reads sample data, not its real source"} == {
        "campaigns", "spend"}
    runs = json.loads(run_elt(["status", "--json"], cwd=project, database_url=database_url).stdout)
    assert runs[0]["streams"]["campaigns"]["sample"].startswith("sample_data/adsapi")
    table = run_elt(["status"], cwd=project, database_url=database_url).stdout
    assert "sample data" in table and "campaigns, spend" in table
    check = run_elt(["check", "--json"], cwd=project, database_url=database_url)
    problems = json.loads(check.stdout)["problems"]
    assert check.returncode == 1
    assert sorted(p["subject"] for p in problems if p["check"] == "sample_data") == ["adsapi.campaigns", "adsapi.spend"]

    seen = []

    @fake_api.route("/v2/campaigns")
    def campaigns(request):
        seen.append(request)
        page = int(request.params.get("page", 1))
        rows = [{"id": i, "name": f"live {i}", "updated_at": "2026-06-01T00:00:00Z"} for i in range(1, 4)]
        return {"data": rows if page == 1 else []}

    fake_api.route("/v2/spend", lambda request: {"data": []})
    fake_api.route("/oauth/token", lambda r: {"access_token": "tok-live-123", "expires_in": 3600}, method="POST")
    # As the generated README says: the real API's settings go in .env, nowhere else.
    (project / ".env").write_text(
        f"ELT_ENV=production\nADSAPI_BASE_URL={fake_api.url}/v2\nADS_CLIENT_SECRET=s3cret-live-value\n"
        f"ADSAPI_CLIENT_ID=client-1\nADSAPI_TOKEN_URL={fake_api.url}/oauth/token\n")
    db.execute("TRUNCATE raw.adsapi_campaigns")
    run = run_elt(["run", "--full-refresh"], cwd=project, database_url=database_url)
    assert run.returncode == 0, run.stderr[-2000:]
    names = [r["p"]["name"] for r in db.execute("SELECT _raw_payload AS p FROM raw.adsapi_campaigns ORDER BY 1").fetchall()]
    assert names == ["live 1", "live 2", "live 3"]  # the configured API, not sample_data/
    assert seen and all(r.headers.get("Authorization") == "Bearer tok-live-123" for r in seen)
    assert "s3cret-live-value" not in run.stdout + run.stderr
    assert "sample data" not in run.stderr
    assert "sample" not in json.loads(run_elt(["status", "--json"], cwd=project, database_url=database_url).stdout)[0][
        "streams"]["campaigns"]
    check = run_elt(["check", "--json"], cwd=project, database_url=database_url)
    assert not [p for p in json.loads(check.stdout)["problems"] if p["check"] == "sample_data"], check.stdout

    # The project's own tests still read the samples, whatever .env says (from an empty destination:
    # they count exactly the sample records).
    db.execute("DROP TABLE raw.adsapi_campaigns, raw.adsapi_spend CASCADE")
    db.execute("DELETE FROM pipeline.state")
    own = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=project,
                         env=elt_env(database_url), capture_output=True, text=True, timeout=600)
    assert own.returncode == 0, own.stdout[-3000:]


def test_errors_print_the_real_regex_not_rich_markup(tmp_path, database_url):
    spec = tmp_path / "req.yaml"
    spec.write_text(SPECS["csv_only"].replace("project: bakery", "project: My Bakery"))
    result = run_elt(["init", str(tmp_path / "x"), "--spec", str(spec)], cwd=tmp_path, database_url=database_url)
    assert result.returncode == 2
    assert "'^[a-z][a-z0-9_]*$'" in result.stderr, result.stderr


def test_declared_field_types_are_the_streams_record_contract(tmp_path, database_url, db):
    project = generate(SPECS["csv_only"], tmp_path / "bakery").directory
    header = (project / "sample_data" / "till" / "sales-sample.csv").read_text().splitlines()[0]
    assert header == "sale_id,sold_at,product,quantity,price,paid_card"
    (project / "sample_data" / "till" / "sales-late.csv").write_text(
        header + "\n9001,2026-02-01T10:00:00Z,bread,lots,2.5,true\n9002,2026-02-01T11:00:00Z,cake,2,,\n")
    run = run_elt(["run", "till"], cwd=project, database_url=database_url)
    assert run.returncode == 3, run.stderr[-2000:]  # partial: one record rejected
    dead = db.execute("SELECT error_message FROM pipeline.dead_letter").fetchall()
    assert len(dead) == 1 and "contract TillSalesRecord rejected the record" in dead[0]["error_message"]
    assert "quantity" in dead[0]["error_message"]
    # An empty cell is a missing value, not a bad one: 9002 loaded.
    assert db.execute("SELECT count(*) AS n FROM raw.till_sales WHERE _raw_payload->>'sale_id' = '9002'"
                      ).fetchone()["n"] == 1


def test_spec_fields_are_honoured_or_answered(tmp_path, database_url, db, monkeypatch):
    from tests.fixtures.smtp import SmtpServer

    spec = tmp_path / "req.yaml"
    spec.write_text(HONOURED)
    created = run_elt(["init", str(tmp_path / "shop_ops"), "--spec", str(spec)], cwd=tmp_path, database_url=database_url)
    assert created.returncode == 0, created.stderr
    project = tmp_path / "shop_ops"
    # SFTP: a clear decision, not a silent CSV folder.
    assert "partner, access: elt reads folders, not SFTP servers: mount sftp://partner.example.com/outbox" in \
        " ".join(created.stdout.split())
    # The password in the MySQL access URL is masked everywhere and copied nowhere.
    assert "hunter2-s3cret" not in created.stdout + created.stderr
    for path in project.rglob("*"):
        if path.is_file() and ".elt" not in path.parts:
            assert b"hunter2-s3cret" not in path.read_bytes(), path
    assert "mysql://app:***@db.internal:3306/shop" in (project / "docs" / "architecture.md").read_text()
    env_example = (project / ".env.example").read_text()
    assert "ORDERS_DB_DATABASE_URL=mysql+pymysql://" in env_example and "pip install pymysql" in env_example
    assert "# SHOP_DB_PASSWORD=\n" not in env_example  # not asked for: the password is part of the URL

    # A JSON drop is read as JSON.
    assert list((project / "sample_data" / "partner").glob("stock-sample.json"))
    assert 'format = "json"' in (project / "pipelines.py").read_text()
    run = run_elt(["run"], cwd=project, database_url=database_url)
    assert run.returncode == 0, run.stderr[-2000:]
    assert db.execute("SELECT count(*) AS n FROM raw.partner_stock").fetchone()["n"] == 25
    assert db.execute("SELECT count(*) AS n FROM raw.orders_db_orders").fetchone()["n"] == 25

    # alert_email: once SMTP is configured, alerts reach that address.
    from elt import alerts
    from elt.pipeline import load_project

    with SmtpServer() as smtp:
        for key, value in {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(smtp.port)}.items():
            monkeypatch.setenv(key, value)
        try:
            load_project(project)
            configured = alerts.configured()
            assert [type(s).__name__ for s in configured.sinks] == ["Email"]
            assert alerts._deliver(configured, "elt failed run: orders_db", "the run failed")
        finally:
            from elt.pipeline import clear_registry

            clear_registry()
        assert [m["To"] for m in smtp.messages] == ["ops@shop.example"]


def test_the_cdc_pattern_captures_inserts_updates_and_deletes_once_installed(tmp_path, database_url, db, source_url):
    import psycopg

    project = generate(SPECS["cdc"], tmp_path / "live_ledger").directory
    text = (project / "pipelines.py").read_text()
    assert "class ErpSource(CdcExtractor):" in text and 'source_table = "public.invoices"' in text
    assert "elt cdc install ERP_DATABASE_URL public.invoices --apply" in (project / "README.md").read_text()

    with psycopg.connect(source_url, autocommit=True) as source:
        source.execute("CREATE TABLE public.invoices (id int PRIMARY KEY, customer text, total numeric,"
                       " updated_at timestamptz DEFAULT now())")
    (project / ".env").write_text(f"ERP_DATABASE_URL={source_url}\n")
    # As the README says: the variable's name, resolved from .env, keeps the URL out of the shell history.
    installed = run_elt(["cdc", "install", "ERP_DATABASE_URL", "public.invoices", "--apply"], cwd=project,
                        database_url=database_url)
    assert installed.returncode == 0, installed.stderr
    with psycopg.connect(source_url, autocommit=True) as source:
        source.execute("INSERT INTO public.invoices (id, customer, total) VALUES (1, 'ada', 10), (2, 'bob', 20),"
                       " (3, 'cy', 30)")
        source.execute("UPDATE public.invoices SET total = 11 WHERE id = 1")
        source.execute("DELETE FROM public.invoices WHERE id = 3")
    run = run_elt(["run", "erp", "--stream", "invoices"], cwd=project, database_url=database_url)
    assert run.returncode == 0, run.stderr[-2000:]
    assert db.execute("SELECT count(*) AS n FROM raw.erp_invoices").fetchone()["n"] == 5  # every change
    rows = db.execute("SELECT id, total, deleted FROM stg.erp_invoices ORDER BY id").fetchall()
    assert [(r["id"], float(r["total"]), r["deleted"]) for r in rows] == [(1, 11.0, False), (2, 20.0, False),
                                                                          (3, 30.0, True)]
    assert [r["id"] for r in db.execute("SELECT id FROM mart.erp_invoices ORDER BY id").fetchall()] == [1, 2]


def test_freshness_can_be_a_duration_and_infeasible_syncs_and_quotas_exit_non_zero(tmp_path, database_url):
    import yaml

    data = yaml.safe_load(SPECS["rate_limited_api"])
    data["sources"][0]["freshness"] = "15m"
    fits = plan(parse(data)).sources[0]
    assert (fits.every, fits.schedule) == ("15m", None)
    assert not [d for d in fits.advice if d.infeasible]

    # 288 syncs a day (every 5m) × 30 requests (3,000 changed rows, 100 a page) > 2,000 requests a day.
    data["sources"][0].update(freshness="5m", volume={"rows_per_sync": 3000, "total_rows": 1_500_000},
                              rate_limit={"requests_per_day": 2000, "requests_per_second": 0.05, "page_size": 100})
    spec = tmp_path / "req.yaml"
    spec.write_text(yaml.safe_dump(data))
    result = run_elt(["init", str(tmp_path / "ads"), "--spec", str(spec)], cwd=tmp_path, database_url=database_url)
    assert result.returncode == 1, result.stdout + result.stderr
    said = " ".join(result.stderr.split())
    assert "288 syncs a day × 30 requests = 8,640 requests, more than the 2,000 a day the API allows" in said
    assert "adsapi, incremental sync: infeasible at this rate limit" in said
    assert "the requirements cannot be met as written" in said
    assert (tmp_path / "ads" / "pipelines.py").is_file()  # written, to read and change

    data["sources"][0]["freshness"] = "weekly"
    with pytest.raises(ConfigError) as raised:
        parse(data)
    assert "or a duration like '15m', '6h' or '1d'; got 'weekly'" in str(raised.value)


def test_each_patterns_example_ships_and_leads_to_its_pattern(tmp_path, database_url):
    from elt.generator.examples import PATTERNS

    for name, pattern in PATTERNS.items():
        written = run_elt(["init", "--example", name], cwd=tmp_path, database_url=database_url)
        assert written.returncode == 0, written.stderr
        text = (tmp_path / f"requirements-{name}.yaml").read_text()
        assert plan(parse(__import__("yaml").safe_load(text))).pattern.choice == pattern, name
    again = run_elt(["init", "--example", "cdc"], cwd=tmp_path, database_url=database_url)
    assert again.returncode == 2 and "exists" in again.stderr
    unknown = run_elt(["init", "--example", "lakehouse"], cwd=tmp_path, database_url=database_url)
    assert unknown.returncode == 2 and "api_sync (API-to-DB sync)" in unknown.stderr
    # One of them, generated and run end to end (the others' generated code is covered by the matrix).
    created = run_elt(["init", str(tmp_path / "shopfront"), "--spec", str(tmp_path / "requirements-multi_source.yaml")],
                      cwd=tmp_path, database_url=database_url)
    assert created.returncode == 0, created.stdout + created.stderr
    run = run_elt(["run"], cwd=tmp_path / "shopfront", database_url=database_url)
    assert run.returncode == 0, run.stderr[-3000:]


def test_the_documents_monitoring_and_retention_queries_run_as_they_stand(tmp_path, database_url, db):
    project = generate(SPECS["rate_limited_api"], tmp_path / "ads_sync").directory
    assert run_elt(["run"], cwd=project, database_url=database_url).returncode == 0
    document = (project / "docs" / "architecture.md").read_text()
    sections = dict(re.findall(r"^## \d+\. (.+?)\n(.*?)(?=^## |\Z)", document, re.M | re.S))
    monitoring = re.findall(r"```sql\n(.*?)```", sections["Monitoring and alerting"], re.S)
    retention = re.findall(r"```sql\n(.*?)```", sections["Maintenance schedule"], re.S)
    queries = [q for q in monitoring if q.lstrip().startswith("SELECT")]
    assert len(queries) == 5 and len(retention) == 2  # campaigns and spend keep history (append_dedup)
    assert any("CREATE TABLE IF NOT EXISTS pipeline.execution_log" in q for q in monitoring)  # elt's own DDL
    assert "interval '7200 seconds'" in sections["Monitoring and alerting"]  # hourly: twice the interval
    for query in queries + retention:
        db.execute(query)  # each runs as it stands, on the project's own tables
    late = db.execute(queries[0]).fetchall()
    assert late == []  # just ran: nothing late
    assert db.execute("SELECT count(*) AS n FROM raw.adsapi_campaigns").fetchone()["n"] == 25  # retention kept all
    # Per stream error handling, and per source steps.
    assert "| adsapi.spend | none: one fails the run | records breaking the key, cursor or contract rules |" in document
    assert "rotate its credential by changing it in `.env`" in sections["Runbook"]
    assert "never delete by age" not in sections["Maintenance schedule"]  # no upsert/replace table here
    # The raw DDL is what elt runs: collations and indexes.
    assert 'COLLATE "C"' in sections["Schema design"] and "CREATE UNIQUE INDEX" in sections["Schema design"]
    # The flowchart shows what runs and watches the pipelines.
    assert "scheduler -. starts .-> extract" in document and "extract -. rejected .-> dead_letter" in document


@pytest.mark.parametrize("access", [
    "mysql://app@db.internal:3306/shop?ssl=true&password=hunter2-s3cret",
    "host=db.internal dbname=shop user=app password=hunter2-s3cret",
    "mysql://app:hunter2@s3cret@db.internal:3306/shop",  # an unencoded "@" inside the password
], ids=["query-param", "libpq-keywords", "unencoded-at"])
def test_a_password_in_any_form_of_access_is_masked_in_every_generated_file(tmp_path, database_url, access):
    from tests.generator.specs import HONOURED

    spec = tmp_path / "req.yaml"
    spec.write_text(HONOURED.replace("mysql://app:hunter2-s3cret@db.internal:3306/shop", f'"{access}"'))
    created = run_elt(["init", str(tmp_path / "shop_ops"), "--spec", str(spec)], cwd=tmp_path, database_url=database_url)
    assert created.returncode == 0, created.stderr
    assert "s3cret" not in created.stdout + created.stderr
    for path in (tmp_path / "shop_ops").rglob("*"):
        if path.is_file() and ".elt" not in path.parts:
            assert b"s3cret" not in path.read_bytes(), path
    assert "***" in (tmp_path / "shop_ops" / "docs" / "architecture.md").read_text()
