"""Records as JSON: values JSON cannot hold are kept as text, never turned into null."""

from __future__ import annotations

import decimal
import json

from elt import Pipeline, extractor
from elt.records import cap_depth, to_json, too_deep
from tests.helpers import run


def test_nan_and_infinity_are_kept_as_text_not_null():
    record = {"a": float("nan"), "b": [1.5, float("-inf")], "c": None, "d": {"e": float("inf")}}
    assert json.loads(to_json(record)) == {"a": "NaN", "b": [1.5, "-Infinity"], "c": None, "d": {"e": "Infinity"}}
    assert to_json({"c": None, "x": 1.5}) == b'{"c":null,"x":1.5}'


def test_a_nan_read_by_a_python_extractor_is_stored_as_nan(loader, db):
    # Python's json module accepts NaN; the raw payload must not say the value was missing.
    records = json.loads('[{"id": 1, "score": NaN}, {"id": 2, "score": Infinity}, {"id": 3, "score": null}]')
    stream = extractor(lambda: iter(records), name="items", primary_key="id")
    assert run(Pipeline("shop", streams=[stream]), loader).status == "success"
    stored = {r["p"]["id"]: r["p"]["score"] for r in db.execute("SELECT _raw_payload AS p FROM raw.shop_items")}
    assert stored == {1: "NaN", 2: "Infinity", 3: None}


def test_integers_beyond_64_bits_and_deep_nesting_are_stored_as_received(loader, db):
    # Found by the reliability suite: orjson refuses both, and the records were dead-lettered.
    deep: object = "bottom"
    for _ in range(300):
        deep = [deep]
    records = [{"id": 1, "big": 2**64 + 1, "neg": -(10**30)}, {"id": 2, "deep": deep}]
    assert json.loads(to_json(records[0])) == {"big": 2**64 + 1, "id": 1, "neg": -(10**30)}
    stream = extractor(lambda: iter(records), name="items", primary_key="id")
    assert run(Pipeline("shop", streams=[stream]), loader).status == "success"
    stored = {r["id"]: json.loads(r["p"]) for r in db.execute(
        "SELECT (_raw_payload->>'id')::int AS id, _raw_payload::text AS p FROM raw.shop_items")}
    assert stored[1]["big"] == 2**64 + 1 and stored[1]["neg"] == -(10**30)
    assert stored[2]["deep"] == deep


def test_a_record_with_a_huge_integer_and_a_long_fraction_keeps_both_exactly():
    # Tried on purpose after the exact-number change: the standard library's path (taken for
    # integers beyond 64 bits) could not write an ExactNumber, so the record was dead-lettered.
    from elt.extractors.rest import _decode

    body = b'{"id": 1, "big": 18446744073709551617, "amount": 0.1234567890123456789, "tiny": 1e-400, "s": "x"}'
    stored = to_json(_decode(body))
    assert json.loads(stored, parse_float=decimal.Decimal) == json.loads(body, parse_float=decimal.Decimal)
    # A string cannot pose as a number: only the process's own mark is replaced.
    assert json.loads(to_json({"big": 2**70, "s": "\x00elt-exact-0:1"}))["s"] == "\x00elt-exact-0:1"


def test_cap_depth_cuts_only_values_deeper_than_the_limit_and_reads_strings_as_strings():
    # Brackets and escaped quotes inside strings are text, not nesting.
    body = b'{"s": "\\"[[[[", "a": [[1, [2, [3]]]], "b": [[[]]]}'
    assert cap_depth(body, limit=5) is body
    capped = json.loads(cap_depth(body, limit=3))
    assert capped["s"] == '"[[[['
    # Values starting at depth 4 are cut, each marked with the depth it reached.
    assert capped["a"][0][0] == 1 and capped["a"][0][1].startswith("\x00elt-too-deep-")
    assert capped["a"][0][1].endswith(":5") and capped["b"][0][0].endswith(":4")
    assert too_deep(to_json(capped["a"])) == 5 and too_deep(to_json(capped["s"])) is None
