"""Records as data: canonical JSON, record hashes and typed cursor values.

A record is a plain ``dict`` as received. The raw layer stores it as JSON; its
hash (of the canonical, key-sorted JSON) tells whether a row changed, which is
how every write strategy makes a re-loaded overlap harmless.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import hashlib
import json
import math
import re
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import orjson

_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS | orjson.OPT_UTC_Z


class ExactNumber(decimal.Decimal):
    """A JSON number a float would change (more digits than a double holds, or beyond its range).

    Read from a source's JSON (see ``RestExtractor``) and written back as the
    same number, so the payload keeps every digit the source sent.
    """


def _default(value: Any) -> Any:
    if isinstance(value, ExactNumber):
        return orjson.Fragment(str(value).encode())
    if isinstance(value, decimal.Decimal):
        # Keep every digit: a JSON string is exact where a float would not be.
        return str(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    raise TypeError(f"cannot store a value of type {type(value).__name__} as JSON")


def to_json(record: Any) -> bytes:
    """Canonical JSON bytes (sorted keys, ISO timestamps) of ``record``.

    JSON has no NaN or infinity, and orjson writes them as ``null``, which would
    silently turn a value into a missing one. They are kept as the strings
    ``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` instead (the forms SqlExtractor
    uses too). Only a payload that holds a ``null`` is checked, so the common
    path pays one substring search.

    orjson refuses integers beyond 64 bits and nesting deeper than 254 levels,
    both valid JSON that jsonb stores exactly; such a record is written by the
    standard library instead, so it is stored as received rather than rejected.
    A record nested too deep even for that raises ``TypeError`` (a dead letter).
    """
    try:
        payload = orjson.dumps(record, default=_default, option=_OPTIONS)
    except orjson.JSONEncodeError as exc:
        if str(exc) not in _ORJSON_LIMITS:
            raise
        return _stdlib_json(record)
    if b"null" in payload:
        kept = _non_finite_as_text(record)
        if kept is not record:
            payload = orjson.dumps(kept, default=_default, option=_OPTIONS)
    return payload


_NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
_ORJSON_LIMITS = {"Integer exceeds 64-bit range", "Recursion limit reached"}


def exact_float(text: str) -> float | ExactNumber:
    """``parse_float`` for ``json.loads``: a float where the float is the number written, else an ExactNumber.

    A double holds 15-17 significant digits; a number that comes back from its
    float as the same value (``0.1``, ``19.990``) stays a float, so it is written
    exactly as the fast JSON path writes it, whichever path read it.
    """
    value = float(text)
    if math.isfinite(value) and decimal.Decimal(repr(value)) == decimal.Decimal(text):
        return value
    return ExactNumber(text)


#: How deep a JSON body is read when it is deeper than the parsers go (orjson stops at 1,024 levels,
#: the standard library at Python's recursion limit). Each value that starts deeper is replaced
#: by a marker, so the rest of the page is read and only its record is dead-lettered. Well inside
#: the depth elt writes records at (about 450 levels), so the dead letter keeps the rest of the record.
MAX_READ_DEPTH = 256
_DEEP_TOKEN = uuid.uuid4().hex
_DEEP_MARKED = re.compile(rb"\\u0000elt-too-deep-" + _DEEP_TOKEN.encode() + rb":(\d+)")
# A JSON string (escapes included) or a bracket: all that depth depends on.
_JSON_NESTING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


def cap_depth(content: bytes, limit: int = MAX_READ_DEPTH) -> bytes:
    """``content`` (JSON) with every value that starts deeper than ``limit`` replaced by a marker string
    holding the depth it reached (see :func:`too_deep`); ``content`` itself when none does."""
    pieces: list[bytes] = []
    depth = deepest = last = 0
    start = -1
    for token in _JSON_NESTING.finditer(content):
        char = token.group()
        if char in (b"[", b"{"):
            depth += 1
            if depth > limit:
                if start < 0:
                    start = token.start()
                deepest = max(deepest, depth)
        elif char in (b"]", b"}"):
            if start >= 0 and depth == limit + 1:
                marker = f'"\\u0000elt-too-deep-{_DEEP_TOKEN}:{deepest}"'.encode()
                pieces += [content[last:start], marker]
                last, start, deepest = token.end(), -1, 0
            depth -= 1
    if not pieces:
        return content
    pieces.append(content[last:])
    return b"".join(pieces)


def loads_capped(content: str | bytes, loads: Callable[[bytes], Any] = json.loads) -> Any:
    """``loads`` of JSON that was too deep for it (it raised RecursionError), with every value deeper
    than ``MAX_READ_DEPTH`` cut out (:func:`cap_depth`): only the records holding one are then lost,
    dead-lettered by validation, not the whole page or file."""
    data = content.encode("utf-8", "surrogatepass") if isinstance(content, str) else content
    return loads(cap_depth(data))


def too_deep(payload: bytes) -> int | None:
    """The depth a source's value reached where :func:`cap_depth` cut it from this record's JSON, or None."""
    # Every record of every load passes here: a plain bytes search turns nearly all away, far
    # cheaper than the regex (the marker always starts with an escaped NUL, which real data rarely has).
    if b"\\u0000elt-too-deep-" not in payload:
        return None
    found = _DEEP_MARKED.search(payload)
    return int(found.group(1)) if found else None


# The standard library cannot write a number from its digits: an ExactNumber goes out as a
# string marked with a token no source can guess, and the mark is replaced by the bare digits.
_EXACT_TOKEN = uuid.uuid4().hex
_EXACT_MARK = f"\x00elt-exact-{_EXACT_TOKEN}:"
_EXACT_MARKED = re.compile(r'"\\u0000elt-exact-' + _EXACT_TOKEN + r':([-+.0-9Ee]+)"')


def _stdlib_default(value: Any) -> Any:
    if isinstance(value, ExactNumber):
        return _EXACT_MARK + str(value)
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        # The same text orjson writes, so the record hash does not depend on which path wrote it.
        return orjson.dumps(value, option=orjson.OPT_UTC_Z).decode()[1:-1]
    if isinstance(value, uuid.UUID):
        return str(value)
    return _default(value)


def _stdlib_json(record: Any) -> bytes:
    """Canonical JSON of a record orjson cannot write (a huge integer, deep nesting)."""
    try:
        text = json.dumps(_non_finite_as_text(record), default=_stdlib_default, sort_keys=True, ensure_ascii=False,
                          allow_nan=False, separators=(",", ":"))
        return _EXACT_MARKED.sub(r"\1", text).encode("utf-8")
    except RecursionError:
        raise TypeError("record is nested too deeply to store as JSON") from None
    except UnicodeEncodeError:
        raise TypeError("str is not valid UTF-8: surrogates not allowed") from None


def _non_finite_as_text(value: Any) -> Any:
    """``value`` with NaN and infinite floats as text; the same object when it holds none."""
    if isinstance(value, float):
        return value if math.isfinite(value) else _NON_FINITE[repr(value)]
    if isinstance(value, dict):
        changed = {k: _non_finite_as_text(v) for k, v in value.items()}
        return changed if any(changed[k] is not v for k, v in value.items()) else value
    if isinstance(value, (list, tuple)):
        items = [_non_finite_as_text(v) for v in value]
        return items if any(a is not b for a, b in zip(items, value, strict=True)) else value
    return value


def record_hash(payload: bytes) -> str:
    """The hash stored in ``_record_hash``: md5 of the canonical JSON (change detection, not security)."""
    return hashlib.md5(payload, usedforsecurity=False).hexdigest()


# --- typed cursor and key values ------------------------------------------------


class CursorTypeError(ValueError):
    """A cursor value cannot be compared with the stream's cursor type."""


def cursor_kind(value: Any) -> str:
    """Classify a cursor value: ``integer``, ``number``, ``timestamp``, ``date`` or ``text``."""
    if isinstance(value, bool):
        return "text"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, (float, decimal.Decimal)):
        return "number"
    if isinstance(value, dt.datetime):
        return "timestamp"
    if isinstance(value, dt.date):
        return "date"
    if isinstance(value, str):
        try:
            parse_timestamp(value)
            return "timestamp"
        except ValueError:
            return "text"
    return "text"


def parse_timestamp(text: str) -> dt.datetime:
    """Parse an ISO-8601 timestamp; a value without zone is taken as UTC."""
    if len(text) < 10 or text[4] != "-":
        raise ValueError(f"not an ISO-8601 timestamp: {text!r}")
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value


def coerce_cursor(value: Any, kind: str) -> Any:
    """Turn a record's cursor value into a comparable Python value of ``kind``."""
    try:
        if kind == "integer":
            if isinstance(value, bool):
                raise TypeError
            if isinstance(value, int):
                return value
            # int() would truncate 3.7 to 3 and move the watermark past records at 3.x.
            number = decimal.Decimal(str(value).strip()) if isinstance(value, str) else decimal.Decimal(value)
            if not number.is_finite() or number != number.to_integral_value():
                raise ValueError("not a whole number")
            return int(number)
        if kind == "number":
            return decimal.Decimal(str(value))
        if kind == "timestamp":
            if isinstance(value, dt.datetime):
                return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
            if isinstance(value, dt.date):
                return dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
            return parse_timestamp(str(value))
        if kind == "date":
            if isinstance(value, dt.datetime):
                return value.date()
            if isinstance(value, dt.date):
                return value
            return dt.date.fromisoformat(str(value))
        return str(value)
    except (TypeError, ValueError, decimal.InvalidOperation) as exc:
        raise CursorTypeError(f"cursor value {value!r} is not a valid {kind}") from exc


def key_bytes_over(texts: Sequence[str], limit: int) -> list[int] | None:
    """Each key field's size in UTF-8 bytes when together they exceed ``limit`` (what an index holds); else None.

    Characters are counted first (at most 4 bytes each): nearly every key stops there.
    """
    if sum(map(len, texts)) * 4 <= limit:
        return None
    # A lone surrogate is counted as written; it is rejected later, as text PostgreSQL cannot hold.
    sizes = [len(text.encode("utf-8", "surrogatepass")) for text in texts]
    return sizes if sum(sizes) > limit else None


def key_text(value: Any) -> str:
    """The text form of a primary-key value as stored in the raw table's key column."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, decimal.Decimal, uuid.UUID)):
        return str(value)
    if isinstance(value, float):
        return repr(value) if not value.is_integer() else str(int(value))
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        # One instant, one text: the zone a source session happened to use must not make a new key.
        return value.astimezone(dt.UTC).isoformat()
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    return to_json(value).decode()
