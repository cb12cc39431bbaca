"""Deployment files: a systemd unit for `elt serve`, crontab lines, and pg_cron statements for SQL-only work."""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Iterable
from pathlib import Path

from elt.errors import ConfigError
from elt.pipeline import Pipeline
from elt.schedules import Schedule, parse_every

#: A POSIX account name (what useradd accepts): no spaces, no shell metacharacters, no line breaks.
_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}\$?$")


def check_user(user: str | None, *, allow_root: bool = False) -> str:
    """The service account, validated: required, a valid name, and not root unless ``allow_root``."""
    if not user:
        raise ConfigError("give the account the service runs as: --user NAME (a non-root user that can read the"
                          " project and its .env; create one with `sudo useradd --system --home-dir PROJECT elt`)")
    if not _USER.match(user):
        raise ConfigError(f"--user {user!r} is not a valid user name: lower-case letters, digits, _ and -,"
                          " starting with a letter or _ (at most 32 characters)")
    if user == "root" and not allow_root:
        raise ConfigError("--user root: a pipeline service should not run as root (it reads remote data and runs"
                          " your code); create a service account, or pass --allow-root if you really mean it")
    return user


def systemd_unit(project_dir: Path, user: str | None, *, allow_root: bool = False,
                 write_paths: Iterable[Path] = ()) -> str:
    """A hardened unit that keeps `elt serve` running as ``user``, settings read from the project's .env.

    ``write_paths`` are folders outside the project that the service writes (drop folders whose
    processed files it moves); everything else but the project is read-only to it.
    """
    user = check_user(user, allow_root=allow_root)
    python = shlex.quote(sys.executable)
    writable = [project_dir, *sorted({Path(p) for p in write_paths if not Path(p).is_relative_to(project_dir)})]
    if user == "root":  # the embedded database of a root service lives here (see elt.embedded)
        writable.append(Path("/var/lib/elt"))
    paths = " ".join(_unit_path(p) for p in writable)
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
User={user}
WorkingDirectory={project_dir}
# Settings and secrets (database URL, source URLs, API keys), readable by {user} only (chmod 600).
# No "-" before the path: a missing .env stops the service instead of running it on sample data.
EnvironmentFile={project_dir}/.env
Environment=ELT_LOG_FORMAT=json
ExecStart={python} -m elt --project {project_dir} serve
Restart=on-failure
RestartSec=10
# SIGTERM: running pipelines stop after their batch in flight; give them time.
KillSignal=SIGTERM
TimeoutStopSec=90
# Hardening: no privilege gain, a private /tmp, the file system read-only except the project
# (its embedded database, logs and state) and the drop folders it moves files in.
# A source folder elsewhere that the service writes to goes on ReadWritePaths too.
NoNewPrivileges=yes
PrivateTmp=yes
ProtectSystem=strict
ReadWritePaths={paths}
ProtectControlGroups=yes
ProtectKernelModules=yes
ProtectKernelTunables=yes
RestrictSUIDSGID=yes

[Install]
WantedBy=multi-user.target
"""


def _unit_path(path: Path) -> str:
    text = str(path)
    if any(c.isspace() for c in text) or '"' in text:
        raise ConfigError(f"the folder {text!r} has spaces or quotes, which a systemd unit's path list cannot hold;"
                          " move the project (or the folder) to a path without them")
    # "-" prefix: a drop folder not created yet does not stop the service from starting.
    return text if path.is_dir() else f"-{text}"


def write_paths(pipelines: dict[str, Pipeline]) -> list[Path]:
    """The folders of file streams that move processed files: the service writes there."""
    from elt.extractors.files import FileExtractor

    return [stream.root.resolve() for p in pipelines.values() for stream in p.streams
            if isinstance(stream, FileExtractor) and stream.move_processed]


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


#: The cron log is moved aside once it passes this size (checked daily), so it stays bounded.
CRON_LOG_LIMIT = "10M"


def crontab(project_dir: Path, pipelines: dict[str, Pipeline]) -> str:
    """Crontab lines doing what `elt serve` does, for hosts without a long-running process."""
    folder = shlex.quote(str(project_dir))
    elt = f"{shlex.quote(sys.executable)} -m elt"
    run = f"cd {folder} && {elt}"
    log_path = project_dir / "elt-cron.log"
    log = f">> {shlex.quote(str(log_path))} 2>&1"
    zones = sorted({p.tz for p in pipelines.values() if _cron_expression(p) or p.reconcile} - {"UTC"})
    lines = [f"# elt pipelines of {project_dir} (install with: crontab -e, and paste)",
             "# Overlaps are safe: a run that finds the previous one still going is logged as skipped.",
             "# Settings come from the project's .env (elt loads it before pipelines.py); none go here.",
             "# CRON_TZ: cronie (Fedora, RHEL, Arch, Ubuntu's cronie package) and the BSDs' cron honour it;"
             " Debian's and Ubuntu's default `cron`",
             "# and BusyBox crond ignore it and read every time below in the host's time zone (`timedatectl`)."
             + (f" These lines need {', '.join(zones)}:" if zones else ""),
             "# on such a host use `elt serve` (`elt deploy systemd`) or convert the times yourself." if zones else
             "# Every time below is UTC (CRON_TZ=UTC) on crons that honour CRON_TZ."]
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
    old_log = shlex.quote(str(log_path) + ".1")
    lines += ["CRON_TZ=UTC",
              "# Health: silent while healthy; when something is wrong, cron mails the problems (exit 1).",
              f"*/15 * * * * cd {folder} && ({elt} check > /dev/null 2>&1 || {elt} check)",
              f"# The log stays bounded: past {CRON_LOG_LIMIT} it is moved to elt-cron.log.1 (the one before is"
              " dropped); the runs are in pipeline.execution_log too.",
              f"17 4 * * * [ -n \"$(find {shlex.quote(str(log_path))} -size +{CRON_LOG_LIMIT} 2>/dev/null)\" ]"
              f" && mv -f {shlex.quote(str(log_path))} {old_log}"]
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
