"""The reliability suite's shared parts: its size, and the record of every attack's figures.

Every test here is marked ``reliability``. The default size is CI's (20 kills,
1,000 hypothesis examples); ``--reliability-full`` runs the full size (100
kills, more examples). Each attack calls ``attack_report.record(...)`` with
figures counted during the run; ``scripts/reliability.py`` runs the suite and
writes RELIABILITY.md from those records, so every published figure comes from
an actual run.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest

RESULTS_ENV = "ELT_RELIABILITY_RESULTS"


@dataclass(frozen=True)
class Size:
    """How hard the suite attacks: CI's reduced size or the full one."""

    full: bool
    kills: int
    hypothesis_examples: int
    fault_requests: int


CI_SIZE = Size(full=False, kills=20, hypothesis_examples=1000, fault_requests=200)
FULL_SIZE = Size(full=True, kills=100, hypothesis_examples=10000, fault_requests=2000)


@dataclass
class Attack:
    """One attack's figures. ``lost``, ``duplicated`` and ``leaked`` must be zero."""

    attack: str
    runs: int = 0
    kills: int = 0
    faults: int = 0
    compared: int = 0
    lost: int = 0
    duplicated: int = 0
    leaked: int = 0
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class AttackReport:
    """Appends each attack's figures, one JSON line each, to the results file (when one is set)."""

    def __init__(self, path: Path | None, size: Size) -> None:
        self.path = path
        self.size = size

    def record(self, attack: Attack) -> None:
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        line = {**asdict(attack), "size": "full" if self.size.full else "ci", "at": at}
        if self.path is not None:
            with self.path.open("a") as f:
                f.write(json.dumps(line) + "\n")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.reliability)


@pytest.fixture(scope="session")
def reliability_size(request: pytest.FixtureRequest) -> Size:
    return FULL_SIZE if request.config.getoption("--reliability-full") else CI_SIZE


@pytest.fixture(scope="session")
def attack_report(reliability_size: Size) -> Iterator[AttackReport]:
    path = os.environ.get(RESULTS_ENV)
    yield AttackReport(Path(path) if path else None, reliability_size)
