"""Pipelines and the registry ``elt`` finds them in.

A project is a folder with a ``pipelines.py`` module that creates
:class:`Pipeline` objects; creating one registers it by name. ``elt`` imports
that module (or the file or folder given with ``--project``) and runs what
registered.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.util
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from elt.config import load_dotenv_once
from elt.destinations import Destination, resolve
from elt.errors import ConfigError, ProjectNotFound
from elt.extractors.base import Extractor

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_registry: dict[str, Pipeline] = {}


@dataclass
class Pipeline:
    """A named set of streams loaded into one destination, on an optional schedule."""

    name: str
    destination: Destination | str | None = None
    streams: Sequence[Extractor] = ()
    schedule: str | None = None
    timeout: dt.timedelta | float = dt.timedelta(hours=1)
    tz: str = "UTC"
    every: str | None = None
    after: Sequence[str] = ()
    description: str = ""
    #: Models built after the loads: ``True`` (default) every model reading this pipeline's
    #: tables and their dependents; a list of selectors (``"mart.revenue+"``); ``False`` none.
    transforms: bool | Sequence[str] = True
    #: Cron expression (in ``tz``) for `elt reconcile` of its ``detect_deletes`` streams under `elt serve`.
    reconcile: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not _NAME.match(self.name or ""):
            raise ConfigError(
                f"pipeline name {self.name!r} must start with a letter or _ and hold only letters, digits and _"
            )
        self.destination = resolve(self.destination)
        self.streams = list(self.streams)
        seen: set[str] = set()
        for stream in self.streams:
            if not isinstance(stream, Extractor):
                raise ConfigError(
                    f"pipeline {self.name!r}: {stream!r} is not an extractor; pass Extractor instances"
                    " (or functions decorated with @extractor)"
                )
            if stream.name in seen:
                raise ConfigError(f"pipeline {self.name!r}: two streams are named {stream.name!r}")
            seen.add(stream.name)
        if isinstance(self.timeout, (int, float)):
            self.timeout = dt.timedelta(seconds=float(self.timeout))
        if isinstance(self.after, str):
            self.after = [self.after]
        from elt.schedules import Schedule

        Schedule.of(self)  # a wrong cron expression or time zone fails at import, not at 6 am
        Schedule.reconcile_of(self)
        register(self)

    def stream(self, name: str) -> Extractor:
        for stream in self.streams:
            if stream.name == name:
                return stream
        names = ", ".join(s.name for s in self.streams) or "none"
        raise ConfigError(f"pipeline {self.name!r} has no stream {name!r} (streams: {names})")



def register(pipeline: Pipeline) -> None:
    """Add ``pipeline`` to the registry; refuse a stream whose raw table another stream already loads.

    Two streams writing one raw table would mix their records, strategies and
    watermarks, so the second declaration fails, naming both.
    """
    owners: dict[str, str] = {}
    for other in _registry.values():
        if other.name == pipeline.name:
            continue  # re-importing a project (tests, `elt` reloading) replaces, not duplicates
        for stream in other.streams:
            owners[stream.table_name(other.name)] = f"{other.name}.{stream.name}"
    for stream in pipeline.streams:
        table = stream.table_name(pipeline.name)
        here = f"{pipeline.name}.{stream.name}"
        if table in owners:
            raise ConfigError(
                f"streams {owners[table]} and {here} would both load raw.{table}; give one of them another"
                " name or source (source = '...' sets the table's prefix)")
        owners[table] = here
    _registry[pipeline.name] = pipeline


def registered() -> dict[str, Pipeline]:
    return dict(_registry)


#: Other registries filled by importing a project (alerts, Python transforms) clear themselves
#: through these hooks, so this declaration module imports nothing that runs pipelines.
_clear_hooks: list[Callable[[], None]] = []


def on_clear(hook: Callable[[], None]) -> None:
    """Call ``hook`` whenever the registry is cleared (before a project is imported again)."""
    _clear_hooks.append(hook)


def clear_registry() -> None:
    _registry.clear()
    for hook in _clear_hooks:
        hook()


def load_project(project: Path | str | None = None) -> tuple[Path, dict[str, Pipeline]]:
    """Import the project's pipelines module; return the project folder and its pipelines."""
    path = Path(project or ".").expanduser().resolve()
    module_path = path if path.suffix == ".py" else path / "pipelines.py"
    if not module_path.is_file():
        raise ProjectNotFound(
            f"no pipelines module at {module_path}: run elt in the project folder (the one holding pipelines.py),"
            " pass --project PATH, or create one with `elt demo`"
        )
    project_dir = module_path.parent
    # Before the import: a project reads its settings (source URLs, folders, alert
    # hooks) at import time, and they may live in .env only.
    load_dotenv_once(project_dir)
    clear_registry()
    if str(project_dir) not in sys.path:
        sys.path.insert(0, str(project_dir))
    # A stable name (not hash(), which Python salts per process): Transform classes defined here keep
    # their identity across runs, so their models are not rebuilt every run.
    module_name = f"_elt_project_{hashlib.md5(str(module_path).encode()).hexdigest()[:12]}"
    spec = importlib.util.spec_from_file_location(module_name, module_path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"importing {module_path} failed: {type(exc).__name__}: {exc}") from exc
    pipelines = registered()
    from elt.webhooks.source import registered_webhooks

    if not pipelines and not registered_webhooks():
        raise ConfigError(f"{module_path} defines no Pipeline(...) or WebhookSource(...); create at least one")
    return project_dir, pipelines


def select(pipelines: dict[str, Pipeline], names: Iterable[str]) -> list[Pipeline]:
    names = list(names)
    if not names:
        return list(pipelines.values())
    unknown = [n for n in names if n not in pipelines]
    if unknown:
        raise ConfigError(f"unknown pipeline(s) {', '.join(unknown)}; this project has {', '.join(pipelines)}")
    return [pipelines[n] for n in names]
