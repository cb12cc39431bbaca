"""The ``elt`` command line (typer + rich).

Commands that run pipelines import the project; commands that only read the
bookkeeping (status, state, dead letters) need just the database, which the
project's ``.env`` or the embedded default provides.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from elt import secrets
from elt.errors import ConfigError, EltError, LoadError

app = typer.Typer(no_args_is_help=True, add_completion=False, help="ELT pipelines that never lose a record.")
state_app = typer.Typer(no_args_is_help=True, help="Show or reset stream watermarks.")
dead_app = typer.Typer(no_args_is_help=True, help="Inspect, replay or resolve rejected records.")
cdc_app = typer.Typer(no_args_is_help=True, help="Trigger-based change capture on a PostgreSQL source.")
app.add_typer(state_app, name="state")
app.add_typer(dead_app, name="dead-letter")
app.add_typer(cdc_app, name="cdc")
files_app = typer.Typer(no_args_is_help=True, help="Drop-folder files: load rejected files again after a fix.")
app.add_typer(files_app, name="files")

# Piped output (cron mail, CI logs) gets wide tables instead of rich's 80 columns.
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


class _Ctx:
    project: Path = Path(".")


def _project_dir() -> Path:
    path = _Ctx.project.expanduser().resolve()
    return path.parent if path.suffix == ".py" else path


def _loader(*, migrate: bool = True) -> Any:
    """A loader for the project's destination, for commands that only read or edit bookkeeping."""
    loader = _destination().loader(_project_dir())
    if migrate:
        loader.store.migrate()
    return loader


def _destination() -> Any:
    """The project's destination: the one its pipelines name, else the one ``ELT_DESTINATION`` names."""
    from elt.destinations import FromEnvironment
    from elt.pipeline import ProjectNotFound, load_project

    try:
        _, pipelines = load_project(_Ctx.project)
    except (ProjectNotFound, ConfigError):
        # No project here, or one that does not import: the bookkeeping is still readable (`elt status` at 2am).
        return FromEnvironment()
    named = list(dict.fromkeys(p.destination for p in pipelines.values()))
    if len(named) > 1:
        raise EltError(f"the project's pipelines load into {len(named)} destinations ({', '.join(map(str, named))});"
                       " this command reads one: run it with a project holding the pipelines of one destination")
    return named[0] if named else FromEnvironment()


@contextmanager
def _store(*, migrate: bool = True) -> Iterator[Any]:
    """The destination's bookkeeping store, for commands that only read or edit bookkeeping."""
    loader = _loader(migrate=migrate)
    try:
        yield loader.store
    finally:
        loader.close()


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, default=str, indent=2) + "\n")


@app.callback()
def _main(
    project: Path = typer.Option(
        Path("."), "--project", "-p", help="Project folder (holding pipelines.py) or the module itself."
    ),
) -> None:
    _Ctx.project = project


@app.command()
def run(
    pipelines: list[str] = typer.Argument(None, help="Pipelines to run (default: all of the project's)."),
    stream: list[str] = typer.Option(None, "--stream", "-s", help="Only these streams (repeatable)."),
    full_refresh: bool = typer.Option(False, "--full-refresh", help="Read every stream from the start."),
    since: str | None = typer.Option(
        None, "--since", help="Backfill from this cursor value; the stored watermark never moves back."
    ),
    trigger: str = typer.Option("cli", "--trigger", hidden=True, help="What started the run (for the run log)."),
) -> None:
    """Run pipelines now. Exit code: 0 success, 1 failed, 3 partial (records rejected), 4 skipped (already running)."""
    from elt.pipeline import load_project, select
    from elt.runner import Runner, worst_exit_code

    project_dir, registry = load_project(_Ctx.project)
    chosen = select(registry, pipelines or [])
    if not chosen:  # a project of webhook sources only (issue 17): nothing is run, say where its data comes from
        out.print("no pipelines to run: this project's webhook sources are received by `elt serve` (or `elt webhooks`)")
    if stream and len(chosen) != 1:
        raise EltError("--stream needs exactly one pipeline: elt run PIPELINE --stream NAME")
    runners = [Runner(pipeline, project_dir=project_dir, streams=stream or None, full_refresh=full_refresh,
                      since=since, trigger=trigger) for pipeline in chosen]
    for runner in runners:  # a --since no stream can take is a usage error, before any run starts
        runner.check_since()
    codes: list[int] = []
    for runner in runners:
        result = runner.run()
        _print_run(result)
        codes.append(result.exit_code)
    raise typer.Exit(worst_exit_code(codes))


