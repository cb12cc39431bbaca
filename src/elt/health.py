"""Health checks: what `elt check` reports and `elt serve` alerts on, computed from the database alone.

Six checks, each a question to the destination's bookkeeping store about
``pipeline.execution_log``, the raw tables or ``pipeline.dead_letter`` (never
over scheduler memory, so a dead scheduler is caught too):

1. ``failed_run`` / ``partial_run``: a failed or partial run (records rejected, a
   read that may have skipped records, a failed model) in the last 24 hours not
   followed by a successful run;
2. ``missing_run``: a scheduled pipeline whose next run after its last success
   is overdue by more than a grace period (or that never ran);
3. ``stale_data``: a stream whose last complete read is older than its
   freshness SLA;
4. ``dead_letters``: unresolved dead letters older than a day
   (``ELT_DEAD_LETTERS_AFTER``: "1h", or "0s" for any);
5. ``stuck_run``: a run still ``running`` past its pipeline's timeout;
6. ``full_refresh_overdue``: an incremental model not fully refreshed within its
   ``full_refresh_every`` (see :mod:`elt.transforms.incremental`).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from elt.loaders.base import BookkeepingStore
from elt.pipeline import Pipeline
from elt.schedules import Schedule, grace, parse_every


@dataclass(frozen=True)
class Problem:
    check: str
    subject: str
    detail: str
    since: dt.datetime | None = None

    @property
    def key(self) -> str:
        return f"{self.check}:{self.subject}"

    def as_json(self) -> dict[str, Any]:
        return {"check": self.check, "subject": self.subject, "detail": self.detail,
                "since": self.since.isoformat() if self.since else None}


def run_checks(store: BookkeepingStore, pipelines: Iterable[Pipeline], now: dt.datetime | None = None,
               watching_since: dt.datetime | None = None, project_dir: Path | None = None) -> list[Problem]:
    """Every problem found now, in check order.

    ``watching_since`` is when a scheduler started: a pipeline that never ran
    is missing only once its first run after that is overdue (without it,
    never having run is a problem at once).
    """
    now = now or dt.datetime.now(dt.UTC)
    pipelines = list(pipelines)
    problems = [*_failed(store), *_missing(store, pipelines, now, watching_since), *_stale(store, pipelines, now),
                *_dead_letters(store), *_stuck(store, pipelines, now)]
    if project_dir is not None:  # the transform layer imported only here
        from elt.transforms.incremental import overdue

        problems += [Problem("full_refresh_overdue", *p) for p in overdue(project_dir, store.model_refreshes, now)]
    return problems


def _failed(store: BookkeepingStore) -> list[Problem]:
    rows = store.recent_failures()
    return [Problem(f"{r['status']}_run", r["pipeline_name"],
                    f"{r['failures']} {r['status']} run(s) in 24 h; the last, run {r['id']}:"
                    f" {r['error_message'] or 'no message'}", r["started_at"]) for r in rows]


def _missing(store: BookkeepingStore, pipelines: list[Pipeline], now: dt.datetime,
             watching_since: dt.datetime | None) -> list[Problem]:
    runs = store.run_history()
    problems = []
    for pipeline in pipelines:
        schedule = Schedule.of(pipeline)
        if schedule is None:
            continue
        row = runs.get(pipeline.name)
        if row is None and watching_since is None:
            problems.append(Problem("missing_run", pipeline.name,
                                    f"never ran ({schedule.text}); start `elt serve`, or run it once with `elt run`"))
            continue
        if row is None:
            row = {"last_success": None, "first_run": watching_since}
        since = row["last_success"] or row["first_run"]
        due = schedule.next_after(since)
        allowed = grace(schedule.interval(since))
        if due is not None and due + allowed < now:
            what = f"last successful run started {since:%Y-%m-%d %H:%M} UTC" if row["last_success"] else "never succeeded"
            problems.append(Problem(
                "missing_run", pipeline.name,
                f"{what}; a run was due at {due.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC ({schedule.text})."
                " Is the scheduler running?",
                due))
    return problems


def freshness_sla(stream: Any, pipeline: Pipeline, now: dt.datetime) -> dt.timedelta | None:
    """The stream's freshness SLA: its own, or twice its pipeline's interval plus grace."""
    if stream.freshness:
        value = stream.freshness
        return value if isinstance(value, dt.timedelta) else parse_every(str(value))
    schedule = Schedule.of(pipeline)
    if schedule is None:
        return None
    interval = schedule.interval(now)
    return 2 * interval + grace(interval)


def _stale(store: BookkeepingStore, pipelines: list[Pipeline], now: dt.datetime) -> list[Problem]:
    """Streams whose last complete read is older than their freshness SLA.

    Measured from when the stream last finished a read without an error, not from the raw
    table's newest row: an upsert of unchanged records writes nothing, yet the data is fresh.
    """
    problems = []
    last_read = store.stream_freshness()
    for pipeline in pipelines:
        for stream in pipeline.streams:
            sla = freshness_sla(stream, pipeline, now)
            if sla is None:
                continue
            newest = last_read.get((pipeline.name, stream.name))
            if newest is None or newest < now - sla:
                age = "never read completely" if newest is None else f"last read completely {newest:%Y-%m-%d %H:%M} UTC"
                problems.append(Problem("stale_data", f"{pipeline.name}.{stream.name}",
                                        f"{age}, longer ago than its freshness SLA of {sla}", newest))
    return problems


#: How old an unresolved dead letter may get before `elt check` reports it (ELT_DEAD_LETTERS_AFTER, e.g. "1h" or "0s").
DEAD_LETTERS_AFTER = dt.timedelta(days=1)


def _dead_letters(store: BookkeepingStore) -> list[Problem]:
    setting = os.environ.get("ELT_DEAD_LETTERS_AFTER", "").strip()
    after = parse_every(setting) if setting not in ("", "0", "0s") else (dt.timedelta(0) if setting else DEAD_LETTERS_AFTER)
    rows = store.old_dead_letters(after)
    return [Problem("dead_letters", f"{r['pipeline_name']}.{r['stream_name']}",
                    f"{r['n']} unresolved dead letter(s) older than {'a day' if after == DEAD_LETTERS_AFTER else after}:"
                    " `elt dead-letter list`, then replay"
                    " or resolve", r["oldest"]) for r in rows]


def _stuck(store: BookkeepingStore, pipelines: list[Pipeline], now: dt.datetime) -> list[Problem]:
    timeouts = {p.name: p.timeout for p in pipelines}
    rows = store.open_runs()
    problems = []
    for r in rows:
        timeout = timeouts.get(r["pipeline_name"]) or dt.timedelta(hours=1)
        limit = timeout + dt.timedelta(minutes=5)  # type: ignore[operator]
        if r["started_at"] < now - limit:
            problems.append(Problem(
                "stuck_run", r["pipeline_name"],
                f"run {r['id']} (pid {r['pid']} on {r['hostname']}) has been running since"
                f" {r['started_at']:%Y-%m-%d %H:%M} UTC, past its timeout of {timeout}", r["started_at"]))
    return problems
