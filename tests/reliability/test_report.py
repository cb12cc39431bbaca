"""scripts/reliability.py's report: a subset run says so and never overwrites the published RELIABILITY.md."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def report():
    spec = importlib.util.spec_from_file_location("reliability_script", ROOT / "scripts" / "reliability.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RECORD = {"attack": "concurrency", "runs": 7, "compared": 600, "lost": 0, "duplicated": 0, "leaked": 0}


def test_a_subset_run_writes_beside_the_published_report_and_says_it_is_a_subset(report):
    assert report.default_output([]) == ROOT / "RELIABILITY.md"
    assert report.default_output(["-k", "concurrency"]) == ROOT / "RELIABILITY-subset.md"
    text = report.render([RECORD], full=False, code=0, stdout="3 passed, 11 deselected in 52s\n", seconds=52,
                         started="2026-11-30 21:00", box={"cores": "2"}, pytest_args=["-k", "concurrency"])
    assert "`python scripts/reliability.py -- -k concurrency`" in text
    assert "**This is a subset run**" in text


def test_the_whole_suite_report_names_no_subset(report):
    text = report.render([RECORD], full=True, code=0, stdout="14 passed in 500s\n", seconds=500,
                         started="2026-11-30 21:00", box={"cores": "2"})
    assert "`python scripts/reliability.py --full`" in text and "subset" not in text
    assert "| concurrency | 1 | 7 |" in text
