"""Attack 7, secrets: passwords and tokens set in every form, then everything elt wrote is searched for them.

The project reads its destination URL (password in the URL, with ``@`` and ``/``
in it), an API token, a source URL with ``?password=`` and a libpq keyword
string with ``password=`` from its ``.env``. Its runs fail in the ways that
put connection strings and tokens into messages: a source that refuses the
connection, an API answering 401 with the token echoed back, a
``transform_record`` whose error quotes the token and a URL. Then every line
the commands printed (json and console logs), every row elt wrote to
``pipeline.*``, and every file it generated (``elt init`` from requirements
holding passwords, ``elt deploy`` for systemd, cron and pg_cron, ``elt docs``)
is searched for each secret, raw and percent-encoded: zero occurrences.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg import sql

from elt.testing import FakeApi, Reply
from tests.fixtures.projects import run_elt, write_project
from tests.reliability.conftest import Attack, AttackReport

SECRETS = {
    "destination URL password": "Dst@Pw/7f3a9c2e41",
    "API token": "tok_live_5b1de9a04c77f2",
    "source ?password=": "QryPw5b1de9a0",
    "libpq keyword password": "KwPw3c8e1f6d2",
    "requirements URL password": "ReqPw9d0c7b6a5",
}

PROJECT = """
    import os

    from elt import BearerAuth, Pipeline, RestExtractor, SqlExtractor, from_env


    class Charges(RestExtractor):
        name = "charges"
        path = "/charges"
        records_path = "data"
        primary_key = "id"
        backoff = 0.01
        max_attempts = 1
        auth = BearerAuth(from_env("API_TOKEN"))


    class Refunds(Charges):
        name = "refunds"
        path = "/refunds"
        max_bad_ratio = 1.0

        def transform_record(self, record):
            raise ValueError(f"cannot use token {os.environ['API_TOKEN']} with {os.environ['SHOP_URL']}")


    class Orders(SqlExtractor):
        name = "orders"
        table = "orders"
        primary_key = "id"


    class Items(Orders):
        name = "items"
        table = "items"


    Pipeline("payments", streams=[Charges(base_url=os.environ["API_URL"]), Refunds(base_url=os.environ["API_URL"])],
             schedule="0 * * * *")
    Pipeline("shop", streams=[Orders(url=from_env("SHOP_URL")), Items(url=from_env("SHOP_DSN"))], schedule="5 * * * *")
"""

REQUIREMENTS = """
    project: leaky
    description: Orders from a shop database whose URL holds a password.
    sources:
      - name: shop
        type: database
        format: postgres
        access: postgresql://shop:{password}@db.example.com:5432/shop
        volume: {{rows_per_sync: 100, total_rows: 1000}}
        freshness: hourly
        entities:
          - {{name: orders, primary_key: id, cursor: updated_at}}
