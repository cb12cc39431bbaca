"""Deployment files: a systemd unit for `elt serve`, crontab lines, and pg_cron statements for SQL-only work."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from elt.errors import ConfigError
from elt.pipeline import Pipeline
from elt.schedules import Schedule, parse_every


def systemd_unit(project_dir: Path, user: str | None = None) -> str:
    """A unit that keeps `elt serve` running, secrets read from the project's .env."""
    python = shlex.quote(sys.executable)
    user_line = f"User={user}\n" if user else ""
    return f"""\
# elt scheduler for {project_dir}
# Install: sudo cp elt-{project_dir.name}.service /etc/systemd/system/ && sudo systemctl daemon-reload
#          sudo systemctl enable --now elt-{project_dir.name}
# Logs:    journalctl -u elt-{project_dir.name} -f
[Unit]
Description=elt pipelines of {project_dir.name}
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
{user_line}WorkingDirectory={project_dir}
# Secrets (database URL, API keys) live here, readable by the service user only (chmod 600).
EnvironmentFile=-{project_dir}/.env
Environment=ELT_LOG_FORMAT=json
ExecStart={python} -m elt --project {project_dir} serve
Restart=on-failure
RestartSec=10
# SIGTERM: running pipelines stop after their batch in flight; give them time.
KillSignal=SIGTERM
TimeoutStopSec=90

[Install]
WantedBy=multi-user.target
"""


def _cron_expression(pipeline: Pipeline) -> str | None:
    if pipeline.schedule:
        return pipeline.schedule
    if pipeline.every:
        seconds = int(parse_every(pipeline.every).total_seconds())
        if seconds == 86400:
            return "0 0 * * *"
        if seconds % 3600 == 0 and 24 % (seconds // 3600) == 0:
            return f"0 */{seconds // 3600} * * *"
        if seconds % 60 == 0 and 60 % (seconds // 60) == 0:
            return f"*/{seconds // 60} * * * *"
        raise ConfigError(f"pipeline {pipeline.name!r}: every={pipeline.every!r} has no exact cron form; use schedule=")
    return None


def crontab(project_dir: Path, pipelines: dict[str, Pipeline]) -> str:
    """Crontab lines doing what `elt serve` does, for hosts without a long-running process."""
    run = f"cd {shlex.quote(str(project_dir))} && {shlex.quote(sys.executable)} -m elt"
    log = f">> {shlex.quote(str(project_dir / 'elt-cron.log'))} 2>&1"
    lines = [f"# elt pipelines of {project_dir} (install with: crontab -e, and paste)",
             "# Overlaps are safe: a run that finds the previous one still going is logged as skipped."]
    for pipeline in pipelines.values():
        expression = _cron_expression(pipeline)
        if expression is None:
            continue
        chain = [pipeline.name] + [p.name for p in pipelines.values() if p.after and list(p.after) == [pipeline.name]]
        command = " && ".join(f"{run} run {name} --trigger cron" for name in chain)
        lines.append(f"CRON_TZ={pipeline.tz}")
        lines.append(f"{expression} {command} {log}")
    for pipeline in pipelines.values():
        if pipeline.reconcile:
            lines += [f"CRON_TZ={pipeline.tz}", f"{pipeline.reconcile} {run} reconcile {pipeline.name} {log}"]
    waiting = [p.name for p in pipelines.values() if p.after and len(p.after) > 1]
    if waiting:
        lines.append(f"# {', '.join(waiting)} wait for several pipelines: cron cannot express that; use `elt serve`.")
    lines += ["CRON_TZ=UTC", "# Health: exits 1 (and cron mails the output) when something is wrong.",
              f"*/15 * * * * {run} check > /dev/null || {run} check"]
    return "\n".join(lines) + "\n"


def pg_cron(project_dir: Path, pipelines: dict[str, Pipeline]) -> str:
    """``cron.schedule(...)`` statements for pipelines that only build models (no streams), for Supabase."""
    from elt.transforms import project_graph

    graph = project_graph(project_dir, pipelines.values())
    out = ["-- pg_cron runs in the database itself (Supabase: Database > Extensions > pg_cron).",
           "-- Its times are UTC unless cron.timezone is set. Tables are refilled in one transaction;",
           "-- the model tests and dependent-view handling of `elt transform` do not run here."]
    found = False
    for pipeline in pipelines.values():
        expression = _cron_expression(pipeline)
        if pipeline.streams or expression is None or not pipeline.transforms:
            continue
        found = True
        selected = graph.select(list(pipeline.transforms) if pipeline.transforms is not True else [])
        statements = []
        for model in graph.order(selected):
            kind = model.config.materialized
            if kind == "view":
                continue  # a view is always current
            if kind == "materialized_view":
                statements.append(f"REFRESH MATERIALIZED VIEW {model.relation};")
            elif kind == "incremental":
                statements.append(f"-- {model.relation} is incremental: run `elt transform` for it")
            else:
                statements.append(f"TRUNCATE {model.relation}; INSERT INTO {model.relation} {model.sql};")
        schedule = Schedule.of(pipeline)
        body = "\n    ".join(statements)
        out.append(f"\n-- {pipeline.name}: {schedule.text if schedule else ''}; tables and materialised views in build order")
        out.append(f"SELECT cron.schedule('elt-{pipeline.name}', '{expression}', $elt$\n    {body}\n$elt$);")
    if not found:
        out.append("-- No scheduled pipeline here is SQL-only (streams=[] with transforms): nothing for pg_cron.")
    return "\n".join(out) + "\n"