def _print_run(result: Any) -> None:
    colour = {"success": "green", "partial": "yellow", "failed": "red", "skipped": "yellow"}[result.status]
    table = Table(title=f"{result.pipeline}: run {result.run_id} [{colour}]{result.status}[/]", title_justify="left")
    for column in ("stream", "extracted", "loaded", "inserted", "updated", "unchanged", "collapsed", "rejected",
                   "watermark"):
        table.add_column(column, justify="left" if column in ("stream", "watermark") else "right")
    for name, f in result.streams.items():
        mark = f.as_json().get("watermark", "")
        table.add_row(name, f"{f.extracted:,}", f"{f.loaded:,}", f"{f.inserted:,}", f"{f.updated:,}",
                      f"{f.unchanged:,}", f"{f.collapsed:,}", f"{f.rejected:,}", str(mark or ""))
    if result.streams:
        out.print(table)
    for name, f in result.streams.items():
        if f.sample:
            err.print(f"{name}: read sample data, not its real source: {f.sample}", style="yellow", markup=False,
                      highlight=False)
    if result.models is not None:
        _print_models(result.models)
    if result.summary.error_message:
        err.print(f"[{colour}]{escape(secrets.redact(result.summary.error_message))}[/]")


def _print_models(build: Any) -> None:
    table = Table(title="models", title_justify="left")
    for column in ("model", "status", "rows", "seconds", "action / error"):
        table.add_column(column, justify="right" if column in ("rows", "seconds") else "left", overflow="fold")
    colours = {"success": "green", "failed": "red", "skipped": "yellow", "waiting": "cyan"}
    for r in build.models.values():
        note = r.action if r.status == "success" else str(r.error)
        if r.warnings:
            note += " (warnings: " + "; ".join(r.warnings) + ")"
        table.add_row(r.relation, f"[{colours[r.status]}]{r.status}[/]", f"{r.rows:,}", f"{r.seconds:.2f}", escape(note))
    out.print(table)


def _source_url(source: str) -> str:
    """A source database URL, or the name of the variable (environment or the project's .env) holding it.

    A name keeps the URL (and its password) out of the shell's history.
    """
    from elt.config import load_dotenv_once

    load_dotenv_once(_project_dir())
    url = os.environ.get(source, source)
    secrets.register_connection(url)
    return url


def _cdc(source: str, ddl: str, apply: bool) -> None:
    import psycopg

    if not apply:
        out.print(ddl, markup=False, highlight=False)
        err.print("printed only: review it, then run again with --apply (or run it yourself with psql)")
        return
    url = _source_url(source)
    try:
        with psycopg.connect(url, autocommit=False) as conn:
            conn.execute(ddl)  # type: ignore[call-overload]
    except psycopg.Error as exc:
        raise EltError(secrets.redact(f"applying the change-capture DDL failed: {str(exc).strip()}")) from None
    out.print("applied")


@cdc_app.command("install")
def cdc_install(
    source: str = typer.Argument(..., help="Source database URL, or the name of the environment variable holding it."),
    table: str = typer.Argument(..., help="schema.table to capture."),
    apply: bool = typer.Option(False, "--apply", help="Run the DDL on the source (default: print it)."),
) -> None:
    """Print (or apply) the trigger and change table that capture every insert, update and delete of TABLE."""
    from elt.extractors.cdc import install_sql

    if apply:
        _cdc_check_install(source, table)
    _cdc(source, install_sql(table), apply)


def _cdc_check_install(source: str, table: str) -> None:
    """Refuse before changing anything when the role lacks what install needs (each lack with its fix)."""
    import psycopg

    from elt.extractors.cdc import missing_install_privileges

    url = _source_url(source)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            missing = missing_install_privileges(conn, table)
    except psycopg.Error as exc:
        raise EltError(secrets.redact(f"connecting to the source failed: {str(exc).strip()}")) from None
    if missing:
        raise EltError("elt cdc install needs privileges it does not have; nothing was changed:\n  - "
                       + "\n  - ".join(missing))


@cdc_app.command("status")
def cdc_status_command(
    source: str = typer.Argument(..., help="Source database URL, or the name of the environment variable holding it."),
) -> None:
    """Backlog and lag of each captured table, and the oldest open transaction holding changes back."""
    import psycopg
    from psycopg.rows import dict_row

    from elt.extractors.cdc import cdc_status

    url = _source_url(source)
    try:
        with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
            tables, oldest = cdc_status(conn)
    except psycopg.errors.UndefinedTable:
        raise EltError("change capture is not installed on this source (no elt_cdc schema): run"
                       " `elt cdc install SOURCE schema.table` first") from None
    except psycopg.Error as exc:
        raise EltError(secrets.redact(f"reading elt_cdc on the source failed: {str(exc).strip()}")) from None
    table = Table(title="change capture", title_justify="left")
    for column in ("table", "backlog", "lag", "held back", "kept", "last loaded"):
        table.add_column(column, justify="left" if column in ("table", "last loaded") else "right")
    for row in tables:
        lag = str(row["lag"]).split(".")[0] if row["lag"] is not None else "-"
        loaded = row["loaded_at"].isoformat(timespec="seconds") if row["loaded_at"] else "never"
        table.add_row(row["table_name"], f"{row['backlog']:,}", lag, f"{row['held_back']:,}", f"{row['kept']:,}", loaded)
    out.print(table)
    if oldest is not None:
        out.print(f"oldest open transaction: pid {oldest['pid']} ({oldest['usename']}, {oldest['state']}),"
                  f" open for {str(oldest['age']).split('.')[0]}; changes committed after it wait until it ends")


