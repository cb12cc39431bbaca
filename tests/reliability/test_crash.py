"""Attack 1, crash anywhere: SIGKILL real ``elt run`` processes at random moments while their source keeps changing.

Four pipelines, each a real project run by the real command in a subprocess:
REST to PostgreSQL (``upsert`` with a lookback and ties, ``append`` events),
database to PostgreSQL (``append_dedup`` with late rows inside the lookback,
``delete_reload`` by partition), files to PostgreSQL (``append``, a changed
file replacing its old version), and a ``replace`` swap feeding a table model
(the transform's swap). Between runs the source changes: updates, inserts,
records tied at one cursor value, late rows below the watermark but inside the
lookback. Batches are small and sources slow, so the random kill times land
inside COPY and COMMIT as well as between batches.

After the last kill the source changes once more and one run completes. The
destination is then compared with the source itself, per key: each payload
read back from ``_raw_payload`` against the source record (not against
``_record_hash``), and a checksum over all of them. While the swap pipeline is
being killed, a reader polls the swapped tables: each must always be whole (one
complete version), never missing or half-built.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from elt.testing import FakeApi
from tests.fixtures.comparison import Comparison, stored_rows
from tests.fixtures.kills import KillCampaign
from tests.fixtures.projects import write_project
from tests.reliability.conftest import Attack

ATTACK = "crash anywhere"


# --- the scenarios: a project, how its source changes, what the destination must hold -----------------


class Scenario:
    """One pipeline attacked by kills. Subclasses set the project and the source's changes."""

    name = ""
    project_source = ""

    def __init__(self, tmp: Path, database_url: str, source_url: str, rng: random.Random) -> None:
        self.tmp, self.database_url, self.source_url, self.rng = tmp, database_url, source_url, rng

    def start(self) -> None:
        """Set the source up (version 0)."""

    def stop(self) -> None:
        """Stop what ``start`` started."""

    def change(self, version: int) -> None:
        """Move the source to ``version``: updates, inserts, ties, late rows."""

    def env(self, version: int) -> dict[str, str]:
        return {}

    def write(self) -> Path:
        return write_project(self.tmp / self.name, self.project_source)

    def compare(self, db: Any) -> Comparison:
        raise NotImplementedError


# REST: an API paging by keyset on an integer cursor, served slowly.

API_PROJECT = '''
import os
from elt import Cursor, KeysetPaginator, Pipeline, RestExtractor

API = os.environ["API_URL"]


class Items(RestExtractor):
    name = "items"
    base_url = API
    path = "/items"
    records_path = "data"
    primary_key = "id"
    cursor = Cursor("seq", param="since", lookback=50)
    paginator = KeysetPaginator(page_size=25)
    write_strategy = "upsert"
    batch_size = 25
    backoff = 0.01


class Events(RestExtractor):
    name = "events"
    base_url = API
    path = "/events"
    records_path = "data"
    primary_key = "id"
    cursor = Cursor("seq", param="since")
    paginator = KeysetPaginator(page_size=25)
    write_strategy = "append"
    batch_size = 25
    backoff = 0.01


Pipeline("api", streams=[Items(), Events()], transforms=False)
'''


