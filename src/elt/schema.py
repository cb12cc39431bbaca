"""Schema drift: which top-level fields a stream's records carry, with every type each has shown.

Nothing is ever dropped because of drift (records keep every field in
``_raw_payload``); changes are recorded in ``pipeline.schema_changes`` and
logged, so the person who owns the staging model hears about them.

A field's observed types accumulate per stream, so a change is recorded once:
when a field appears, when a whole read no longer carries it, or when it
shows a type never seen before. A field that is sometimes a number and
sometimes a string is recorded once, not on every run.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from elt.loaders.base import SchemaChange

_TYPE_NAMES = {
    "int": "integer", "float": "number", "Decimal": "number", "str": "string", "bool": "boolean",
    "dict": "object", "list": "array", "tuple": "array", "datetime": "string", "date": "string",
    "time": "string", "UUID": "string",
}


def _names(types: set[type]) -> set[str]:
    return {_TYPE_NAMES.get(t.__name__, t.__name__) for t in types}


def _known(value: Any) -> set[str]:
    """The types stored for a field: a list now, a ``"a|b"`` string in state written by older versions."""
    if isinstance(value, list):
        return set(value)
    return set(str(value).split("|")) if value else set()


def _new(seen: set[str], known: set[str]) -> set[str]:
    # An integer where numbers were seen is a number like the others, not a new type.
    fresh = seen - known
    if "number" in known:
        fresh.discard("integer")
    return fresh


def diff_fields(known: dict[str, Any], seen: dict[str, set[type]]) -> tuple[list[SchemaChange], dict[str, Any]]:
    """Compare the fields ``seen`` in a batch with those ``known``; return changes and the new known set."""
    changes: list[SchemaChange] = []
    updated = dict(known)
    first = not known
    for field, types in seen.items():
        names = _names(types)
        if not names:
            continue  # only nulls so far: its type is not known yet
        if field not in known:
            changes.append(SchemaChange(field, "initial" if first else "added", None, "|".join(sorted(names))))
            updated[field] = sorted(names)
            continue
        old = _known(known[field])
        fresh = _new(names, old)
        if fresh:
            changes.append(SchemaChange(field, "type_changed", "|".join(sorted(old)), "|".join(sorted(old | fresh))))
        if fresh or not isinstance(known[field], list):
            updated[field] = sorted(old | fresh)
    return changes, updated


def removed_fields(known: dict[str, Any], seen: Iterable[str]) -> list[SchemaChange]:
    """Fields known before that no record of a whole, complete read carried."""
    present = set(seen)
    return [SchemaChange(field, "removed", "|".join(sorted(_known(types))), None)
            for field, types in known.items() if field not in present]
