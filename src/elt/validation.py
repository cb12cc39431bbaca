"""Turn a batch of records as received into rows ready to load, and rejects.

This is the runner's "validate" step, shared by normal runs and dead-letter
replays: apply the stream's ``transform_record`` hook, check the record
contract, the primary key, cursor and partition fields, then serialise to
canonical JSON and hash. Nothing here talks to a database.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from elt.extractors.base import Extractor
from elt.records import (
    MAX_READ_DEPTH,
    CursorTypeError,
    coerce_cursor,
    cursor_kind,
    key_bytes_over,
    key_text,
    record_hash,
    to_json,
    too_deep,
)
from elt.state import FUTURE_TOLERANCE, beyond_the_clock, clock_ceiling

if TYPE_CHECKING:
    from elt.loaders.base import RawWriter


@dataclass
class Rejected:
    """A record that cannot be loaded, with the reason for ``pipeline.dead_letter``."""

    record: Any
    reason: str
    detail: dict[str, Any] = field(default_factory=dict)
    #: Position of the record in the list given to :func:`prepare`.
    index: int = -1
    #: ``record`` (replayable once the code is fixed) or ``problem`` (something the extractor
    #: could not read, such as a bad file or a ragged line: there is no record to replay).
    kind: str = "record"


@dataclass
class PreparedBatch:
    """Rows in the raw table's column order, plus what the batch tells about the stream.

    Each row is ``(*keys, cursor, partition, *sources, payload_json, record_hash)`` as text.
    """

    rows: list[tuple[str | None, ...]]
    rejected: list[Rejected]
    high_water: Any
    low_water: Any
    cursor_kind: str | None
    fields: dict[str, set[type]]
    #: Every row has a different key (known only for keyed strategies, else False):
    #: the loader can skip sorting the batch to keep the last version of each key.
    unique_keys: bool = False
    #: Rows that repeat a key of this batch (keyed strategies): only the last version is written.
    collapsed: int = 0
    #: The largest step backwards of the cursor within the batch (None: never went back).
    drop: Any = None


def _contract_errors(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {"field": ".".join(str(p) for p in err.get("loc", ())), "message": err.get("msg"), "type": err.get("type")}
        for err in exc.errors(include_url=False, include_input=False)
    ]


def _key_too_long(extractor: Extractor, key_values: list[str], limit: int, why: str) -> str | None:
    """Why a key is too long for the destination to index (see ``RawWriter.max_key_bytes``), or None."""
    sizes = key_bytes_over(key_values, limit)
    if sizes is None:
        return None
    parts = " + ".join(f"{name!r} {size:,} bytes" for name, size in zip(extractor.key_fields, sizes, strict=True))
    return (f"stream {extractor.name!r}: primary key {parts} is longer than the {limit:,} bytes a key may take here"
            f" ({why}); key the stream on something shorter, e.g. a hash of the field (add it in transform_record"
            " and name it as the primary_key), and replay this record")


def prepare(extractor: Extractor, records: list[Any], kind: str | None,
            destination: RawWriter | type[RawWriter]) -> PreparedBatch:
    """Validate and serialise ``records`` for ``extractor``'s stream.

    ``kind`` is the cursor's known kind (from stored state), or ``None`` to
    infer it from the first cursor value seen. ``destination`` is the raw writer
    the rows are for (or its class): what it declares it cannot store (``json_limits``,
    ``max_key_bytes``) is rejected here, per record, naming the field.
    """
    keys = extractor.key_fields
    cursor = extractor.cursor_field
    strategy = extractor.strategy
    partition = extractor.partition_by if strategy.needs_partition else None
    contract = extractor.contract
    transform = extractor.transform_record if type(extractor).transform_record is not Extractor.transform_record else None
    source_fields = tuple(extractor.source_fields)
    # Built here, in the reading thread, rather than by the loader while the server waits.
    keyed = bool(keys) and strategy.keyed
    # Only a key the destination indexes (to match versions on it) is limited in length.
    key_limit, key_limit_why = None, ""
    if keys and (strategy.keyed or strategy.latest_view):
        key_limit, key_limit_why = destination.max_key_bytes, destination.max_key_bytes_why
    limits = destination.json_limits
    scan_numbers = limits.limits_numbers
    seen_keys: set[tuple[str, ...]] = set()

    rows: list[tuple[str | None, ...]] = []
    rejected: list[Rejected] = []
    high: Any = None
    low: Any = None
    drop: Any = None
    fields: dict[str, set[type]] = {}
    last_shape: tuple[str, ...] = ()
    ceiling = clock_ceiling()

    for index, received in enumerate(records):
        # Where-it-came-from fields go to their own columns; the payload stays as received.
        # `received` (with them) is what a dead letter keeps, so it still says where the record was.
        clean = received
        sources: tuple[str | None, ...] = ()
        if source_fields and isinstance(received, dict):
            clean = dict(received)
            sources = tuple(None if (v := clean.pop(f, None)) is None else str(v) for f in source_fields)
        record = clean
        if transform is not None:
            try:
                record = transform(clean)
            except Exception as exc:  # the user's hook: any failure rejects only this record
                rejected.append(
                    Rejected(received, f"transform_record failed: {type(exc).__name__}: {exc}",
                             {"traceback": traceback.format_exc(limit=5)}, index=index)
                )
                continue
        if not isinstance(record, dict):
            rejected.append(Rejected(received, f"record is a {type(record).__name__}, not an object (dict)", index=index))
            continue
        if contract is not None:
            try:
                contract.model_validate(record)
            except ValidationError as exc:
                errors = _contract_errors(exc)
                summary = "; ".join(f"{e['field'] or '(record)'}: {e['message']}" for e in errors[:5])
                rejected.append(Rejected(received, f"contract {contract.__name__} rejected the record: {summary}",
                                         {"errors": errors}, index=index))
                continue

        key_values: list[str] = []
        missing = None
        for name in keys:
            value = record.get(name)
            if value is None or value == "":
                missing = name
                break
            key_values.append(key_text(value))
        if missing is not None:
            rejected.append(Rejected(received, f"primary key field {missing!r} is missing or empty", index=index))
            continue
        # key_bytes_over's first bound, inline: this runs for every keyed record, and a call costs more.
        if (key_limit is not None and sum(map(len, key_values)) * 4 > key_limit
                and (too_long := _key_too_long(extractor, key_values, key_limit, key_limit_why))):
            rejected.append(Rejected(received, too_long, index=index))
            continue

        cursor_text = None
        typed: Any = None
        value_kind = kind
        if cursor is not None:
            value = record.get(cursor)
            if value is not None:
                # Only an accepted record may fix the kind: a rejected first record must
                # not lock a timestamp stream into text.
                value_kind = kind or cursor_kind(value)
                try:
                    typed = coerce_cursor(value, value_kind)
                except CursorTypeError as exc:
                    rejected.append(Rejected(received, f"cursor field {cursor!r}: {exc}", index=index))
                    continue
                if beyond_the_clock(typed, value_kind, ceiling):
                    # Stored, it would be the newest version of its key for good (and the
                    # latest-per-key view's row), whatever the source sends once it is fixed.
                    rejected.append(Rejected(
                        received, f"cursor field {cursor!r} = {value!r} is more than {FUTURE_TOLERANCE} ahead of the"
                        " clock (a placeholder date or a wrong time zone?); fix it at the source (or in"
                        " transform_record) and the fixed record loads", index=index))
                    continue
                cursor_text = typed.isoformat() if hasattr(typed, "isoformat") else str(typed)

        partition_text = None
        if partition is not None:
            value = record.get(partition)
            if value is None:
                rejected.append(Rejected(received, f"partition field {partition!r} is missing", index=index))
                continue
            partition_text = key_text(value)

        try:
            payload = to_json(clean)
        except TypeError as exc:
            rejected.append(Rejected(repr(received), f"record cannot be stored as JSON: {exc}", index=index))
            continue
        # Both checks below look for what ordinary records never hold (an escaped NUL, which the
        # depth marker starts with too; long numbers where the column limits them): one scan first.
        odd = b"\\u0000" in payload
        if odd and (depth := too_deep(payload)) is not None:
            # A kept "problem": the part too deep to read is not in the dead letter's copy, so it is no record to replay.
            rejected.append(Rejected(
                received, f"record is nested too deeply: {depth:,} levels in what the source sent, more than the {MAX_READ_DEPTH}"
                " levels elt reads (its deepest part is left out of this dead letter); the others loaded. Ask the"
                " source to send it flatter, then `elt dead-letter resolve` this letter", index=index, kind="problem"))
            continue
        problem = limits.problem(clean, payload) if odd or scan_numbers else None
        if problem is not None:
            # Named in full: the letter's reason is often read without its record (alerts, `elt status`).
            which = ", ".join(f"{k}={v!r}" for k, v in zip(keys, key_values, strict=True)) or f"#{index + 1} of its batch"
            rejected.append(Rejected(received, f"stream {extractor.name!r}, record {which}: {problem}", index=index))
            continue

        # Field shapes: only look at the types when the set of fields changed or
        # on a sample, because this loop runs for every record of every load.
        shape = tuple(record)
        if shape != last_shape or len(rows) % 64 == 0:
            last_shape = shape
            for name, value in record.items():
                seen = fields.get(name)
                if seen is None:
                    # A field present only as null is still present (schema.removed_fields).
                    seen = fields[name] = set()
                if value is not None:
                    seen.add(type(value))

        if typed is not None:
            kind = value_kind
            if high is None or typed > high:
                high = typed
            elif typed < high:
                # Out of order within the batch: the sort check compares this with the lookback.
                step = high - typed if kind != "text" else True
                if drop is None or (kind != "text" and step > drop):
                    drop = step
            if low is None or typed < low:
                low = typed
        if keyed:
            seen_keys.add(tuple(key_values))
        # Two identical lines of a file are two records: the source is part of the identity.
        identity = payload + b"\0" + "\0".join(v or "" for v in sources).encode() if sources else payload
        rows.append((*key_values, cursor_text, partition_text, *sources, payload.decode(), record_hash(identity)))

    if source_fields:
        # Say where each rejected record was (a file and line: "orders.csv:17: contract ..."), so the
        # dead letter names it in its message, not only in the record.
        for bad in rejected:
            where = bad.record.get(source_fields[0]) if isinstance(bad.record, dict) else None
            if where:
                bad.reason = f"{where}: {bad.reason}"
    return PreparedBatch(rows=rows, rejected=rejected, high_water=high, low_water=low, cursor_kind=kind, fields=fields,
                         unique_keys=keyed and len(seen_keys) == len(rows),
                         collapsed=len(rows) - len(seen_keys) if keyed else 0, drop=drop)