class ApiScenario(Scenario):
    name = "rest_upsert_append"
    project_source = API_PROJECT

    def start(self) -> None:
        self.lock = threading.Lock()
        self.seq = 0
        self.items: dict[int, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        for i in range(1, 601):
            self.items[i] = {"id": i, "name": f"item {i} — ü", "version": 0, "seq": self.tick() if i % 3 else self.seq}
        for i in range(1, 301):
            self.events.append({"id": i, "kind": "created", "seq": i})
        self.api = FakeApi().start()
        self.api.route("/items", lambda request: self.page(request, list(self.items.values())))
        self.api.route("/events", lambda request: self.page(request, self.events))

    def stop(self) -> None:
        self.api.stop()

    def tick(self) -> int:
        self.seq += 1
        return self.seq

    def page(self, request: Any, records: list[dict[str, Any]]) -> dict[str, Any]:
        time.sleep(0.01)  # a slow source: a run spends its time in many small batches
        with self.lock:
            rows = sorted(records, key=lambda r: (r["seq"], r["id"]))
            since = request.params.get("since")
            if since is not None:
                rows = [r for r in rows if r["seq"] >= int(since)]
            return {"data": [dict(r) for r in rows[: int(request.params.get("limit", 25))]]}

    def update(self, i: int, seq: int) -> None:
        record = self.items[i]
        self.items[i] = {**record, "version": record["version"] + 1, "seq": seq}

    def change(self, version: int) -> None:
        with self.lock:
            keys = list(self.items)
            for i in self.rng.sample(keys, 20):
                self.update(i, self.tick())
            tie = self.tick()
            for i in self.rng.sample(keys, 30):  # 30 records at one cursor value: more than a page
                self.update(i, tie)
            for _ in range(20):
                i = len(self.items) + 1
                self.items[i] = {"id": i, "name": f"item {i}", "version": 0, "seq": self.tick()}
            # Late rows: committed after later ones, their cursor below the watermark but inside the lookback.
            late = self.seq - 20
            for _ in range(3):
                i = len(self.items) + 1
                self.items[i] = {"id": i, "name": f"late item {i}", "version": 0, "seq": late}
            for i in self.rng.sample([i for i in keys if self.items[i]["seq"] < late], 3):  # a record's cursor never goes back
                self.update(i, late)
            start = len(self.events)
            for n in range(40):
                self.events.append({"id": start + n + 1, "kind": "changed", "seq": start + n + 1})

    def env(self, version: int) -> dict[str, str]:
        return {"API_URL": self.api.url}

    def compare(self, db: Any) -> Comparison:
        result = Comparison()
        with self.lock:
            items = {str(i): dict(r) for i, r in self.items.items()}
            events = {str(r["id"]): dict(r) for r in self.events}
        result.add(items, stored_rows(db, "raw.api_items"))
        result.add(events, stored_rows(db, "raw.api_events"))
        return result


# A database: a table with a timestamp cursor, read incrementally and by partition.

DB_PROJECT = '''
import datetime as dt
import os
from elt import Cursor, Pipeline, SqlExtractor

# A slow source: half a millisecond per row read, so a run spends its time in many small batches.
SLOW = "SELECT o.* FROM orders o CROSS JOIN LATERAL (SELECT pg_sleep(0.0005)) AS slow"

class Orders(SqlExtractor):
    name = "orders"
    url = os.environ["SOURCE_URL"]
    query = SLOW
    primary_key = "id"
    cursor = Cursor("updated_at", lookback=dt.timedelta(minutes=10))
    write_strategy = "append_dedup"
    page_size = 40
    batch_size = 40


class Daily(SqlExtractor):
    name = "daily"
    url = os.environ["SOURCE_URL"]
    query = SLOW
    primary_key = "id"
    partition_by = "day"
    write_strategy = "delete_reload"
    page_size = 100
    batch_size = 40


Pipeline("db", streams=[Orders(), Daily()], transforms=False)
'''

T0 = dt.datetime(2026, 4, 1, 12, 0, tzinfo=dt.UTC)


class DbScenario(Scenario):
    name = "database_append_dedup_delete_reload"
    project_source = DB_PROJECT

    def start(self) -> None:
        self.clock = T0
        self.rows = 0
        with psycopg.connect(self.source_url, autocommit=True) as conn:
            conn.execute("CREATE TABLE orders (id int PRIMARY KEY, day text NOT NULL, amount int NOT NULL,"
                         " note text, updated_at timestamptz NOT NULL)")
            self.insert(conn, 800)

    def tick(self) -> dt.datetime:
        self.clock += dt.timedelta(seconds=1)
        return self.clock

    def insert(self, conn: psycopg.Connection[Any], count: int, at: dt.datetime | None = None) -> None:
        rows = []
        for _ in range(count):
            self.rows += 1
            rows.append((self.rows, f"d{self.rows % 7}", self.rows * 3, f"order {self.rows} — ü", at or self.tick()))
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO orders VALUES (%s, %s, %s, %s, %s)", rows)

    def change(self, version: int) -> None:
        with psycopg.connect(self.source_url, autocommit=True) as conn:
            ids = list(range(1, self.rows + 1))
            for i in self.rng.sample(ids, 20):
                conn.execute("UPDATE orders SET amount = amount + 1, updated_at = %s WHERE id = %s", (self.tick(), i))
            tie = self.tick()
            conn.execute("UPDATE orders SET note = note || '+', updated_at = %s WHERE id = ANY(%s)",
                         (tie, self.rng.sample(ids, 30)))  # 30 rows at one timestamp: ties across pages
            self.insert(conn, 20)
            late = self.clock - dt.timedelta(minutes=5)  # below the watermark, inside the 10-minute lookback
            self.insert(conn, 3, at=late)
            # A late update: its transaction took the time before rows changed after it committed. A row's
            # own cursor never goes back (its previous version's transaction ended before this one began).
            older = [r[0] for r in conn.execute("SELECT id FROM orders WHERE updated_at < %s ORDER BY id", (late,))]
            conn.execute("UPDATE orders SET amount = amount - 1, updated_at = %s WHERE id = ANY(%s)",
                         (late, self.rng.sample(older, 3)))

    def env(self, version: int) -> dict[str, str]:
        return {"SOURCE_URL": self.source_url}

    def compare(self, db: Any) -> Comparison:
        with psycopg.connect(self.source_url, row_factory=dict_row) as conn:
            conn.execute("SET TIME ZONE 'UTC'")
            source = conn.execute("SELECT * FROM orders").fetchall()
        # Timestamps with zone are stored in UTC, spelt with a Z.
        expected = {str(r["id"]): {**r, "updated_at": r["updated_at"].isoformat().replace("+00:00", "Z")}
                    for r in source}
        result = Comparison()
        result.add(expected, stored_rows(db, "stg.db_orders"))
        result.add(expected, stored_rows(db, "raw.db_daily"))
        return result


# Files: a drop folder that gains files, and a file that changes (its new version replaces the old).

FILES_PROJECT = '''
import os
from elt import FileExtractor, Pipeline


class Drops(FileExtractor):
    name = "drops"
    folder = os.environ["DROP_FOLDER"]
    pattern = "*.csv"
    primary_key = "id"
    write_strategy = "append"
    batch_size = 40


Pipeline("files", streams=[Drops()], transforms=False)
'''


class FilesScenario(Scenario):
    name = "files_append"
    project_source = FILES_PROJECT

    def start(self) -> None:
        self.folder = self.tmp / "drop"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.files: dict[str, list[dict[str, str]]] = {}
        for n in range(3):
            self.drop(f"f{n}", 300, 0)

    def drop(self, name: str, count: int, version: int) -> None:
        rows = [{"id": f"{name}-{i}", "v": str(version), "note": f"line {i}, ü"} for i in range(count)]
        lines = ["id,v,note"] + [f'{r["id"]},{r["v"]},"{r["note"]}"' for r in rows]
        part = self.folder / f".{name}.part"
        part.write_text("\n".join(lines) + "\n", encoding="utf-8")
        part.rename(self.folder / f"{name}.csv")  # whole files only: a run never sees one half-written
        self.files[name] = rows

    def change(self, version: int) -> None:
        self.drop(f"v{version}", 120, version)
        if version % 2 == 0:  # a changed file: its new version (fewer rows) replaces the old
            name = self.rng.choice(sorted(self.files))
            self.drop(name, self.rng.randrange(50, 300), version)

    def env(self, version: int) -> dict[str, str]:
        return {"DROP_FOLDER": str(self.folder)}

    def compare(self, db: Any) -> Comparison:
        expected = {r["id"]: r for rows in self.files.values() for r in rows}
        result = Comparison()
        result.add(expected, stored_rows(db, "raw.files_drops", key="_raw_payload->>'id'",
                                         where="WHERE _deleted_at IS NULL"))
        return result


# A `replace` swap feeding a table model: both tables swapped, each must always be whole.

SWAP_PROJECT = '''
import json
import os
import time
from elt import Pipeline, extractor


@extractor(name="ref", primary_key="id", write_strategy="replace", batch_size=100)
def ref(since):
    records = json.loads(open(os.environ["SOURCE_FILE"], encoding="utf-8").read())
    for start in range(0, len(records), 100):
        time.sleep(0.02)  # a slow source: the shadow fills batch by batch
        yield from records[start:start + 100]


Pipeline("swap", streams=[ref])
'''

MODEL = """-- materialized: table
SELECT (_raw_payload->>'id')::int AS id, (_raw_payload->>'v')::int AS v, _raw_payload AS payload
FROM raw.swap_ref
"""


class SwapScenario(Scenario):
    name = "replace_and_table_model_swap"
    project_source = SWAP_PROJECT

    def start(self) -> None:
        self.file = self.tmp / "source.json"
        self.sizes: dict[int, int] = {}
        self.change(0)
        self.observations = 0
        self.broken: list[str] = []
        self._watching = threading.Event()

    def write(self) -> Path:
        project = super().write()
        (project / "sql" / "mart").mkdir(parents=True, exist_ok=True)
        (project / "sql" / "mart" / "ref_copy.sql").write_text(MODEL, encoding="utf-8")
        return project

    def records(self, version: int) -> list[dict[str, Any]]:
        return [{"id": i, "v": version, "name": f"ref {i} — ü"} for i in range(self.sizes[version])]

    def change(self, version: int) -> None:
        self.version = version
        self.sizes[version] = 1200 + 40 * (version % 5)
        self.file.write_text(json.dumps(self.records(version)), encoding="utf-8")

    def env(self, version: int) -> dict[str, str]:
        return {"SOURCE_FILE": str(self.file)}

    def watch(self) -> threading.Thread:
        """Poll both swapped tables until ``stop_watching``: each must hold one whole version, always."""
        def poll() -> None:
            with psycopg.connect(self.database_url, autocommit=True) as conn:
                while not self._watching.is_set():
                    for relation, v in (("raw.swap_ref", "(_raw_payload->>'v')::int"), ("mart.ref_copy", "v")):
                        try:
                            n, low, high = conn.execute(f"SELECT count(*), min({v}), max({v}) FROM {relation}").fetchone()
                        except psycopg.errors.UndefinedTable:
                            self.broken.append(f"{relation} missing")
                            continue
                        except psycopg.Error as exc:  # a reader must never meet an error during a swap either
                            self.broken.append(f"{relation}: {type(exc).__name__}: {exc}")
                            continue
                        self.observations += 1
                        if low != high or low not in self.sizes or n != self.sizes[low]:
                            self.broken.append(f"{relation}: {n} rows of versions {low}..{high}")
                    time.sleep(0.01)
        thread = threading.Thread(target=poll, daemon=True)
        thread.start()
        return thread

    def stop_watching(self, thread: threading.Thread) -> None:
        self._watching.set()
        thread.join(timeout=30)

    def compare(self, db: Any) -> Comparison:
        expected = {str(r["id"]): r for r in self.records(self.version)}
        result = Comparison()
        result.add(expected, stored_rows(db, "raw.swap_ref"))
        model = db.execute("SELECT id, payload AS _raw_payload FROM mart.ref_copy").fetchall()
        result.add(expected, [(str(r["id"]), r["_raw_payload"]) for r in model])
        return result


SCENARIOS = [ApiScenario, DbScenario, FilesScenario, SwapScenario]


def kills_for(index: int, total: int) -> int:
    """This scenario's share of the attack's kills (the first ones take the remainder)."""
    return total // len(SCENARIOS) + (1 if index < total % len(SCENARIOS) else 0)


@pytest.mark.parametrize("index", range(len(SCENARIOS)), ids=[s.name for s in SCENARIOS])
def test_kills_at_random_moments_end_with_exactly_the_source(index, tmp_path, database_url, source_url, db,
                                                              reliability_size, attack_report):
    seed = int(os.environ.get("ELT_KILL_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    scenario = SCENARIOS[index](tmp_path, database_url, source_url, rng)
    wanted = kills_for(index, reliability_size.kills)
    scenario.start()
    try:
        project = scenario.write()
        campaign = KillCampaign(project, database_url, rng)
        watcher = None
        if isinstance(scenario, SwapScenario):
            first = campaign.complete(env=scenario.env)  # the tables exist from here on; then they must stay whole
            assert first.returncode == 0, first.stderr[-2000:]
            watcher = scenario.watch()
        try:
            campaign.kill(wanted, change=scenario.change, env=scenario.env)
            final = campaign.complete(change=scenario.change, env=scenario.env)
        finally:
            campaign.close()
            if watcher is not None:
                scenario.stop_watching(watcher)
        comparison = scenario.compare(db)
    finally:
        scenario.stop()
    statuses = {r["status"]: r["n"] for r in db.execute(
        "SELECT status, count(*) AS n FROM pipeline.execution_log GROUP BY status").fetchall()}
    # Where the kills landed: a killed run that had opened its log row is closed as abandoned by the next
    # one; one that had committed a batch has figures in it (the rest died while starting).
    landed = db.execute(
        "SELECT count(*) AS in_run, count(*) FILTER (WHERE rows_extracted > 0) AS after_a_batch"
        " FROM pipeline.execution_log WHERE error_message LIKE 'abandoned%'").fetchone()
    broken = getattr(scenario, "broken", [])
    extra: dict[str, Any] = {
        "scenario": scenario.name, "seed": seed, "versions": campaign.version, "statuses": statuses,
        "kills_while_starting": sum(1 for t in campaign.kill_times if t < 0),
        "kill_seconds_into_work": [min((t for t in campaign.kill_times if t >= 0), default=None),
                                   max((t for t in campaign.kill_times if t >= 0), default=None)],
        "kills_landed_while": dict(campaign.landed), "kills_in_a_run": landed["in_run"],
        "kills_after_a_batch": landed["after_a_batch"],
        "stale": len(comparison.stale), "unexpected": comparison.unexpected,
        "checksums_equal": comparison.checksums_equal,
    }
    if isinstance(scenario, SwapScenario):
        extra.update(swap_observations=scenario.observations, swap_broken=len(broken))
    attack_report.record(Attack(
        attack=ATTACK, runs=campaign.runs, kills=campaign.kills, compared=comparison.compared,
        lost=comparison.lost, duplicated=comparison.duplicated + comparison.unexpected,
        notes=f"{scenario.name}: source changed {campaign.version} times", extra=extra,
    ))

    assert campaign.kills == wanted, f"seed {seed}: only {campaign.kills} kills landed in {campaign.runs} runs"
    assert final.returncode == 0, f"seed {seed}: {final.stderr[-3000:]}"
    assert comparison.lost == 0 and not comparison.stale, f"seed {seed}: {comparison!s}"
    assert comparison.duplicated == 0 and comparison.unexpected == 0, f"seed {seed}: {comparison!s}"
    assert comparison.checksums_equal, f"seed {seed}"
    assert "running" not in statuses, f"seed {seed}: {statuses}"  # every killed run was closed as abandoned
    assert not broken, f"seed {seed}: a swapped table was seen broken: {broken[:5]}"
