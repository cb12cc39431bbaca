"""``docs/architecture.md``: the architecture document, drawn from a live project.

Every section is computed: pipelines, streams and write strategies from
``pipelines.py``; the model graph from the SQL; raw DDL from the database when
it is reachable (else as elt will create it); decisions and their reasons from
the project's ``requirements.yaml``. The output has no timestamps, so drawing
it twice gives the same text and a drifted project shows as a diff.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from elt.extractors.base import Extractor
from elt.generator import bigquery_docs, webhook_docs
from elt.generator.decisions import Plan, plan
from elt.generator.requirements import Requirements, env_name, load
from elt.loaders.bigquery.raw import KIND_OF_TYPE as BIGQUERY_KINDS
from elt.loaders.postgres.raw import KIND_OF_TYPE as POSTGRES_KINDS
from elt.loaders.postgres.raw import RawTable
from elt.pipeline import Pipeline
from elt.schedules import Schedule
from elt.transforms import Graph, project_graph
from elt.transforms.materialize import CREATE_KIND

SECTIONS = ("Overview", "Architecture diagram", "Source inventory", "Schema design",
            "Extract, load and transform specifications", "Orchestration", "Error handling and reliability",
            "Monitoring and alerting", "Runbook", "Maintenance schedule")

#: (column, data type) of a raw table, as information_schema names them.
Columns = list[tuple[str, str]]


#: A raw cursor column's type (information_schema) -> the cursor kind elt stores it as.
# The cursor kind of a live raw column, whichever destination's type names it (PostgreSQL or BigQuery).
_KIND_OF_TYPE = {**POSTGRES_KINDS, **BIGQUERY_KINDS}


def raw_ddl(table: RawTable) -> str:
    """The CREATE TABLE and index statements elt runs for a raw table, one column per line."""
    create = table.create_sql().as_string(None)
    head, _, rest = create.partition(" (")
    body = rest[:-1].split(", ")
    lines = [f"{head} (", ",\n".join(f"    {column}" for column in body), ");"]
    lines += [f"{statement.as_string(None)};" for statement in table.index_sql()]
    return "\n".join(lines)


def render(project_dir: Path, pipelines: dict[str, Pipeline],
           live_columns: Callable[[str], Columns | None] | None = None) -> str:
    """The whole document. ``live_columns(table)`` gives a raw table's columns from the database, if it exists."""
    requirements_path = project_dir / "requirements.yaml"
    requirements = load(requirements_path) if requirements_path.exists() else None
    the_plan = plan(requirements) if requirements else None
    graph = project_graph(project_dir, pipelines.values())
    doc = _Doc(project_dir, pipelines, requirements, the_plan, graph, live_columns or (lambda table: None))
    return doc.text()


def _kind(stream: Extractor) -> str:
    """The elt extractor a stream is built on (RestExtractor, SqlExtractor, ...)."""
    return next(c.__name__ for c in type(stream).__mro__ if c.__module__.startswith("elt.extractors"))


def _id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", text)