@cdc_app.command("remove")
def cdc_remove(
    source: str = typer.Argument(..., help="Source database URL, or the name of the environment variable holding it."),
    table: str = typer.Argument(..., help="schema.table to stop capturing."),
    apply: bool = typer.Option(False, "--apply", help="Run the DDL on the source (default: print it)."),
) -> None:
    """Print (or apply) the DDL that stops capturing TABLE."""
    from elt.extractors.cdc import remove_sql

    _cdc(source, remove_sql(table), apply)


@files_app.command("retry")
def files_retry(
    pipeline: str = typer.Argument(..., help="The pipeline holding the file stream."),
    stream: str = typer.Argument(..., help="The FileExtractor stream whose rejected files to load again."),
) -> None:
    """Put STREAM's rejected files back into its drop folder and load them (after fixing the stream's settings)."""
    from elt.extractors.files import FileExtractor
    from elt.pipeline import load_project, select
    from elt.runner import Runner

    project_dir, registry = load_project(_Ctx.project)
    [chosen] = select(registry, [pipeline])
    extractor = chosen.stream(stream)
    if not isinstance(extractor, FileExtractor):
        raise EltError(f"stream {stream!r} of pipeline {pipeline!r} is not a FileExtractor stream")
    for path in extractor.prepare_retry():  # files the manifest has as rejected are read again, moved back or not
        out.print(f"put back: {path.relative_to(extractor.root)}")
    result = Runner(chosen, project_dir=project_dir, streams=[stream], trigger="files-retry").run()
    _print_run(result)
    raise typer.Exit(result.exit_code)


@app.command()
def init(
    directory: Path | None = typer.Argument(None, help="Folder for the new project (must not exist, or be empty)."),
    spec: Path | None = typer.Option(None, "--spec", help="The requirements file (YAML)."),
    interactive: bool = typer.Option(False, "--interactive", help="Answer the requirements questions here."),
    example: str | None = typer.Option(
        None, "--example", help="Write the example requirements file of a pattern (api_sync, simple_elt, event_driven,"
        " file_processing, cdc, multi_source, hybrid) to start from; generates nothing."),
) -> None:
    """Generate a runnable project and its architecture document from a requirements file."""
    from elt.generator import generate

    if example is not None:
        from elt.generator.examples import example as example_text

        text = example_text(example)
        target = Path(f"requirements-{example}.yaml") if directory is None else directory
        if target.exists():
            raise EltError(f"{target} exists; choose another file name: elt init --example {example} FILE")
        target.write_text(text, encoding="utf-8")
        out.print(f"wrote {target}: edit it, then `elt init PROJECT_FOLDER --spec {target}`")
        return
    if directory is None:
        raise EltError("give the folder for the new project: elt init FOLDER --spec FILE (or --interactive)")
    if (spec is None) == (not interactive):
        raise EltError("give --spec FILE or --interactive (or --example PATTERN for a file to start from)")
    if spec is not None:
        try:
            text = spec.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise EltError(f"no requirements file at {spec}") from None
        where = str(spec)
    else:
        from elt.generator.interactive import ask

        text, where = ask(directory.name), "your answers"
    generated = generate(text, directory, where)
    out.print(f"created {generated.directory} ({generated.plan.pattern.choice}):")
    for source in generated.plan.sources:
        out.print(f"  {source.pipeline}: {source.frequency}; " + ", ".join(
            f"{s.entity.name} ({s.write_strategy})" for s in source.streams))
    for source in generated.plan.sources:
        for decision in source.advice:
            if decision.infeasible:
                err.print(f"  [red]{source.pipeline}, {decision.topic}: {decision.choice}[/]: {escape(decision.reason)}")
            elif decision.topic in ("full sync", "large source", "real time", "access", "secret in access"):
                out.print(f"  [yellow]{source.pipeline}, {decision.topic}[/]: {escape(decision.reason)}")
    out.print(f"next: cd {directory} && elt run && python -m pytest tests; read docs/architecture.md")
    if any(d.infeasible for source in generated.plan.sources for d in source.advice):
        err.print("[red]the requirements cannot be met as written (above)[/]: the project is written; change the"
                  " requirements (or the source's limits) and generate again")
        raise typer.Exit(1)


