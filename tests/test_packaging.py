"""The wheel a plain `pip install .` builds carries elt's SQL and the demo data."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_wheel_ships_the_sql_migrations_and_demo_data(tmp_path):
    pytest.importorskip("hatchling", reason="hatchling (in the test extra) builds the wheel offline")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = tmp_path.glob("elt-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for migration in (ROOT / "sql" / "postgres" / "migrations").glob("*.sql"):
        assert f"elt/sql/postgres/migrations/{migration.name}" in names
    assert "elt/demo/data/orders.ndjson.gz" in names
    for example in (ROOT / "src" / "elt" / "generator" / "examples").glob("*.yaml"):
        assert f"elt/generator/examples/{example.name}" in names
    assert any(n.endswith("entry_points.txt") for n in names)