class _Doc:
    def __init__(self, project_dir: Path, pipelines: dict[str, Pipeline], requirements: Requirements | None,
                 the_plan: Plan | None, graph: Graph, live_columns: Callable[[str], Columns | None]) -> None:
        self.dir, self.pipelines, self.req, self.plan, self.graph = project_dir, pipelines, requirements, the_plan, graph
        self.live_columns = live_columns
        self.name = requirements.project if requirements else project_dir.name
        self.bigquery = requirements is not None and requirements.destination.kind == "bigquery"
        from elt.webhooks.source import registered_webhooks

        self.webhooks = list(registered_webhooks().values())

    def streams(self) -> list[tuple[Pipeline, Extractor]]:
        return [(p, s) for p in self.pipelines.values() for s in p.streams]

    def text(self) -> str:
        parts = [f"# {self.name}: architecture\n",
                 "Drawn by `elt docs` from the project itself (pipelines.py, sql/, requirements.yaml and the"
                 " database); edit those, not this file, and run `elt docs` again.\n"]
        builders = [self.overview, self.diagram, self.inventory, self.schema, self.specifications,
                    self.orchestration, self.reliability, self.monitoring, self.runbook, self.maintenance]
        for number, (title, build) in enumerate(zip(SECTIONS, builders, strict=True), start=1):
            parts.append(f"## {number}. {title}\n\n{build().strip()}\n")
        return "\n".join(parts)

    # --- 1 ----------------------------------------------------------------------------
    def overview(self) -> str:
        lines = []
        if self.req and self.req.description:
            lines.append(self.req.description + "\n")
        if self.plan:
            reason = self.plan.pattern.reason
            lines.append(f"**Pattern: {self.plan.pattern.choice}.** {reason[0].upper()}{reason[1:]}.\n")
        destination = self.req.destination.kind if self.req else "postgres"
        if self.bigquery:
            lines.append("- Destination: bigquery (`ELT_BIGQUERY_PROJECT`; datasets `ELT_BIGQUERY_DATASET_PREFIX` +"
                         " raw, stg, mart, rpt, pipeline)")
        else:
            lines.append(f"- Destination: {destination} (`{self.req.destination.url_env if self.req else 'ELT_DATABASE_URL'}`;"
                         " unset: elt's embedded PostgreSQL)")
        if self.plan:
            for decision in (self.plan.destination, self.plan.deployment):
                lines.append(f"- {decision.topic.capitalize()}: **{decision.choice}**: {decision.reason}")
        lines.append(f"- Pipelines: {len(self.pipelines)}; streams: {len(self.streams())};"
                     f" models: {len(self.graph.models)}")
        if self.req:
            c, r = self.req.constraints, self.req.reliability
            lines.append(f"- Runtime: {c.runtime}; budget: {c.budget}; team: {c.team_skill}")
            lines.append(f"- Impact of a failure: {r.impact_of_failure}; loss acceptable: {'yes' if r.loss_acceptable else 'no'};"
                         f" raw retention: {r.retention_days} days")
            for text in self.req.transformations:
                lines.append(f"- Transformation wanted: {text}")
            if self.req.key_entities:
                lines.append(f"- Key business entities: {', '.join(self.req.key_entities)}")
        return "\n".join(lines)

    # --- 2 ----------------------------------------------------------------------------
    def diagram(self) -> str:
        out = ["```mermaid", "flowchart LR"]
        sources = sorted({(p.name, _kind(s)) for p, s in self.streams()})
        out.append('  subgraph source["Source"]')
        for source_name, kind in sources:
            out.append(f'    src_{_id(source_name)}[("{source_name}<br/>{kind}")]')
        hook_sources, hook_endpoints, hook_tables, hook_edges = webhook_docs.diagram_nodes(self.webhooks)
        out += hook_sources
        out.append("  end")
        out.append('  subgraph extract["Extract"]')
        for pipeline, stream in self.streams():
            out.append(f'    ext_{_id(pipeline.name)}_{_id(stream.name)}["{stream.name}<br/>{stream.strategy.value}"]')
        out += hook_endpoints
        out.append("  end")
        out.append('  subgraph raw["Raw"]')
        for pipeline, stream in self.streams():
            out.append(f'    raw_{_id(stream.table_name(pipeline.name))}[("raw.{stream.table_name(pipeline.name)}")]')
        out += hook_tables
        out.append("  end")
        layers = {"stg": "transform", "mart": "transform", "rpt": "serve"}
        for group, title in (("transform", "Transform"), ("serve", "Serve")):
            out.append(f'  subgraph {group}["{title}"]')
            for model in self.graph.order():
                if layers[model.schema] == group:
                    out.append(f'    m_{_id(model.relation)}["{model.relation}<br/>{model.config.materialized}"]')
            out.append("  end")
        for pipeline, stream in self.streams():
            table = stream.table_name(pipeline.name)
            out.append(f"  src_{_id(pipeline.name)} --> ext_{_id(pipeline.name)}_{_id(stream.name)}"
                       f" --> raw_{_id(table)}")
        out += hook_edges
        for model in self.graph.order():
            reads = sorted(model.reads)
            for ref in reads:
                schema, _, name = ref.partition(".")
                if ref in self.graph.models:
                    out.append(f"  m_{_id(ref)} --> m_{_id(model.relation)}")
                elif schema == "raw":
                    out.append(f"  raw_{_id(name)} --> m_{_id(model.relation)}")
                elif schema == "stg" and (any(s.table_name(p.name) == name for p, s in self.streams())
                                          or any(w.table == name for w in self.webhooks)):
                    out.append(f"  raw_{_id(name)} --> m_{_id(model.relation)}")
        # Around the data path: what starts the runs, where rejects go, what watches.
        scheduled = [p.name for p in self.pipelines.values() if Schedule.of(p) or p.after]
        out.append(f'  scheduler{{{{"elt serve<br/>{len(scheduled)} scheduled pipeline(s), timeouts"}}}}')
        out.append('  dead_letter[("pipeline.dead_letter<br/>rejected records, with the reason")]')
        out.append('  run_log[("pipeline.execution_log<br/>every run")]')
        out.append('  monitor["elt check and alerts"]')
        out.append("  scheduler -. starts .-> extract")
        out.append("  extract -. rejected .-> dead_letter")
        out.append("  extract -. figures .-> run_log")
        out.append("  run_log --> monitor")
        out.append("  dead_letter --> monitor")
        out.append("```")
        return "\n".join(out)

    # --- 3 ----------------------------------------------------------------------------
    def inventory(self) -> str:
        if self.req:
            rows = ["| source | type | access | auth (secret in) | rows per sync | total rows | freshness | rate limit"
                    " | entities |", "|---|---|---|---|---:|---:|---|---|---|"]
            for s in self.req.sources:
                rate = s.rate_limit.per_second()
                rows.append(
                    f"| {s.name} | {s.type.replace('_', ' ')} | {s.access or '-'} | {s.auth.kind}"
                    f"{' (' + s.auth.secret_env + ')' if s.auth.secret_env else ''} | {s.volume.rows_per_sync:,} |"
                    f" {s.volume.total_rows:,} | {s.freshness.replace('_', ' ')} |"
                    f" {f'{rate:g}/s, {s.rate_limit.page_size}/page' if rate else '-'} |"
                    f" {', '.join(e.name for e in s.entities)} |")
            return "\n".join(rows)
        rows = ["| pipeline | stream | extractor | key | cursor |", "|---|---|---|---|---|"]
        for p, stream in self.streams():
            rows.append(f"| {p.name} | {stream.name} | {_kind(stream)} | {', '.join(stream.key_fields) or '-'} |"
                        f" {stream.cursor_field or '-'} |")
        return "\n".join(rows)

    # --- 4 ----------------------------------------------------------------------------
    def schema(self) -> str:
        layer = ("a dataset (`ELT_BIGQUERY_DATASET_PREFIX` + its name; below without the prefix)" if self.bigquery
                 else "a schema")
        out = [f"Every layer is {layer}: `raw` (records as received, one table per stream), `stg` (typed, one row"
               " per key), `mart` (business tables), `rpt` (what dashboards read), and `pipeline` (run log, dead"
               " letters, state, schema changes, alerts).\n", "### raw\n"]
        for pipeline, stream in self.streams():
            table = stream.table_name(pipeline.name)
            raw = RawTable.for_stream(table, stream, self._cursor_kind(pipeline, stream))
            # The statements elt runs (collations, indexes), so the document reads the same before and
            # after the first run; only a real difference (a cursor found to be another kind) shows as drift.
            ddl = (bigquery_docs.raw_ddl(raw, f"raw records of {pipeline.name}.{stream.name}") if self.bigquery
                   else raw_ddl(raw))
            out.append(f"`raw.{table}` (write strategy `{stream.strategy.value}`):\n\n```sql\n{ddl}\n```\n")
        if self.webhooks:
            out.append(webhook_docs.schema(self.webhooks, {w.table: self.live_columns(w.table) for w in self.webhooks}))
        for layer in ("stg", "mart", "rpt"):
            models = [m for m in self.graph.order() if m.schema == layer]
            if not models:
                continue
            out.append(f"### {layer}\n")
            for model in models:
                kind = CREATE_KIND[model.config.materialized]
                text = bigquery_docs.model_sql(model) if self.bigquery else f"CREATE {kind} {model.relation} AS\n{model.sql};"
                out.append(f"`{model.relation}` ({model.config.materialized}, from `{model.path}`):\n\n```sql\n"
                           f"{text}\n```\n")
        if self.bigquery:
            out.append(bigquery_docs.costs(self.req, [(s.table_name(p.name), s.strategy.value) for p, s in self.streams()]))
        return "\n".join(out)

    def _cursor_kind(self, pipeline: Pipeline, stream: Extractor) -> str | None:
        """The cursor's kind: as the database has it once loaded, else as the requirements declare it."""
        from elt.generator.samples import fields_of

        if not stream.cursor_field:
            return None
        live = dict(self.live_columns(stream.table_name(pipeline.name)) or [])
        if stream.cursor_field in live:
            return _KIND_OF_TYPE.get(live[stream.cursor_field])
        if not self.req:
            return None
        for source in self.req.sources:
            for entity in source.entities if source.name == pipeline.name else []:
                if entity.name == stream.name:
                    kinds = {"timestamp": "timestamp", "date": "date", "integer": "integer", "number": "number"}
                    return next((kinds.get(f.type) for f in fields_of(entity) if f.name == stream.cursor_field), None)
        return None

    # --- 5 ----------------------------------------------------------------------------
    def specifications(self) -> str:
        out = ["### Extract and load\n"]
        plans = {(sp.pipeline, st.entity.name): st for sp in (self.plan.sources if self.plan else []) for st in sp.streams}
        for pipeline, stream in self.streams():
            out.append(f"**{pipeline.name}.{stream.name}** ({type(stream).__name__}): key"
                       f" `{', '.join(stream.key_fields) or '-'}`, cursor `{stream.cursor_field or 'none (full read)'}`,"
                       f" write strategy `{stream.strategy.value}`, batches of {stream.batch_size:,}.\n")
            st = plans.get((pipeline.name, stream.name))
            for decision in st.decisions if st else []:
                out.append(f"- {decision.topic}: **{decision.choice}**: {decision.reason}")
            out.append("")
        if self.webhooks:
            out.append(webhook_docs.specifications(self.webhooks))
        for sp in self.plan.sources if self.plan else []:
            for decision in sp.advice:
                if decision.topic != "schedule":
                    out.append(f"- {sp.pipeline}, {decision.topic}: **{decision.choice}**: {decision.reason}")
            out.append(f"- {sp.pipeline}, retry: **{sp.retry.choice}**: {sp.retry.reason}")
        out.append("\n### Transform\n")
        how = ("each built as a new version (translated to BigQuery SQL), tested, then swapped in by a copy job"
               if self.bigquery else "each in one transaction, tested before it replaces the previous version")
        out.append(f"Models build in dependency order (read from the SQL), {how}:\n")
        out.append("| # | model | materialized | reads | tests |")
        out.append("|---:|---|---|---|---|")
        for number, model in enumerate(self.graph.order(), start=1):
            reads = ", ".join(sorted(model.reads)) or "-"
            tests = ", ".join(t.text for t in model.config.tests) or "-"
            out.append(f"| {number} | {model.relation} | {model.config.materialized} | {reads} | {tests} |")
        return "\n".join(out)

    # --- 6 ----------------------------------------------------------------------------
    def orchestration(self) -> str:
        out = ["| pipeline | frequency | after | timeout | key reconciliation |", "|---|---|---|---|---|"]
        for p in self.pipelines.values():
            schedule = Schedule.of(p)
            frequency = schedule.text if schedule else ("after " + ", ".join(p.after) if p.after else "on demand")
            timeout = int(p.timeout.total_seconds()) if isinstance(p.timeout, dt.timedelta) else p.timeout
            out.append(f"| {p.name} | {frequency} | {', '.join(p.after) or '-'} | {timeout} s |"
                       f" {p.reconcile or '-'} |")
        out.append("\n`elt serve` runs this schedule (see the runbook); `elt deploy cron` gives the same as crontab"
                   " lines.\n")
        if self.webhooks:
            out.append(webhook_docs.orchestration(self.webhooks))
        out.append(self._gantt())
        return "\n".join(out)

    def _minutes(self, pipeline: Pipeline) -> int:
        """A bar's length: the plan's estimated sync time, else 10 minutes (whole minutes, at least 1)."""
        sp = next((sp for sp in (self.plan.sources if self.plan else []) if sp.pipeline == pipeline.name), None)
        return max(1, round(sp.sync_seconds / 60)) if sp else 10

    def _gantt(self) -> str:
        day = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)  # any Monday: the chart shows one day's pattern, in UTC
        out = ["```mermaid", "gantt", "  title One day's runs (UTC): loads (estimated duration), then their models",
               "  dateFormat HH:mm", "  axisFormat %H:%M"]
        tasks = 0
        last: dict[str, str] = {}  # a pipeline's last task today, for the pipelines that run after it
        for p in self.pipelines.values():
            schedule = Schedule.of(p)
            if schedule is None:
                continue
            out.append(f"  section {_id(p.name)}")
            minutes = self._minutes(p)
            if p.every:
                out.append(f"  {p.name} every {p.every} (~{minutes} min each) :{_id(p.name)}_all, 00:00, 24h")
                last[p.name] = f"{_id(p.name)}_all"
                tasks += 1
                continue
            moment, fires = day - dt.timedelta(microseconds=1), 0
            while fires < 24:
                nxt = schedule.next_after(moment)
                if nxt is None or nxt.astimezone(dt.UTC).date() != day.date():
                    break
                task = f"{_id(p.name)}_{fires}"
                out.append(f"  {p.name} load :{task}, {nxt.astimezone(dt.UTC):%H:%M}, {minutes}m")
                if p.transforms is not False and p.streams:
                    out.append(f"  {p.name} models :{task}_m, after {task}, 1m")
                    task = f"{task}_m"
                last[p.name] = task
                moment, fires, tasks = nxt, fires + 1, tasks + 1
        for p in self.pipelines.values():
            upstream = [last[name] for name in p.after if name in last]
            if Schedule.of(p) is not None or not upstream:
                continue
            out.append(f"  section {_id(p.name)}")
            out.append(f"  {p.name} (after {', '.join(p.after)}) :{_id(p.name)}_after, after {' '.join(upstream)},"
                       f" {self._minutes(p) if p.streams else 1}m")
            tasks += 1
        if not tasks:
            out.append("  section manual")
            out.append("  no scheduled pipeline :none, 00:00, 1m")
        out.append("```")
        return "\n".join(out)

    # --- 7 ----------------------------------------------------------------------------
    def reliability(self) -> str:
        return self._reliability() + (webhook_docs.RELIABILITY if self.webhooks else "")

    def _reliability(self) -> str:
        retries = {sp.pipeline: sp.retry.choice for sp in (self.plan.sources if self.plan else [])}
        rows = ["| stream | bad records allowed | dead letters get | retries | `partial` means |", "|---|---|---|---|---|"]
        for p, stream in self.streams():
            kind = _kind(stream)
            ratio = float(stream.max_bad_ratio)
            allowed = "none: one fails the run" if ratio == 0 else f"up to {ratio:.0%} of a run's records"
            rejects = {"FileExtractor": "unreadable files and rows (file, line, reason)",
                       "CdcExtractor": "change rows missing seq"}.get(
                kind, "records breaking the " + ("key, cursor or contract" if stream.contract else "key or cursor") + " rules")
            if stream.contract is not None and kind == "FileExtractor":
                rejects += f"; rows breaking {stream.contract.__name__}"
            retry = retries.get(p.name) or {
                "RestExtractor": f"{getattr(stream, 'max_retries', 5)} retries, backoff with jitter",
            }.get(kind, "the next scheduled run continues")
            partial = {"FileExtractor": "some files or rows were rejected; the others loaded",
                       "CdcExtractor": "some changes were rejected; later ones loaded"}.get(
                kind, "some records were rejected (within the ratio); the rest loaded")
            rows.append(f"| {p.name}.{stream.name} | {allowed} | {rejects} | {retry} | {partial} |")
        return "\n".join(rows) + """

- **Run log**: every run writes a row to `pipeline.execution_log` (running → success, partial, failed or
  skipped; rows extracted, loaded, rejected, transformed; per-stream and per-model figures; the error and
  its traceback). A killed run's row is closed as failed by the next run. Any status but `success` exits
  non-zero (`elt run`: 1 failed, 3 partial, 4 skipped).
- **Idempotency**: each batch's rows and the stream's watermark (or file manifest) commit in one
  transaction; a run killed at any point and run again ends with exactly the source's records.
- **A failed stream** keeps its committed batches and exact watermark; the pipeline's other streams still
  run and the next run continues from there.
- **Overlap**: one run per pipeline at a time (a database lock); a second one is logged `skipped`.
- **Timeouts**: under `elt serve` each run is a child process stopped at its timeout ("timed out after N s")."""

    # --- 8 ----------------------------------------------------------------------------
    def monitoring(self) -> str:
        out = ["`elt check` (exit 1 when anything is wrong; `--json`) and `elt serve` (every few minutes, alerting"
               " once per problem, reminding, and saying when it is resolved) watch the project. The queries below"
               " ask the same of this project's own tables, with its own thresholds; each runs as it stands"
               " (psql, a dashboard).\n"]
        if self.bigquery:
            out = ["`elt check` (exit 1 when anything is wrong; `--json`) and `elt serve` (every few minutes, alerting"
                   " once per problem, reminding, and saying when it is resolved) watch the project; `elt status`"
                   " shows each run with the bytes it processed. They ask the `pipeline` dataset through elt, so they"
                   " work the same on BigQuery. The queries below are written for PostgreSQL (the same tables and"
                   " columns in the `pipeline` dataset): on BigQuery use `CURRENT_TIMESTAMP()` for `now()` and"
                   " `INTERVAL 24 HOUR` for `interval '24 hours'`.\n"]
        now = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
        limits = []
        for p in self.pipelines.values():
            schedule = Schedule.of(p)
            if schedule is not None:
                limits.append((p.name, int(schedule.interval(now).total_seconds() * 2)))
        if limits:
            values = ",\n".join(f"    ('{name}', interval '{seconds} seconds')" for name, seconds in limits)
            out.append("**Late pipelines**: no successful run within twice the schedule's interval.\n\n```sql\n"
                       "SELECT expected.pipeline, max(l.completed_at) AS last_success, expected.within\n"
                       f"FROM (VALUES\n{values}\n) AS expected (pipeline, within)\n"
                       "LEFT JOIN pipeline.execution_log AS l\n"
                       "    ON l.pipeline_name = expected.pipeline AND l.status IN ('success', 'partial')\n"
                       "GROUP BY expected.pipeline, expected.within\n"
                       "HAVING coalesce(max(l.completed_at), '-infinity') < now() - expected.within;\n```\n")
        names = ", ".join(f"'{p}'" for p in self.pipelines)
        out.append("**Runs that did not succeed** in the last 24 hours, newest first.\n\n```sql\n"
                   "SELECT id, pipeline_name, status, started_at, rows_rejected, left(error_message, 200) AS error\n"
                   f"FROM pipeline.execution_log\nWHERE pipeline_name IN ({names})\n"
                   "  AND status NOT IN ('success', 'running') AND started_at > now() - interval '24 hours'\n"
                   "ORDER BY id DESC;\n```\n")
        timeouts = ",\n".join(f"    ('{p.name}', interval '{int(p.timeout.total_seconds())} seconds')"
                               for p in self.pipelines.values() if isinstance(p.timeout, dt.timedelta))
        out.append("**Stuck runs**: still `running` past the pipeline's timeout.\n\n```sql\n"
                   "SELECT l.id, l.pipeline_name, l.started_at\nFROM pipeline.execution_log AS l\n"
                   f"JOIN (VALUES\n{timeouts}\n) AS t (pipeline, timeout) ON t.pipeline = l.pipeline_name\n"
                   "WHERE l.status = 'running' AND l.started_at < now() - t.timeout;\n```\n")
        out.append("**Dead letters waiting**, per stream (resolve or replay them within a day).\n\n```sql\n"
                   "SELECT pipeline_name, stream_name, count(*) AS waiting, min(created_at) AS oldest\n"
                   f"FROM pipeline.dead_letter\nWHERE resolved_at IS NULL AND pipeline_name IN ({names})\n"
                   "GROUP BY pipeline_name, stream_name\nORDER BY oldest;\n```\n")
        out.append("**Schema changes** seen in the last 7 days (new or retyped fields: check the staging models).\n\n"
                   "```sql\nSELECT detected_at, table_name, field_name, change, old_type, new_type\n"
                   "FROM pipeline.schema_changes\nWHERE change <> 'initial' AND detected_at > now() - interval '7 days'\n"
                   "ORDER BY detected_at DESC;\n```\n")
        if self.webhooks:
            out.append(webhook_docs.monitoring(self.webhooks))
        if self.bigquery:
            out.append("elt's own tables are created in the `pipeline` dataset on first use.")
            return "\n".join(out)
        out.append("elt's own tables (`elt migrate` creates them; every command runs it first):\n")
        from elt.loaders.postgres.connection import migrations_dir

        for path in sorted(migrations_dir().glob("*.sql")):
            out.append(f"`{path.name}`:\n\n```sql\n{path.read_text(encoding='utf-8').strip()}\n```\n")
        return "\n".join(out)

    # --- 9 ----------------------------------------------------------------------------
    def runbook(self) -> str:
        return self._runbook() + (webhook_docs.runbook(self.webhooks) if self.webhooks else "")

    def _runbook(self) -> str:
        first = next(iter(self.pipelines), "PIPELINE")
        stream = next((s.name for p, s in self.streams() if p.name == first), "STREAM")
        lines = ["**Go live**\n",
                 "1. `cp .env.example .env && chmod 600 .env`; set each source's variables (below) and"
                 " `ELT_ENV=production`. elt loads `.env` before it imports `pipelines.py`, for every command.",
                 f"2. `elt run {first}` by hand; `elt status` must show no `sample data` column entries, and"
                 " `elt check` must pass (with `ELT_ENV=production` it fails while a stream reads sample data).",
                 "3. `elt deploy systemd --user elt --output deploy/elt.service` (or `elt deploy cron`), install it,"
                 " and watch the first scheduled runs in `elt status`.\n", "**Per source**\n"]
        for p in self.pipelines.values():
            kinds = {_kind(s) for s in p.streams}
            env = env_name(p.name)
            if "RestExtractor" in kinds:
                lines.append(f"- {p.name} (API): set `{env}_BASE_URL`; rotate its credential by changing it in `.env`"
                             f" and restarting the service (`sudo systemctl restart elt-{self.dir.name}`); a 401 in"
                             " `elt status`"
                             " names the variable to check.")
            if "CdcExtractor" in kinds:
                tables = ", ".join(getattr(s, "source_table", "") for s in p.streams)
                lines.append(f"- {p.name} (change capture): once per table ({tables}), as a role that may create"
                             f" triggers: `elt cdc install {env}_DATABASE_URL TABLE --apply`; then set"
                             f" `{env}_DATABASE_URL`. `elt cdc remove` stops it.")
            elif "SqlExtractor" in kinds:
                lines.append(f"- {p.name} (database): set `{env}_DATABASE_URL` (a read-only role); a password change"
                             f" is a new URL in `.env`. Deleted rows: `elt reconcile {p.name}`"
                             f"{' (scheduled: ' + p.reconcile + ')' if p.reconcile else ''}.")
            if "FileExtractor" in kinds:
                lines.append(f"- {p.name} (files): set the folder variable; each file loads once. To load a corrected"
                             " file again, drop it under a new name (or change it: a changed file loads as a new"
                             " version); bad files are in `elt dead-letter list` with file and line.")
            if not p.streams:
                lines.append(f"- {p.name} (models only): `elt run {p.name}` rebuilds its models; it waits for"
                             f" {', '.join(p.after) or 'nothing'} under `elt serve`.")
        lines += ["\n**Day to day**\n",
                  f"- **Trigger a pipeline**: `elt run {first}` (one stream: `elt run {first} --stream {stream}`).",
                  "- **Investigate a failure**: `elt status` names the stream and the cause; `error_detail` in"
                  " `pipeline.execution_log` has the traceback; `elt check` lists everything that is wrong now.",
                  f"- **Backfill**: `elt run {first} --since 2026-01-01`; the overlap is harmless, the watermark never"
                  " moves back.",
                  f"- **Replay dead letters**: `elt dead-letter list`, fix the contract or `transform_record`, then"
                  f" `elt dead-letter replay {first}`; `elt dead-letter resolve ID --by NAME` for records that should"
                  " not load.",
                  "- **A model failed**: the last good version is still there; fix the SQL and"
                  " `elt transform --select MODEL+`.",
                  "- **Add a source**: write its extractor in `pipelines.py`, `elt run` it once, `elt stage STREAM`"
                  " for a typed staging model, then `elt docs` to redraw this document."]
        return "\n".join(lines)

    # --- 10 ---------------------------------------------------------------------------
    def maintenance(self) -> str:
        retention = self.req.reliability.retention_days if self.req else 365
        rows = ["| when | what |", "|---|---|",
                "| daily | read `elt check` alerts; resolve or replay dead letters older than a day |",
                "| weekly | review `pipeline.schema_changes` (query in section 8): new or retyped fields may need"
                " the staging models changed |"]
        for p in self.pipelines.values():
            if p.reconcile:
                rows.append(f"| `{p.reconcile}` ({p.tz}) | key reconciliation of {p.name} (`elt reconcile {p.name}`),"
                            " run by `elt serve` |")
        rows += ["| weekly | `elt transform --full-refresh` for incremental models if sources rewrote history |",
                 f"| monthly | raw retention ({retention} days), per table as below"
                 + (" (BigQuery frees the storage itself) |" if self.bigquery else ", then `VACUUM ANALYZE` |"),
                 "| quarterly | rotate the secrets in `.env`; restore a backup into a scratch database and run `elt check` |",
                 "| on upgrade | `pip install -U elt`, `elt migrate`, `elt run` one pipeline by hand |"]
        out = ["\n".join(rows), f"\nRetention of {retention} days, by write strategy (a raw table holds different"
               " things under each):\n"]
        for p, stream in self.streams():
            table = f"raw.{stream.table_name(p.name)}"
            strategy = stream.strategy.value
            if self.bigquery:
                out.append(bigquery_docs.retention(stream.table_name(p.name), strategy, retention, stream.key_fields))
                continue
            if strategy in ("upsert", "replace"):
                out.append(f"- `{table}` ({strategy}): holds the current rows, not history: never delete by age"
                           f" (that would delete live rows); deleted source rows are marked by `elt reconcile`"
                           " or vanish with the next full read.")
                continue
            if strategy == "append_dedup":
                keys = stream.key_fields
                same = " AND ".join(f'newer."{k}" = old."{k}"' for k in keys)
                statement = (f"DELETE FROM {table} AS old\nWHERE old._loaded_at < now() - interval '{retention} days'\n"
                             f"  AND EXISTS (SELECT 1 FROM {table} AS newer WHERE {same} AND newer._row_seq > old._row_seq);")
                why = "older versions of each key past the retention; the latest version of every key stays"
            else:
                statement = f"DELETE FROM {table}\nWHERE _loaded_at < now() - interval '{retention} days';"
                why = "events past the retention (each row is an immutable fact)"
            out.append(f"- `{table}` ({strategy}): delete {why}:\n\n```sql\n{statement}\n```\n")
        return "\n".join(out)


def live_columns_from(store: Any) -> Callable[[str], Columns | None]:
    def columns(table: str) -> Columns | None:
        return store.raw_columns(table) or None
    return columns