@app.command()
def docs(check: bool = typer.Option(False, "--check", help="Only report drift (exit 1), do not write.")) -> None:
    """Re-draw docs/architecture.md from the live project (pipelines, models, database)."""
    from elt.generator import docs as draw
    from elt.pipeline import load_project

    project_dir, registry = load_project(_Ctx.project)
    loader = None
    try:
        loader = _loader()
    except Exception as exc:  # no database yet: the raw DDL is drawn as elt will create it
        err.print(f"database not reachable ({escape(secrets.redact(str(exc)))}); drawing raw tables as they will be created")
    try:
        diff = draw(project_dir, registry, loader.store if loader is not None else None, write=not check)
    finally:
        if loader is not None:
            loader.close()
    if not diff:
        out.print("docs/architecture.md is up to date")
        return
    out.print(diff, markup=False, highlight=False, soft_wrap=True)
    if check:
        raise typer.Exit(1)
    out.print("docs/architecture.md redrawn (the changes are above)")


@app.command()
def serve() -> None:
    """Run the project's pipelines on their schedules, check their health and send alerts, until stopped.

    The project's webhook sources are served beside them (see `elt webhooks`).
    """
    from elt.pipeline import load_project
    from elt.serve import Scheduler
    from elt.webhooks.source import registered_webhooks

    project_dir, registry = load_project(_Ctx.project)
    hooks = _webhook_server(project_dir, list(registered_webhooks().values()), None, None)
    if not registry:
        if hooks is None:
            raise EltError("this project has no pipelines to schedule")
        hooks.serve()
        return
    if hooks is not None:
        hooks.start_background()
    try:
        Scheduler(project_dir, registry).serve_forever()
    finally:
        if hooks is not None:
            hooks.stop()  # stops taking events, answers those in flight, stores what is queued


def _webhook_server(project_dir: Path, sources: list[Any], host: str | None, port: int | None) -> Any:
    if not sources:
        return None
    from elt.webhooks.server import WebhookServer

    return WebhookServer(project_dir, sources, host=host, port=port)


@app.command()
def webhooks(
    host: str | None = typer.Option(None, "--host", help="Address to listen on (default 127.0.0.1, or ELT_WEBHOOK_HOST)."),
    port: int | None = typer.Option(None, "--port", help="Port (default 8787, or ELT_WEBHOOK_PORT)."),
) -> None:
    """Receive the project's webhook sources only (no schedules), until SIGTERM; every 2xx means stored."""
    from elt.pipeline import load_project
    from elt.webhooks.source import registered_webhooks

    project_dir, _ = load_project(_Ctx.project)
    server = _webhook_server(project_dir, list(registered_webhooks().values()), host, port)
    if server is None:
        raise EltError("this project declares no WebhookSource; add one to pipelines.py (see the README, Webhooks)")
    server.serve()


@app.command()
def schedule(as_json: bool = typer.Option(False, "--json", help="Print JSON for machines.")) -> None:
    """The schedule: pipeline, frequency, next run, dependencies, timeout."""
    from elt.pipeline import load_project
    from elt.serve import schedule_rows

    _, registry = load_project(_Ctx.project)
    rows = schedule_rows(registry)
    if as_json:
        _print_json(rows)
        return
    table = Table(title="schedule", title_justify="left")
    for column in ("pipeline", "frequency", "next run (UTC)", "after", "timeout"):
        table.add_column(column)
    for r in rows:
        # next_run is in the pipeline's time zone (with its offset); the column says UTC.
        nxt = f"{dt.datetime.fromisoformat(r['next_run']).astimezone(dt.UTC):%Y-%m-%d %H:%M}" if r["next_run"] else "-"
        table.add_row(r["pipeline"], r["frequency"], nxt, ", ".join(r["after"]) or "-", f"{r['timeout_s']} s")
    out.print(table)


@app.command()
def check(as_json: bool = typer.Option(False, "--json", help="Print JSON for machines.")) -> None:
    """Health checks: failed, missing and stuck runs, stale data, old dead letters; in production (ELT_ENV=production)
    streams still on sample data. Exit 1 when anything is wrong."""
    from elt.health import run_checks
    from elt.pipeline import load_project
    from elt.readiness import is_production, on_sample_data, sample_data_problems

    project_dir, registry = load_project(_Ctx.project)
    with _store() as store:
        problems = run_checks(store, registry.values(), project_dir=project_dir)
    problems += sample_data_problems(registry.values())
    samples = on_sample_data(registry.values())
    if samples and not is_production() and not as_json:
        err.print(f"note: {len(samples)} stream(s) read sample data ({', '.join(f'{p}.{s}' for p, s, _ in samples)});"
                  " set ELT_ENV=production in .env and this check fails until they read their real sources",
                  markup=False, highlight=False)
    problems += _webhook_problems(project_dir)
    if as_json:
        _print_json({"ok": not problems, "problems": [p.as_json() for p in problems]})
    elif not problems:
        out.print("[green]all healthy[/]: no failed, missing or stuck runs, no stale data, no old dead letters")
    else:
        table = Table(title=f"{len(problems)} problem(s)", title_justify="left")
        for column in ("check", "subject", "problem"):
            table.add_column(column, overflow="fold")
        for p in problems:
            table.add_row(f"[red]{p.check}[/]", escape(p.subject), escape(p.detail))
        out.print(table)
    raise typer.Exit(1 if problems else 0)


