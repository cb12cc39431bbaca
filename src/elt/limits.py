"""What a destination's JSON column holds exactly, so that validation dead-letters a record beyond it.

The raw layer keeps every record as received; a value the destination's JSON
type would change (round, truncate) or refuse must therefore not reach it.
Each raw writer declares its column's limits as a :class:`JsonLimits`
(``RawWriter.json_limits``); ``validation.prepare`` consults it for every
record and rejects only the record that does not fit, naming the field, while
the rest of the batch loads. Writers consult the same object for the copy a
dead letter stores.
"""

from __future__ import annotations

import json
import re
from typing import Any

from elt.records import ExactNumber, exact_float

# A number a double cannot hold, or an integer beyond 64 bits, has 16 or more digits (and points)
# in a row or an exponent of three digits; a payload without either needs no walk.
_LONG_NUMBER = re.compile(rb"[0-9.]{16,}|[eE][-+]?[0-9]{3}")


class JsonLimits:
    """A JSON column that holds every valid JSON value exactly (the default). Subclasses narrow it."""

    #: The column type as a dead-letter reason names it.
    name = "the destination's JSON column"
    #: Whether it stores the character U+0000 (``\\u0000``) in strings.
    holds_nul = True
    #: The smallest and largest integer it stores exactly (None: any integer).
    integers: tuple[int, int] | None = None
    #: Whether it stores any decimal number digit for digit (False: only what a double holds).
    exact_decimals = True

    def problem(self, record: Any, payload: bytes) -> str | None:
        """Why ``record`` (serialised as ``payload``) cannot be stored exactly; None when it can."""
        if not self.holds_nul and b"\\u0000" in payload:
            return (f"record contains a NUL character (\\u0000), which {self.name} cannot store; remove it at the"
                    " source (or in the extractor) and read the record again")
        if self.limits_numbers and _LONG_NUMBER.search(payload):
            found = self._number_beyond(record, "")
            if found is not None:
                path, value, why = found
                return (f"field {path!r} = {_shorten(value)}: {why}, so it cannot be stored as received (it would"
                        " be rounded or refused). Send it as a string from the source, or turn it into one in the"
                        " extractor (a REST stream's parse_response, a SQL stream's query: CAST(... AS TEXT)),"
                        " and read the record again")
        return None

    def fits(self, payload: bytes) -> bool:
        """Whether ``payload`` (JSON text, e.g. a dead letter's copy) can go into the column unchanged."""
        if not self.holds_nul and b"\\u0000" in payload:
            return False
        if not (self.limits_numbers and _LONG_NUMBER.search(payload)):
            return True
        # Parsed digit for digit (rare: only letters with a long number get here).
        return self._number_beyond(json.loads(payload, parse_float=exact_float), "") is None

    @property
    def limits_numbers(self) -> bool:
        return self.integers is not None or not self.exact_decimals

    def _number_beyond(self, value: Any, path: str) -> tuple[str, Any, str] | None:
        """The first number in ``value`` beyond the limits: (field path, value, why), depth first."""
        if isinstance(value, dict):
            for key, item in value.items():
                found = self._number_beyond(item, f"{path}.{key}" if path else str(key))
                if found is not None:
                    return found
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                found = self._number_beyond(item, f"{path}[{i}]")
                if found is not None:
                    return found
        elif isinstance(value, int) and not isinstance(value, bool):
            if self.integers is not None and not self.integers[0] <= value <= self.integers[1]:
                low, high = self.integers
                return path, value, f"{self.name} holds integers only within {high.bit_length()} bits ({low} to {high})"
        elif isinstance(value, ExactNumber) and not self.exact_decimals:
            return path, value, f"{self.name} holds a number only as a double (about 15-17 significant digits, up to 1.8e308)"
        return None


def _shorten(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 60 else f"{text[:40]}…({len(text)} characters)"
