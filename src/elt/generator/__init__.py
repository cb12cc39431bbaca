"""The generator: from a requirements file to a runnable project and its architecture document."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from elt.generator.architecture import live_columns_from, render
from elt.generator.decisions import Plan, plan
from elt.generator.requirements import Requirements, load, parse
from elt.generator.scaffold import write_project

__all__ = ["Generated", "Plan", "Requirements", "docs", "generate", "load", "parse", "plan"]


@dataclass
class Generated:
    directory: Path
    plan: Plan
    samples: dict[str, dict[str, int]]


def generate(requirements_text: str, target: Path, where: str = "requirements") -> Generated:
    """Write the project for ``requirements_text`` (YAML) into ``target``, with its document and deploy files."""
    import yaml

    from elt.deploy import crontab, systemd_unit, write_paths
    from elt.errors import ConfigError
    from elt.pipeline import load_project

    try:
        data = yaml.safe_load(requirements_text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where} is not valid YAML: {exc}") from None
    the_plan = plan(parse(data, where))
    target = target.expanduser().resolve()
    counts = write_project(the_plan, target, requirements_text)
    # The document and deployment files are drawn from the project as written: importing it checks it, too.
    project_dir, pipelines = load_project(target)
    (target / "docs").mkdir(exist_ok=True)
    (target / "docs" / "architecture.md").write_text(render(project_dir, pipelines), encoding="utf-8")
    (target / "deploy").mkdir(exist_ok=True)
    # A dedicated account named elt, never root; `elt deploy systemd --user NAME` writes it for another.
    unit = systemd_unit(target, "elt", write_paths=write_paths(pipelines))
    (target / "deploy" / f"elt-{target.name}.service").write_text(unit, encoding="utf-8")
    (target / "deploy" / "crontab").write_text(crontab(target, pipelines), encoding="utf-8")
    return Generated(target, the_plan, counts)


def docs(project_dir: Path, pipelines: dict[str, Any], store: Any | None = None, *, write: bool = True) -> str:
    """Re-draw ``docs/architecture.md``; returns the unified diff against the previous text ("" when unchanged)."""
    text = render(project_dir, pipelines, live_columns_from(store) if store is not None else None)
    path = project_dir / "docs" / "architecture.md"
    old = path.read_text(encoding="utf-8") if path.exists() else ""
    diff = "".join(difflib.unified_diff(old.splitlines(keepends=True), text.splitlines(keepends=True),
                                        "docs/architecture.md (before)", "docs/architecture.md (now)"))
    if write and diff:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return diff