def _webhook_problems(project_dir: Path) -> list[Any]:
    """Webhook sources silent longer than their ``expect_every`` (issue 17; kept apart from the run checks)."""
    from elt.webhooks.source import registered_webhooks
    from elt.webhooks.status import webhook_problems

    return webhook_problems(project_dir, registered_webhooks().values())


@app.command()
def deploy(
    target: str = typer.Argument(..., help="systemd, cron or pg-cron"),
    user: str | None = typer.Option(None, "--user", help="systemd (required): the account the service runs as."),
    allow_root: bool = typer.Option(False, "--allow-root", help="systemd: accept --user root."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write to this file instead of printing."),
) -> None:
    """Deployment files: a systemd unit for `elt serve`, crontab lines, or pg_cron statements (Supabase)."""
    from elt.deploy import crontab, pg_cron, systemd_unit, write_paths
    from elt.pipeline import load_project

    project_dir, registry = load_project(_Ctx.project)
    makers = {"systemd": lambda: systemd_unit(project_dir, user, allow_root=allow_root,
                                              write_paths=write_paths(registry)),
              "cron": lambda: crontab(project_dir, registry),
              "pg-cron": lambda: pg_cron(project_dir, registry)}
    if target not in makers:
        raise EltError(f"unknown deploy target {target!r}; use one of: {', '.join(makers)}")
    text = makers[target]()
    if output is None:
        out.print(text, markup=False, highlight=False, soft_wrap=True)
    else:
        output.write_text(text, encoding="utf-8")
        out.print(f"wrote {output}")


@app.command()
def reconcile(
    pipelines: list[str] = typer.Argument(None, help="Pipelines (default: all with detect_deletes streams)."),
    stream: list[str] = typer.Option(None, "--stream", "-s", help="Only these streams (repeatable)."),
) -> None:
    """Mark rows whose key vanished from the source with _deleted_at (streams with detect_deletes = True).

    It reads every key of the source, so it runs on its own schedule (nightly, say), not with each load.
    """
    from elt.pipeline import load_project, select
    from elt.runner import Runner, worst_exit_code

    project_dir, registry = load_project(_Ctx.project)
    chosen = [p for p in select(registry, pipelines or [])
              if pipelines or any(getattr(s, "detect_deletes", False) for s in p.streams)]
    if not chosen:
        raise EltError("no pipeline has a stream with detect_deletes = True")
    codes = []
    for pipeline in chosen:
        result = Runner(pipeline, project_dir=project_dir, streams=stream or None, trigger="reconcile").reconcile()
        out.print(f"{pipeline.name}: run {result.run_id} {result.status}")
        for name, figures in result.streams.items():
            out.print(f"  {name}: {figures.deleted or 0} rows marked deleted, {figures.restored or 0} restored"
                      + (f" ({figures.error})" if figures.error else ""))
        codes.append(result.exit_code)
    raise typer.Exit(worst_exit_code(codes))


@app.command()
def transform(
    select: list[str] = typer.Option(
        None, "--select", "-s", help="Models to build: NAME, NAME+ (with what reads it), +NAME (with what it reads)."
    ),
    layer: list[str] = typer.Option(None, "--layer", "-l", help="Every model of a layer (stg, mart, rpt) and its dependents."),
    full_refresh: bool = typer.Option(False, "--full-refresh", help="Rebuild incremental models from scratch."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the SQL in build order; build nothing."),
    threads: int = typer.Option(4, "--threads", help="Independent models built at once."),
) -> None:
    """Build the project's SQL models (sql/stg, sql/mart, sql/rpt) in dependency order, with their data tests."""
    from elt.pipeline import Pipeline
    from elt.runner import Runner
    from elt.transforms import Builder, project_graph

    project_dir, registry = _project_or_models()
    first = next(iter(registry.values()), None) or Pipeline("transforms", streams=[])
    if dry_run:
        # The SQL the project's destination would run (its dialect, its datasets), built by nothing.
        graph = project_graph(project_dir, registry.values())
        builder = Builder(first.destination.statement_warehouse(project_dir), graph)  # type: ignore[union-attr]
        out.print(builder.dry_run(graph.select(select or [], layer or [])), markup=False, highlight=False, soft_wrap=True)
        return
    result = Runner(first, project_dir=project_dir, full_refresh=full_refresh).transform(select or [], layer or [], threads)
    _print_run(result)
    raise typer.Exit(result.exit_code)


def _project_or_models() -> tuple[Path, dict[str, Any]]:
    """The project's pipelines; a folder with only sql/ models (no pipelines.py) is a project too."""
    from elt.errors import ProjectNotFound
    from elt.pipeline import load_project

    try:
        return load_project(_Ctx.project)
    except ProjectNotFound:
        if (_project_dir() / "sql").is_dir():
            return _project_dir(), {}
        raise


@app.command()
def stage(
    stream: str = typer.Argument(..., help="The stream, as NAME or PIPELINE.NAME."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
) -> None:
    """Write a starter sql/stg/<source>_<entity>.sql for a stream: typed columns, latest row per key."""
    from elt.pipeline import load_project
    from elt.transforms.stage import write_starter

    project_dir, registry = load_project(_Ctx.project)
    pipeline_name, _, name = stream.rpartition(".")
    matches = [(p, s) for p in registry.values() for s in p.streams
               if s.name == name and (not pipeline_name or p.name == pipeline_name)]
    if not matches:
        raise EltError(f"no stream {stream!r} in this project; `elt state show` lists them")
    if len(matches) > 1:
        raise EltError(f"stream {name!r} is in several pipelines ({', '.join(p.name for p, _ in matches)}); use PIPELINE.{name}")
    pipeline, extractor = matches[0]
    loader = pipeline.destination.loader(project_dir)  # type: ignore[union-attr]
    try:
        path = write_starter(project_dir, pipeline.name, extractor, loader.store, force=force)
    finally:
        loader.close()
    out.print(f"wrote {path.relative_to(project_dir)}; edit it, then `elt transform --select {path.stem}`")


@app.command()
def status(
    pipeline: str | None = typer.Option(None, "--pipeline", help="Only this pipeline."),
    limit: int = typer.Option(20, "--limit", "-n", help="How many recent runs."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for machines."),
) -> None:
    """Recent runs, newest first."""
    with _store() as store:
        rows, where = store.last_runs(pipeline, limit), store.description
    if as_json:
        _print_json(rows)
        return
    _print_webhook_sources()
    if not rows:
        out.print("no runs yet: `elt run` starts one")
        return
    table = Table(title=f"recent runs ({where})", title_justify="left")
    for column in ("run", "pipeline", "status", "started (UTC)", "seconds", "extracted", "loaded", "unchanged",
                   "rejected", "transformed", "sample data", "error"):
        table.add_column(column, overflow="fold", no_wrap=column == "sample data")
    colours = {"success": "green", "partial": "yellow", "failed": "red", "running": "cyan", "skipped": "yellow"}
    for r in rows:
        seconds = r["execution_duration_seconds"]
        table.add_row(
            str(r["id"]), r["pipeline_name"], f"[{colours.get(r['status'], 'white')}]{r['status']}[/]",
            f"{r['started_at']:%Y-%m-%d %H:%M:%S}", f"{seconds:.1f}" if seconds is not None else "",
            f"{r['rows_extracted']:,}", f"{r['rows_loaded']:,}",
            f"{r['rows_unchanged']:,}" + (f" (+{r['rows_collapsed']:,} collapsed)" if r["rows_collapsed"] else ""),
            f"{r['rows_rejected']:,}", f"{r['rows_transformed']:,}", _sample_streams(r.get("streams")),
            escape((r["error_message"] or "")[:160]),
        )
    out.print(table)


def _sample_streams(streams: Any) -> str:
    """The streams of a run that read sample data, not their real source (from the run's stream figures)."""
    names = sorted(name for name, figures in (streams or {}).items() if isinstance(figures, dict) and figures.get("sample"))
    return f"[yellow]{', '.join(names)}[/]" if names else ""


def _print_webhook_sources() -> None:
    """Events and last event time per webhook source (issue 17), above the runs; nothing when there are none."""
    from elt.config import database_target
    from elt.webhooks.source import registered_webhooks
    from elt.webhooks.status import source_rows

    if not registered_webhooks():  # none declared (a BigQuery project has none): no database to ask
        return
    rows = source_rows(database_target(_project_dir()).url)
    if not rows:
        return
    table = Table(title="webhook sources", title_justify="left")
    for column in ("source", "table", "events", "duplicates", "refused (signature)", "refused (other)", "last event (UTC)"):
        table.add_column(column)
    for r in rows:
        last = f"{r['last_event_at']:%Y-%m-%d %H:%M:%S}" if r["last_event_at"] else "never"
        table.add_row(r["source"], f"raw.{r['table_name']}", f"{r['events']:,}", f"{r['duplicates']:,}",
                      f"{r['rejected_signature']:,}", f"{r['rejected_other']:,}", last)
    out.print(table)


@app.command()
def migrate() -> None:
    """Create or upgrade elt's own schema (pipeline.*). Runs by itself before every run too."""
    with _store(migrate=False) as store:
        applied = store.migrate()
    out.print(f"applied {', '.join(applied)}" if applied else f"up to date ({store.description})")


@state_app.command("show")
def state_show(
    pipeline: str | None = typer.Argument(None, help="Only this pipeline."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for machines."),
) -> None:
    """Watermarks per pipeline and stream."""
    with _store() as store:
        rows = store.watermarks(pipeline)
    if as_json:
        _print_json(rows)
        return
    table = Table(title="watermarks", title_justify="left")
    for column in ("pipeline", "stream", "watermark", "kind", "updated (UTC)", "by run"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["pipeline_name"], r["stream_name"], str(r["value"].get("value")), r["value"].get("kind", ""),
                      f"{r['updated_at']:%Y-%m-%d %H:%M:%S}", str(r["updated_by_run"] or ""))
    out.print(table if rows else "no watermarks stored yet")


@state_app.command("reset")
def state_reset(
    pipeline: str = typer.Argument(..., help="The pipeline whose state to forget."),
    stream: list[str] = typer.Option(None, "--stream", "-s", help="Only these streams."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Forget watermarks, so the next run reads from the start (the write strategy keeps that harmless)."""
    what = f"streams {', '.join(stream)} of {pipeline}" if stream else f"every stream of {pipeline}"
    if not yes and not typer.confirm(f"Reset the watermark of {what}? The next run re-reads from the start."):
        raise typer.Exit(1)
    with _store() as store:
        count = store.reset_watermarks(pipeline, stream or ())
    out.print(f"reset {count} watermark(s) of {what}")


@dead_app.command("list")
def dead_list(
    pipeline: str | None = typer.Option(None, "--pipeline", help="Only this pipeline."),
    stream: str | None = typer.Option(None, "--stream", help="Only this stream."),
    include_resolved: bool = typer.Option(False, "--all", help="Include resolved ones."),
    limit: int = typer.Option(50, "--limit", "-n"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for machines."),
) -> None:
    """Rejected records, newest first (unresolved only, unless --all)."""
    with _store() as store:
        rows = store.dead_letters(pipeline, stream, include_resolved=include_resolved, limit=limit)
    if as_json:
        _print_json(rows)
        return
    if not rows:
        out.print("no dead letters" + ("" if include_resolved else " waiting"))
        return
    table = Table(title="dead letters", title_justify="left")
    for column in ("id", "pipeline", "stream", "run", "created (UTC)", "error", "resolved"):
        table.add_column(column, overflow="fold")
    for r in rows:
        table.add_row(str(r["id"]), r["pipeline_name"], r["stream_name"] or "", str(r["run_id"] or ""),
                      f"{r['created_at']:%Y-%m-%d %H:%M:%S}", escape(r["error_message"][:200]),
                      f"{r['resolved_at']:%Y-%m-%d} by {r['resolved_by']}" if r["resolved_at"] else "")
    out.print(table)


@dead_app.command("show")
def dead_show(id: int = typer.Argument(..., help="Dead letter id (from `elt dead-letter list`).")) -> None:
    """One rejected record in full, with its reason."""
    with _store() as store:
        row = store.dead_letter(id)
    if row is None:
        raise EltError(f"no dead letter with id {id}: `elt dead-letter list --all` shows them")
    _print_json(row)


@dead_app.command("replay")
def dead_replay(
    pipeline: str = typer.Argument(..., help="The pipeline whose dead letters to replay."),
    ids: list[int] = typer.Option(None, "--id", help="Only these ids (repeatable)."),
    stream: list[str] = typer.Option(None, "--stream", "-s", help="Only these streams."),
    by: str = typer.Option("elt dead-letter replay", "--by", help="Recorded in resolved_by."),
) -> None:
    """Re-validate dead letters with the project's current code and load those that now pass."""
    from elt.pipeline import load_project, select
    from elt.runner import Runner

    project_dir, registry = load_project(_Ctx.project)
    (chosen,) = select(registry, [pipeline])
    result = Runner(chosen, project_dir=project_dir, streams=stream or None, trigger="replay").replay(ids or (), by)
    loaded = sum(f.loaded for f in result.streams.values())
    still = sum(f.rejected for f in result.streams.values())
    superseded = sum(f.superseded or 0 for f in result.streams.values())
    out.print(f"replay run {result.run_id}: {loaded} record(s) loaded and resolved, {superseded} resolved as superseded"
              f" (a newer version is stored), {still} still rejected")
    if result.summary.error_message and result.status != "success":
        err.print(f"[red]{escape(secrets.redact(result.summary.error_message))}[/]")
    raise typer.Exit(result.exit_code)


@dead_app.command("resolve")
def dead_resolve(
    ids: list[int] = typer.Argument(..., help="Dead letter ids to mark handled."),
    by: str = typer.Option(..., "--by", help="Who handled them (recorded in resolved_by)."),
    note: str = typer.Option("resolved without loading", "--note", help="What was done."),
) -> None:
    """Mark dead letters handled without loading them."""
    with _store() as store:
        count = store.resolve_dead_letters(ids, by, note)
    out.print(f"resolved {count} dead letter(s)")
    if count < len(ids):
        err.print(f"{len(ids) - count} id(s) were unknown or already resolved (see `elt dead-letter list --all`)")
        raise typer.Exit(1)


@app.command()
def demo(
    directory: Path = typer.Argument(Path("elt-demo"), help="Where to create the demo project."),
) -> None:
    """Create a sample project and run it end to end on the embedded database."""
    from elt.demo import create_demo
    from elt.pipeline import load_project
    from elt.runner import Runner, worst_exit_code

    project_dir = create_demo(directory)
    out.print(f"created the demo project in {project_dir}")
    _, registry = load_project(project_dir)
    codes: list[int] = []
    for pipeline in registry.values():
        result = Runner(pipeline, project_dir=project_dir).run()
        _print_run(result)
        codes.append(result.exit_code)
    from elt.config import database_target

    target = database_target(project_dir)
    out.print(
        f"\nThe data is in {target.description}:\n"
        "  raw.shop_orders, raw.shop_customers   every record as received (_raw_payload)\n"
        "  stg.shop_orders                       latest version of each order, typed (sql/stg/)\n"
        "  mart.daily_revenue, rpt.customer_value  models built from sql/ after each load\n"
        "  pipeline.execution_log                one row per run\n"
        f"Next: cd {directory} && elt status   (running `elt run` again changes nothing)"
    )
    if target.embedded:
        out.print("The embedded server runs while an elt command runs; set ELT_DATABASE_URL to use your own server.")
    raise typer.Exit(worst_exit_code(codes))


def _terminate(signum: int, frame: Any) -> None:
    """First SIGTERM: stop after the batch being loaded. A second one (or the grace running out): stop now."""
    from elt.runner import request_stop, stop_requested

    if stop_requested():
        raise SystemExit(128 + signum)
    request_stop()
    # A run waiting inside a hung source call gets a bounded grace, then the second signal.
    timer = threading.Timer(float(os.environ.get("ELT_STOP_GRACE", "20")), os.kill, args=(os.getpid(), signum))
    timer.daemon = True
    timer.start()


def _hoist_project(argv: list[str]) -> list[str]:
    """``elt run --project X`` means ``elt --project X run``: move the global option before the command."""
    args = list(argv)
    command = next((i for i, a in enumerate(args) if not a.startswith("-") and (i == 0 or args[i - 1] not in
                                                                                ("--project", "-p"))), None)
    if command is None:
        return args
    for i in range(command + 1, len(args)):
        if args[i] in ("--project", "-p") and i + 1 < len(args):
            return [args[i], args[i + 1], *args[:i], *args[i + 2:]]
        if args[i].startswith("--project="):
            return [args[i], *args[:i], *args[i + 1:]]
    return args


def main() -> None:
    """Entry point: user-facing errors print one clear line (secrets masked) and exit 2 (1: the database failed)."""
    from elt.logs import configure_logging

    configure_logging()
    sys.argv[1:] = _hoist_project(sys.argv[1:])
    # SIGTERM (systemd stop, kill): the run stops after the batch it is loading, closes its
    # log row as failed ("interrupted") and frees its lock; see _terminate.
    signal.signal(signal.SIGTERM, _terminate)
    try:
        app()
    except LoadError as exc:
        # The database went away (or never answered): a failed run, not a usage error, even when
        # the run's own log row could not be closed (the next run closes it).
        err.print(f"[red]error:[/] {escape(secrets.redact(str(exc)))}")
        sys.exit(1)
    except EltError as exc:
        err.print(f"[red]error:[/] {escape(secrets.redact(str(exc)))}")
        sys.exit(2)
    except Exception as exc:
        import psycopg

        if not isinstance(exc, psycopg.errors.InsufficientPrivilege):
            raise
        # A role without the grants elt needs: say so in one line, not a driver traceback.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        from elt.loaders.postgres.connection import privilege_hint

        err.print(f"[red]error:[/] the database refused: {escape(secrets.redact(first))}.{privilege_hint(exc)}")
        sys.exit(2)


if __name__ == "__main__":
    main()
