"""Go-live checks that need no database: what the project's code says about itself.

A stream still reading sample data loads and reports ``success`` like a real
one; a production project must not. ``ELT_ENV=production`` (in the environment
or ``.env``) declares a project production.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from elt.health import Problem
from elt.pipeline import Pipeline


def is_production() -> bool:
    """Whether the project declares itself production (``ELT_ENV=production``, ``.env`` included)."""
    return os.environ.get("ELT_ENV", "").strip().lower() in ("production", "prod")


def on_sample_data(pipelines: Iterable[Pipeline]) -> list[tuple[str, str, str]]:
    """``(pipeline, stream, what it reads and how to go live)`` for every stream on sample data."""
    return [(p.name, s.name, s.sample_data) for p in pipelines for s in p.streams if s.sample_data]


def sample_data_problems(pipelines: Iterable[Pipeline]) -> list[Problem]:
    """In production, each stream still reading sample data is a problem."""
    if not is_production():
        return []
    return [Problem("sample_data", f"{pipeline}.{stream}", f"production (ELT_ENV) but reads {what}")
            for pipeline, stream, what in on_sample_data(pipelines)]
