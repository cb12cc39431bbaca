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
from elt.generator import webhook_docs
from elt.generator.decisions import Plan, plan
from elt.generator.requirements import Requirements, load
from elt.health import CHECK_QUERIES
from elt.loaders.pg_raw import RawTable
from elt.pipeline import Pipeline
from elt.schedules import Schedule
from elt.transforms import Graph, project_graph
from elt.transforms.materialize import CREATE_KIND

SECTIONS = ("Overview", "Architecture diagram", "Source inventory", "Schema design",
            "Extract, load and transform specifications", "Orchestration", "Error handling and reliability",
            "Monitoring and alerting", "Runbook", "Maintenance schedule")

#: (column, data type) of a raw table, as information_schema names them.
Columns = list[tuple[str, str]]
_FORMAL = {"timestamptz": "timestamp with time zone", "int": "integer"}


def predicted_columns(table: RawTable) -> Columns:
    """The raw table as elt will create it."""
    columns = [(c, _FORMAL.get(t, t)) for c, t, _ in table.data_columns()]
    return columns + [("_raw_payload", "jsonb"), ("_loaded_at", "timestamp with time zone"), ("_batch_id", "text"),
                      ("_run_id", "bigint"), ("_record_hash", "text"), ("_row_seq", "bigint"),
                      ("_deleted_at", "timestamp with time zone")]


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
        out = ["Every layer is a schema: `raw` (records as received, one table per stream), `stg` (typed, one row"
               " per key), `mart` (business tables), `rpt` (what dashboards read), and `pipeline` (run log, dead"
               " letters, state, schema changes, alerts).\n", "### raw\n"]
        for pipeline, stream in self.streams():
            table = stream.table_name(pipeline.name)
            columns = self.live_columns(table)
            origin = "as in the database" if columns else "as elt creates it on the first run"
            columns = columns or predicted_columns(RawTable.for_stream(table, stream, self._cursor_kind(pipeline, stream)))
            body = ",\n".join(f"    {name} {kind}" for name, kind in columns)
            out.append(f"`raw.{table}` ({origin}; write strategy `{stream.strategy.value}`):\n\n```sql\n"
                       f"CREATE TABLE raw.{table} (\n{body}\n);\n```\n")
        if self.webhooks:
            out.append(webhook_docs.schema(self.webhooks, {w.table: self.live_columns(w.table) for w in self.webhooks}))
        for layer in ("stg", "mart", "rpt"):
            models = [m for m in self.graph.order() if m.schema == layer]
            if not models:
                continue
            out.append(f"### {layer}\n")
            for model in models:
                kind = CREATE_KIND[model.config.materialized]
                out.append(f"`{model.relation}` ({model.config.materialized}, from `{model.path}`):\n\n```sql\n"
                           f"CREATE {kind} {model.relation} AS\n{model.sql};\n```\n")
        return "\n".join(out)

    def _cursor_kind(self, pipeline: Pipeline, stream: Extractor) -> str | None:
        """The cursor's kind as the requirements declare it (what the first load will find)."""
        from elt.generator.samples import fields_of

        if not self.req or not stream.cursor_field:
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
        out.append("Models build in dependency order (read from the SQL), each in one transaction, tested before it"
                   " replaces the previous version:\n")
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

    def _gantt(self) -> str:
        day = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)  # any Monday: the chart shows one day's pattern, in UTC
        out = ["```mermaid", "gantt", "  title One day's runs (UTC)", "  dateFormat HH:mm", "  axisFormat %H:%M"]
        tasks = 0
        for p in self.pipelines.values():
            schedule = Schedule.of(p)
            if schedule is None:
                continue
            out.append(f"  section {_id(p.name)}")
            if p.every:
                out.append(f"  {p.name} every {p.every} :{_id(p.name)}_all, 00:00, 24h")
                tasks += 1
                continue
            moment, fires = day - dt.timedelta(microseconds=1), 0
            while fires < 24:
                nxt = schedule.next_after(moment)
                if nxt is None or nxt.astimezone(dt.UTC).date() != day.date():
                    break
                out.append(f"  {p.name} :{_id(p.name)}_{fires}, {nxt.astimezone(dt.UTC):%H:%M}, 10m")
                moment, fires, tasks = nxt, fires + 1, tasks + 1
        if not tasks:
            out.append("  section manual")
            out.append("  no scheduled pipeline :none, 00:00, 1m")
        out.append("```")
        return "\n".join(out)

    # --- 7 ----------------------------------------------------------------------------
    def reliability(self) -> str:
        return self._reliability() + (webhook_docs.RELIABILITY if self.webhooks else "")

    def _reliability(self) -> str:
        return """\
- **Run log**: every run writes a row to `pipeline.execution_log` (status running → success, partial,
  failed or skipped; rows extracted, loaded, rejected, transformed; per-stream and per-model figures; the
  error and its traceback). A killed run's row is closed as failed by the next run.
- **Dead letters**: a record that breaks its contract, key or cursor rules, or a file that cannot be read,
  goes to `pipeline.dead_letter` with the reason; the rest of the batch loads. `max_bad_ratio` decides
  whether the run ends partial or failed.
- **Idempotency**: each batch's rows and the stream's watermark (or file manifest) commit in one
  transaction; a run killed at any point and run again ends with exactly the source's records.
- **Retries**: per source, as decided in section 5; a stream that fails keeps its committed batches and
  its exact watermark, and the next run continues from there. Other streams of the pipeline still run.
- **Overlap**: one run per pipeline at a time (a database advisory lock); a second one is logged skipped.
- **Timeouts**: under `elt serve` each run is a child process stopped at its timeout ("timed out after N s")."""

    # --- 8 ----------------------------------------------------------------------------
    def monitoring(self) -> str:
        out = ["`elt check` (exit 1 when anything is wrong; `--json`) and `elt serve` (every few minutes, alerting"
               " once per problem, reminding, and saying when it is resolved) run these checks:\n"]
        for name, query in CHECK_QUERIES.items():
            out.append(f"**{name}**\n\n```sql\n{query.strip()}\n```\n")
        out.append("Stale data compares each raw table's `max(_loaded_at)` with the stream's `freshness` (default:"
                   " twice its schedule's interval); missing runs compare the last success with the next scheduled"
                   " time after it, plus a grace of half an interval (1 minute to 2 hours).")
        if self.webhooks:
            out.append(webhook_docs.monitoring(self.webhooks))
        return "\n".join(out)

    # --- 9 ----------------------------------------------------------------------------
    def runbook(self) -> str:
        return self._runbook() + (webhook_docs.runbook(self.webhooks) if self.webhooks else "")

    def _runbook(self) -> str:
        first = next(iter(self.pipelines), "PIPELINE")
        stream = next((s.name for p, s in self.streams() if p.name == first), "STREAM")
        return f"""\
- **Trigger a pipeline**: `elt run {first}` (one stream: `elt run {first} --stream {stream}`).
- **Investigate a failure**: `elt status` names the stream and the cause; `error_detail` in
  `pipeline.execution_log` has the traceback; `elt check` lists everything that is wrong now.
- **Backfill**: `elt run {first} --since 2026-01-01`; the overlap is harmless, the watermark never moves back.
- **Add a source**: write its extractor in `pipelines.py` (add it to a pipeline), `elt run` it once,
  `elt stage STREAM` for a typed staging model, then `elt docs` to redraw this document.
- **Replay dead letters**: `elt dead-letter list`, fix the contract or `transform_record`, then
  `elt dead-letter replay {first}`; `elt dead-letter resolve ID --by NAME` for records that should not load.
- **A model failed**: the last good version is still there; fix the SQL and `elt transform --select MODEL+`."""

    # --- 10 ---------------------------------------------------------------------------
    def maintenance(self) -> str:
        retention = self.req.reliability.retention_days if self.req else 365
        rows = ["| when | what |", "|---|---|",
                "| daily | read `elt check` alerts; resolve or replay dead letters older than a day |"]
        for p in self.pipelines.values():
            if p.reconcile:
                rows.append(f"| `{p.reconcile}` ({p.tz}) | key reconciliation of {p.name} (`elt reconcile {p.name}`),"
                            " run by `elt serve` |")
        rows += ["| weekly | `elt transform --full-refresh` for incremental models if sources rewrote history |",
                 f"| monthly | delete raw rows older than the {retention}-day retention: `DELETE FROM raw.<table> WHERE"
                 f" _loaded_at < now() - interval '{retention} days'` (then `VACUUM ANALYZE`) |",
                 "| quarterly | rotate the secrets in `.env`; restore a backup into a scratch database and run `elt check` |",
                 "| on upgrade | `pip install -U elt`, `elt migrate`, `elt run` one pipeline by hand |"]
        return "\n".join(rows)


def live_columns_from(loader: Any) -> Callable[[str], Columns | None]:
    def columns(table: str) -> Columns | None:
        rows = loader.query("SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = 'raw'"
                            " AND table_name = %s ORDER BY ordinal_position", (table,))
        return [(r["column_name"], r["data_type"]) for r in rows] or None
    return columns
