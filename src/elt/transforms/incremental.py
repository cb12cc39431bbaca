"""Incremental models: merge the rows in the watermark window so the table equals a full refresh of the same SQL.

Each run of an ``incremental`` model:

1. finds the window: rows whose ``watermark`` is at or past ``max(watermark)`` in
   the table, minus the model's ``lookback`` (``3d`` for a timestamp, a number for
   a numeric column), and never later than the *horizon* of the previous run: the
   start of the oldest transaction that was still running then. A load that
   started earlier but committed after that run writes ``_loaded_at`` values
   below the table's maximum; the horizon makes the next run read back to them;
2. evaluates the model's SELECT for that window only: the filter is a constant
   (``WHERE watermark >= <value>``), which PostgreSQL pushes into views and
   subqueries where it can, so a run with nothing new reads only the newest rows;
3. upserts the window's rows by ``unique_key`` (unchanged rows are not rewritten);
4. deletes the table's rows inside the window that no longer come out of the model
   (a cancelled order that a ``WHERE`` now drops, a row deleted at the source).

What an incremental run cannot see, by design: a change that does not move the
row's watermark into the window. For example a joined customer who changes
country, when the model's watermark is the *order's* timestamp; a source row
deleted, or dropped by the ``WHERE``, whose watermark in the table is older than
the window; a watermark that moves backwards. Remedies: carry the joined rows'
timestamps into the watermark (``greatest(o.updated_at, c.updated_at)``), a
longer ``lookback``, and a full refresh on a schedule (``elt transform
--full-refresh --select <model>``, e.g. weekly); set ``full_refresh_every: 7d``
on the model and ``elt check`` reports it when the last full refresh is older.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from psycopg import sql

from elt.errors import EltError
from elt.transforms.models import Model, discover, parse_duration


class IncrementalError(EltError):
    """An incremental model cannot be merged as declared."""


@dataclass
class Merged:
    rows: int  # rows inserted or changed
    deleted: int  # rows that no longer come out of the model


def merge(cur: Any, model: Model) -> Merged:
    """Merge ``model``'s window into its existing table (in the caller's transaction)."""
    target = sql.Identifier(model.schema, model.name)
    mark_name = str(model.config.watermark)
    mark = sql.Identifier(mark_name)
    cur.execute(sql.SQL("SELECT * FROM ({body}) AS m LIMIT 0").format(body=sql.SQL(model.sql)))  # type: ignore[arg-type]
    columns = [d.name for d in cur.description]
    cur.execute(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = %s::regclass"
        " AND attnum > 0 AND NOT attisdropped ORDER BY attnum", [f'"{model.schema}"."{model.name}"'])
    stored = dict(cur.fetchall())
    if columns != list(stored):
        raise IncrementalError(
            f"{model.path}: the SELECT's columns ({', '.join(columns)}) differ from {model.relation}'s"
            f" ({', '.join(stored)}); rebuild it with `elt transform --full-refresh --select {model.relation}`")
    if mark_name not in stored:
        raise IncrementalError(f"{model.path}: watermark {mark_name} is not a column of the SELECT; name one of"
                               f" {', '.join(columns)}")
    cur.execute(sql.SQL("SELECT max({mark}) FROM {t}").format(mark=mark, t=target))
    newest = cur.fetchone()[0]
    cur.execute("SELECT horizon FROM pipeline.model_state WHERE relation = %s", [model.relation])
    row = cur.fetchone()
    since = window_start(model, newest, row[0] if row else None, stored[mark_name])
    horizon = read_horizon(cur)  # before the window is read: see read_horizon

    keys = list(model.config.unique_key)
    cols = sql.SQL(", ").join(map(sql.Identifier, columns))
    where = sql.SQL("") if since is None else sql.SQL(" WHERE m.{mark} >= {since}").format(mark=mark, since=sql.Literal(since))
    # The window's rows, evaluated once: merged, then used to find rows that are gone.
    cur.execute("DROP TABLE IF EXISTS pg_temp.elt_window")  # never a user table of that name elsewhere
    cur.execute(sql.SQL("CREATE TEMP TABLE elt_window ON COMMIT DROP AS SELECT {cols} FROM ({body}) AS m{where}").format(
        cols=cols, body=sql.SQL(model.sql), where=where))  # type: ignore[arg-type]
    rest = [c for c in columns if c not in keys]
    if rest:
        excluded = sql.SQL(", ").join(sql.SQL("EXCLUDED.{}").format(sql.Identifier(c)) for c in rest)
        current = sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in rest)
        # Rows that come back identical are not rewritten (and not counted).
        action: sql.Composable = sql.SQL("DO UPDATE SET ({cols}) = ROW({ex}) WHERE ({cur}) IS DISTINCT FROM ({ex})").format(
            cols=sql.SQL(", ").join(map(sql.Identifier, rest)), ex=excluded, cur=current)
    else:
        action = sql.SQL("DO NOTHING")
    key_list = sql.SQL(", ").join(map(sql.Identifier, keys))
    cur.execute(sql.SQL("INSERT INTO {t} AS t ({cols}) SELECT {cols} FROM pg_temp.elt_window"
                        " ON CONFLICT ({keys}) {action}").format(t=target, cols=cols, keys=key_list, action=action))
    rows = max(cur.rowcount, 0)
    deleted = 0
    if since is not None:
        match = sql.SQL(" AND ").join(sql.SQL("w.{c} = t.{c}").format(c=sql.Identifier(k)) for k in keys)
        # Inside the window the model's output is complete: a row of the table it no longer yields is gone.
        cur.execute(sql.SQL("DELETE FROM {t} AS t WHERE t.{mark} >= {since}"
                            " AND NOT EXISTS (SELECT 1 FROM pg_temp.elt_window AS w WHERE {match})").format(
            t=target, mark=mark, since=sql.Literal(since), match=match))
        deleted = max(cur.rowcount, 0)
    record(cur, model, horizon, full_refresh=False)
    return Merged(rows, deleted)


def window_start(model: Model, newest: Any, horizon: dt.datetime | None, type_name: str) -> Any:
    """The smallest watermark the run re-reads; None (everything) when the table is empty."""
    if newest is None:
        return None
    lookback = model.config.lookback
    if isinstance(newest, dt.datetime):
        since = newest - dt.timedelta(seconds=parse_duration(lookback)) if lookback else newest
        # The horizon is a point in time: it bounds timestamptz watermarks (like _loaded_at).
        if horizon is not None and newest.tzinfo is not None:
            since = min(since, horizon - dt.timedelta(seconds=parse_duration(lookback) if lookback else 0))
        return since
    if isinstance(newest, dt.date):
        days = math.ceil(parse_duration(lookback) / 86400) if lookback else 0
        return newest - dt.timedelta(days=days)
    if isinstance(newest, (int, float, decimal.Decimal)):
        if not lookback:
            return newest
        try:
            amount = decimal.Decimal(lookback)
        except decimal.InvalidOperation:
            raise IncrementalError(f"{model.path}: lookback {lookback!r} is a duration, but watermark"
                                   f" {model.config.watermark} is {type_name}; give a number") from None
        step: Any = int(amount) if isinstance(newest, int) and amount == int(amount) else type(newest)(amount)
        return newest - step
    if lookback:
        raise IncrementalError(f"{model.path}: lookback needs a timestamp, date or numeric watermark;"
                               f" {model.config.watermark} is {type_name}")
    return newest


def read_horizon(cur: Any) -> dt.datetime:
    """A time no later than the start of any transaction whose rows the coming read may miss.

    Called before the read: a transaction still running at the read either runs now (its start
    is at or after the oldest one running) or starts later (after the clock read here).
    """
    # Seeing other roles' transactions needs pg_read_all_stats (superusers and Supabase's postgres have it).
    cur.execute(
        "SELECT least(clock_timestamp(), min(xact_start)) FROM pg_stat_activity WHERE datname = current_database()"
        " AND pid <> pg_backend_pid() AND xact_start IS NOT NULL AND backend_type = 'client backend'")
    return cur.fetchone()[0]


def record(cur: Any, model: Model, horizon: dt.datetime, *, full_refresh: bool) -> None:
    """Remember this build in ``pipeline.model_state`` (same transaction as the data)."""
    cur.execute(
        "INSERT INTO pipeline.model_state AS s (relation, full_refresh_at, merged_at, horizon)"
        " VALUES (%(r)s, CASE WHEN %(full)s THEN now() END, CASE WHEN NOT %(full)s THEN now() END, %(h)s)"
        " ON CONFLICT (relation) DO UPDATE SET horizon = EXCLUDED.horizon,"
        "   full_refresh_at = coalesce(EXCLUDED.full_refresh_at, s.full_refresh_at),"
        "   merged_at = coalesce(EXCLUDED.merged_at, s.merged_at)",
        {"r": model.relation, "full": full_refresh, "h": horizon})


def overdue(project_dir: Path, full_refreshes: Callable[[list[str]], dict[str, Any]],
            now: dt.datetime | None = None) -> list[tuple[str, str, Any]]:
    """``(model, detail, since)`` for each incremental model of the project whose last full refresh is
    older than its ``full_refresh_every`` (an ``elt check`` problem). ``full_refreshes(relations)`` says
    when each was last fully refreshed: the destination's ``store.model_refreshes``."""
    now = now or dt.datetime.now(dt.UTC)
    wanted = [m for m in discover(project_dir) if m.config.materialized == "incremental" and m.config.full_refresh_every]
    if not wanted:
        return []
    refreshed = full_refreshes([m.relation for m in wanted])
    problems = []
    for model in wanted:
        every = dt.timedelta(seconds=parse_duration(str(model.config.full_refresh_every)))
        last = refreshed.get(model.relation)
        if last is None or now - last > every:
            when = "never" if last is None else f"last on {last:%Y-%m-%d %H:%M} UTC"
            problems.append((model.relation,
                             f"incremental model not fully refreshed for longer than {model.config.full_refresh_every}"
                             f" ({when}); changes outside its window are missing until you run"
                             f" `elt transform --full-refresh --select {model.relation}` (schedule it)", last))
    return problems