"""


def with_password(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{quote(password, safe='')}@{host}"))


def forms(secret: str) -> set[str]:
    return {secret, quote(secret, safe=""), quote(secret)}


def test_no_secret_reaches_a_log_an_error_a_table_or_a_generated_file(
        tmp_path: Path, database_url: str, fake_api: FakeApi, attack_report: AttackReport) -> None:
    token = SECRETS["API token"]
    fake_api.route("/charges", lambda r: Reply({"error": f"invalid token {r.headers.get('Authorization')}"}, status=401))
    fake_api.route("/refunds", lambda r: {"data": [{"id": 1, "amount": 5}, {"id": 2, "amount": 7}]})
    project = write_project(tmp_path / "p", PROJECT)
    user = psycopg.conninfo.conninfo_to_dict(database_url).get("user") or "postgres"
    destination = with_password(database_url, str(user), SECRETS["destination URL password"])
    (project / ".env").write_text("\n".join([
        f"ELT_DATABASE_URL={destination}",
        f"API_TOKEN={token}",
        f"API_URL={fake_api.url}",
        f"SHOP_URL=postgresql://app@127.0.0.1:1/shop?password={SECRETS['source ?password=']}&connect_timeout=2",
        f"SHOP_DSN=host=127.0.0.1 port=1 user=app password={SECRETS['libpq keyword password']} dbname=shop"
        " connect_timeout=2",
    ]) + "\n")
    requirements = tmp_path / "requirements.yaml"
    requirements.write_text(textwrap.dedent(REQUIREMENTS.format(password=SECRETS["requirements URL password"])))

    outputs: list[tuple[str, str]] = []

    def elt(*args: str, **env: str) -> int:
        result = run_elt(list(args), cwd=project, database_url=None, **env)
        outputs.append((" ".join(args), result.stdout + result.stderr))
        return result.returncode

    assert elt("run") not in (0, 2)  # the runs fail (and are logged) in the ways that carry secrets
    assert elt("run", "payments", ELT_LOG_FORMAT="console") != 0
    for command in (["status"], ["dead-letter", "list"], ["check"], ["state", "show", "shop"], ["schedule"],
                    ["deploy", "systemd", "--user", "elt"], ["deploy", "cron"], ["deploy", "pg-cron"], ["docs"]):
        elt(*command)
    dead = elt("dead-letter", "show", "1")
    generated = tmp_path / "generated"
    init = run_elt(["init", str(generated), "--spec", str(requirements)], cwd=tmp_path, database_url=None)
    outputs.append(("init", init.stdout + init.stderr))
    assert generated.is_dir(), init.stderr

    texts = list(outputs)
    with psycopg.connect(database_url) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'pipeline' AND c.relkind = 'r'")]
        for table in tables:
            rows = conn.execute(sql.SQL("SELECT row_to_json(t)::text FROM {} t").format(
                sql.Identifier("pipeline", table))).fetchall()
            texts += [(f"pipeline.{table}", row) for (row,) in rows]
        messages = [m for (m,) in conn.execute("SELECT error_message FROM pipeline.execution_log") if m]
        letters = conn.execute("SELECT error_message FROM pipeline.dead_letter").fetchall()
    files = [path for folder in (project, generated) for path in folder.rglob("*")
             if path.is_file() and path.name != ".env" and ".elt" not in path.parts and "__pycache__" not in path.parts]
    for path in files:
        texts.append((str(path.relative_to(tmp_path)), path.read_text(encoding="utf-8", errors="replace")))

    # The attack reached the places secrets go: failed connections, a 401, rejected records.
    assert any("cannot" in m.lower() or "connect" in m.lower() for m in messages), messages
    assert any("401" in m for m in messages), messages
    assert len(letters) == 2 and all("cannot use token" in m for (m,) in letters), letters
    assert dead == 0 and any(path.name == "architecture.md" for path in files)
    # Both source databases were really dialled, each with its password (none answers on port 1).
    assert sum("port 1 failed: Connection refused" in m for m in messages) >= 1, messages
    assert not any("Could not parse" in m for m in messages), messages
    # The search finds a secret where it is: the .env holds all but the requirements' one.
    env_text = (project / ".env").read_text()
    assert sum(any(form in env_text for form in forms(secret)) for secret in SECRETS.values()) == len(SECRETS) - 1
    leaks = [(name, where) for name, secret in SECRETS.items() for where, text in texts
             for form in forms(secret) if form in text]
    scanned = sum(len(text) for _, text in texts)
    attack_report.record(Attack(
        attack="secrets", runs=len(outputs), leaked=len(leaks),
        notes=f"{len(SECRETS)} secrets (URL, ?password=, libpq keywords, .env token, requirements file) searched for"
              f" in {len(outputs)} command outputs, {len(texts) - len(outputs) - len(files)} pipeline.* rows and"
              f" {len(files)} generated files ({scanned:,} characters)",
        extra={"places": len(texts), "characters": scanned},
    ))
    assert leaks == [], leaks
