"""Dependent transforms of a webhook source: built after new events, at most once per ``transform_every``."""

from __future__ import annotations

import time
from pathlib import Path

from elt.webhooks.source import WebhookSource
from elt.webhooks.triggers import TransformTrigger


class CountingTrigger(TransformTrigger):
    """The real trigger thread and timing; the build (a child `elt transform`, tested in test_cli) only recorded."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.built: list[tuple[str, float]] = []

    def _build(self, source: WebhookSource) -> None:
        self.built.append((source.table, time.monotonic()))


def test_new_events_build_at_most_once_per_transform_every_and_quiet_sources_not_at_all(tmp_path: Path) -> None:
    busy = WebhookSource("busy", "/busy", signature=None, transforms=True, transform_every=1.0)
    quiet = WebhookSource("quiet", "/quiet", signature=None, transforms=True, transform_every=1.0)
    off = WebhookSource("off", "/off", signature=None, transforms=False)
    trigger = CountingTrigger(tmp_path, [busy, quiet, off], poll=0.05)
    assert set(trigger.sources) == {"busy_events", "quiet_events"}
    trigger.start()
    try:
        started = time.monotonic()
        while time.monotonic() - started < 3.2:  # events arrive all the time for 3.2 s
            trigger.new_events({"busy_events", "off_events"})
            time.sleep(0.01)
        time.sleep(1.3)  # the last events are built after the interval too
    finally:
        trigger.stop()
    builds = [t for table, t in trigger.built if table == "busy_events"]
    assert 3 <= len(builds) <= 5
    assert all(b - a >= 0.95 for a, b in zip(builds, builds[1:], strict=False))
    assert not [t for table, t in trigger.built if table != "busy_events"]
