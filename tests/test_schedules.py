"""Schedules: cron with a time zone, every=..., and the errors a wrong one gets at import time."""

from __future__ import annotations

import datetime as dt

import pytest

from elt import Pipeline
from elt.errors import ConfigError
from elt.schedules import Schedule, grace, parse_every


def test_cron_in_a_time_zone():
    schedule = Schedule.of(Pipeline("daily", schedule="0 6 * * *", tz="Australia/Sydney"))
    # 2026-11-25 20:00 UTC is 07:00 on the 26th in Sydney (UTC+11): the next 06:00 there is on the 27th.
    nxt = schedule.next_after(dt.datetime(2026, 11, 25, 20, 0, tzinfo=dt.UTC))
    assert nxt.astimezone(dt.UTC) == dt.datetime(2026, 11, 26, 19, 0, tzinfo=dt.UTC)
    assert schedule.interval(nxt) == dt.timedelta(days=1)
    assert schedule.text == "cron 0 6 * * * (Australia/Sydney)"


def test_every():
    schedule = Schedule.of(Pipeline("often", every="15m"))
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    assert schedule.next_after(start) == start + dt.timedelta(minutes=15)
    assert parse_every("2h") == dt.timedelta(hours=2) and parse_every("30s") == dt.timedelta(seconds=30)
    assert Schedule.of(Pipeline("manual")) is None
    assert grace(dt.timedelta(days=1)) == dt.timedelta(hours=2) and grace(dt.timedelta(seconds=10)) == dt.timedelta(minutes=1)


@pytest.mark.parametrize("settings, message", [
    ({"schedule": "0 25 * * *"}, "schedule '0 25 \\* \\* \\*'"),
    ({"schedule": "0 6 * * *", "tz": "Mars/Olympus"}, "tz 'Mars/Olympus'"),
    ({"every": "fortnightly"}, "every='fortnightly': write a positive number and a unit"),
    ({"every": "15m", "schedule": "* * * * *"}, "give schedule \\(cron\\) or every, not both"),
])
def test_a_wrong_schedule_fails_when_the_pipeline_is_declared(settings, message):
    with pytest.raises(ConfigError, match=message):
        Pipeline("bad", **settings)
