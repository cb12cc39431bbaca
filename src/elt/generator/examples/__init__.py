"""Example requirements files, one per pattern, shipped with elt (`elt init --example PATTERN`)."""

from __future__ import annotations

from pathlib import Path

from elt.errors import ConfigError

FOLDER = Path(__file__).resolve().parent
#: The pattern each example leads to (the plan's choice), by file name.
PATTERNS = {"api_sync": "API-to-DB sync", "simple_elt": "simple ELT", "event_driven": "event-driven",
            "file_processing": "file processing", "cdc": "CDC", "multi_source": "multi-source ELT", "hybrid": "hybrid"}


def example(name: str) -> str:
    """The text of the example requirements file for pattern ``name``."""
    if name not in PATTERNS:
        choices = ", ".join(f"{n} ({p})" for n, p in PATTERNS.items())
        raise ConfigError(f"no example {name!r}; the examples are: {choices}")
    return (FOLDER / f"{name}.yaml").read_text(encoding="utf-8")
