"""Schema drift: which top-level fields a stream's records carry, and what changed.

Nothing is ever dropped because of drift (records keep every field in
``_raw_payload``); changes are recorded in ``pipeline.schema_changes`` and
logged, so the person who owns the staging model hears about them.
"""

from __future__ import annotations

from elt.loaders.base import SchemaChange

# A field seen as integer and as number is a number, not a type change.
_WIDER = {frozenset({"integer", "number"}): "number"}


def _type_name(types: set[type]) -> str:
    names = {_TYPE_NAMES.get(t.__name__, t.__name__) for t in types}
    if len(names) == 1:
        return names.pop()
    return _WIDER.get(frozenset(names), "|".join(sorted(names)))


_TYPE_NAMES = {
    "int": "integer", "float": "number", "Decimal": "number", "str": "string", "bool": "boolean",
    "dict": "object", "list": "array", "tuple": "array", "datetime": "string", "date": "string",
    "time": "string", "UUID": "string",
}


def diff_fields(known: dict[str, str], seen: dict[str, set[type]]) -> tuple[list[SchemaChange], dict[str, str]]:
    """Compare the fields ``seen`` in a batch with those ``known``; return changes and the new known set."""
    changes: list[SchemaChange] = []
    updated = dict(known)
    first = not known
    for field, types in seen.items():
        new_type = _type_name(types)
        old_type = known.get(field)
        if old_type is None:
            changes.append(SchemaChange(field, "initial" if first else "added", None, new_type))
            updated[field] = new_type
        elif old_type != new_type:
            merged = _WIDER.get(frozenset({old_type, new_type}))
            if merged == old_type:
                continue
            changes.append(SchemaChange(field, "type_changed", old_type, new_type))
            updated[field] = merged or new_type
    return changes, updated
