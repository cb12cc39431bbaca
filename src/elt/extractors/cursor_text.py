"""A cursor value written back in the textual form the source itself uses.

Many APIs compare an ``updated_since`` parameter as a string. Sending
``2024-06-30T23:59:59+00:00`` to an API whose values read
``2024-06-30T23:59:59.000Z`` then selects the wrong records (``+`` sorts
before ``.``). So a REST stream remembers one cursor value as the source wrote
it and formats the watermark the same way: the same date/time separator, the
same number of fraction digits, ``Z`` or the same offset (with or without a
colon), or no zone at all.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

_TIMESTAMP = re.compile(
    r"^(?P<date>\d{4}-\d{2}-\d{2})(?P<sep>[T ])(?P<hm>\d{2}:\d{2})(?P<sec>:\d{2})?(?P<frac>\.\d+)?"
    r"(?P<zone>Z|z|[+-]\d{2}(?::?\d{2})?)?$"
)
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def text_like(value: Any, sample: str | None) -> str | None:
    """``value`` (a datetime or date) written like ``sample``; ``None`` when the sample's form is not known."""
    if not sample or not isinstance(value, dt.date):
        return None
    if _DATE.match(sample):
        return (value.date() if isinstance(value, dt.datetime) else value).isoformat()
    match = _TIMESTAMP.match(sample)
    if match is None:
        return None
    if not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
    zone = match["zone"]
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)  # elt reads zoneless values as UTC
    if zone in (None, "Z", "z"):
        value = value.astimezone(dt.UTC)
        suffix = zone or ""
    else:
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        hours, minutes = int(digits[:2]), int(digits[2:4] or 0)
        value = value.astimezone(dt.timezone(sign * dt.timedelta(hours=hours, minutes=minutes)))
        suffix = zone[0] + f"{hours:02d}" + (":" if ":" in zone else "") + (f"{minutes:02d}" if len(digits) > 2 else "")
    text = value.strftime("%Y-%m-%d") + match["sep"] + value.strftime("%H:%M")
    if match["sec"]:
        text += value.strftime(":%S")
    if match["frac"]:
        # Truncated, not rounded: a rounded-up bound would skip the records in between.
        digits = len(match["frac"]) - 1
        text += "." + f"{value.microsecond:06d}"[:digits].ljust(digits, "0")
    return text + suffix
