"""When pipelines are due: cron expressions with a time zone, or ``every="15m"``.

One place turns a pipeline's ``schedule``/``every``/``tz`` into an APScheduler
3 trigger. The scheduler (`elt serve`) fires it; the health checks (`elt
check`) ask it when a run should have happened, from the run log alone.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from elt.errors import ConfigError
from elt.pipeline import Pipeline

_EVERY = re.compile(r"^\s*(\d+)\s*(s|sec|m|min|h|d)\s*$")
_UNIT = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def parse_every(text: str) -> dt.timedelta:
    """``"30s"``, ``"15m"``, ``"6h"``, ``"1d"`` as a timedelta."""
    match = _EVERY.match(text or "")
    if not match or int(match.group(1)) <= 0:
        raise ConfigError(f"every={text!r}: write a positive number and a unit, like '30s', '15m', '6h' or '1d'")
    return dt.timedelta(seconds=int(match.group(1)) * _UNIT[match.group(2)])


@dataclass(frozen=True)
class Schedule:
    """A pipeline's trigger and how it reads to a person."""

    trigger: BaseTrigger
    text: str

    @classmethod
    def of(cls, pipeline: Pipeline) -> Schedule | None:
        """The pipeline's schedule; ``None`` for pipelines run by hand or only ``after`` others."""
        label = f"pipeline {pipeline.name!r}"
        if pipeline.schedule and pipeline.every:
            raise ConfigError(f"{label}: give schedule (cron) or every, not both")
        try:
            if pipeline.schedule:
                trigger = CronTrigger.from_crontab(pipeline.schedule, timezone=pipeline.tz)
                return cls(trigger, f"cron {pipeline.schedule} ({pipeline.tz})")
            if pipeline.every:
                every = parse_every(pipeline.every)
                return cls(IntervalTrigger(seconds=int(every.total_seconds()), timezone=pipeline.tz),
                           f"every {pipeline.every.strip()}")
        except ConfigError:
            raise
        except (ValueError, LookupError) as exc:
            raise ConfigError(f"{label}: schedule {pipeline.schedule!r} with tz {pipeline.tz!r}: {exc}") from None
        return None

    @classmethod
    def reconcile_of(cls, pipeline: Pipeline) -> Schedule | None:
        """When the pipeline's key reconciliation runs (its own, slower schedule)."""
        if not pipeline.reconcile:
            return None
        try:
            trigger = CronTrigger.from_crontab(pipeline.reconcile, timezone=pipeline.tz)
        except (ValueError, LookupError) as exc:
            raise ConfigError(f"pipeline {pipeline.name!r}: reconcile={pipeline.reconcile!r}: {exc}") from None
        return cls(trigger, f"cron {pipeline.reconcile} ({pipeline.tz})")

    def next_after(self, moment: dt.datetime) -> dt.datetime | None:
        """The first fire time strictly after ``moment``."""
        if isinstance(self.trigger, IntervalTrigger):
            return moment + self.trigger.interval
        return self.trigger.get_next_fire_time(None, moment + dt.timedelta(microseconds=1))

    def interval(self, around: dt.datetime) -> dt.timedelta:
        """The gap between two fire times near ``around`` (for grace periods and freshness defaults)."""
        if isinstance(self.trigger, IntervalTrigger):
            return self.trigger.interval
        first = self.next_after(around)
        second = self.next_after(first) if first else None
        return (second - first) if first and second else dt.timedelta(days=1)


def grace(interval: dt.timedelta) -> dt.timedelta:
    """How late a run may be before it counts as missing: half an interval, between 1 minute and 2 hours."""
    return min(max(interval / 2, dt.timedelta(minutes=1)), dt.timedelta(hours=2))
