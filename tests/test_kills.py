"""SIGKILL at random moments (inside COPY, inside COMMIT, between batches) while the source keeps changing.

Small batches keep a run busy copying and committing, so random kill times
land in those windows. After the last kill a run completes, and what is read
back from the destination (each payload, parsed) is compared with the source
records themselves, not with a hash elt computed.
"""

from __future__ import annotations

import hashlib
import json
import os
import random

import pytest

from tests.fixtures.kills import KillCampaign
from tests.fixtures.projects import write_project

N = 3000
KILLS_PER_STRATEGY = 5  # four strategies: 20 kills per CI run

PROJECT = '''
import os
from elt import Pipeline, extractor

N = {n}
VERSION = int(os.environ["VERSION"])


def source():
    """Version V changes every third record; a changed record's cursor moves past every older value."""
    rows = []
    for i in range(N):
        v = max(VERSION - (VERSION - i) % 3, 0)  # the last version that changed record i
        rows.append({{"id": i, "v": v, "seq": i + v * N, "day": f"d{{i // 500}}", "note": f"r{{i}} — ü"}})
    return sorted(rows, key=lambda r: (r["seq"], r["id"]))


@extractor(name="items", batch_size=40, {settings})
def items(since):
    for record in source():
        if since is not None and record["seq"] < since:
            continue
        yield record

Pipeline("shop", streams=[items])
'''


def source(version: int) -> list[dict]:
    rows = []
    for i in range(N):
        v = max(version - (version - i) % 3, 0)
        rows.append({"id": i, "v": v, "seq": i + v * N, "day": f"d{i // 500}", "note": f"r{i} — ü"})
    return rows


def checksum(records: list[dict]) -> str:
    lines = sorted(json.dumps(r, sort_keys=True, ensure_ascii=False) for r in records)
    return hashlib.md5("\n".join(lines).encode()).hexdigest()


@pytest.mark.slow
@pytest.mark.parametrize(
    "settings, relation",
    [
        ('primary_key="id", cursor="seq", write_strategy="append_dedup"', "stg.shop_items"),
        ('primary_key="id", write_strategy="upsert"', "raw.shop_items"),
        ('primary_key="id", partition_by="day", write_strategy="delete_reload"', "raw.shop_items"),
        ('primary_key="id", write_strategy="replace"', "raw.shop_items"),
    ],
    ids=["append_dedup", "upsert", "delete_reload", "replace"],
)
def test_random_kills_while_the_source_changes_end_with_exactly_the_source(tmp_path, database_url, db, settings,
                                                                            relation):
    seed = int(os.environ.get("ELT_KILL_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    project = write_project(tmp_path / "p", PROJECT.format(n=N, settings=settings))
    campaign = KillCampaign(project, database_url, rng)
    campaign.kill(KILLS_PER_STRATEGY, env=lambda version: {"VERSION": str(version)})
    assert campaign.kills == KILLS_PER_STRATEGY, f"seed {seed}: only {campaign.kills} kills landed in {campaign.runs} runs"

    final = campaign.complete(env=lambda version: {"VERSION": str(version)})
    assert final.returncode == 0, f"seed {seed}: {final.stderr[-2000:]}"
    version = campaign.version
    rows = [r["_raw_payload"] for r in db.execute(f"SELECT _raw_payload FROM {relation}").fetchall()]
    expected = source(version)
    assert len(rows) == N, f"seed {seed}"
    assert checksum(rows) == checksum(expected), f"seed {seed}"
    log = db.execute("SELECT status, count(*) AS n FROM pipeline.execution_log GROUP BY status").fetchall()
    statuses = {r["status"]: r["n"] for r in log}
    assert "running" not in statuses, f"seed {seed}: {statuses}"  # every killed run was closed as abandoned
