"""Attack 4, bad input: hypothesis feeds hostile records through extract, load and the staging views.

Each example is a list of records with arbitrary JSON keys and values (empty
keys, 10,000-character keys, NUL bytes, lone surrogates, deep nesting, NaN and
infinities, integers far beyond 64 bits, SQL fragments as names), read by an
in-memory extractor or, for a share of the examples, from a real HTTP API
(FakeApi). Every example is one real run into PostgreSQL. Afterwards each
record is either stored exactly (its payload read back, parsed, equals the
input) or dead-lettered with a reason; the run never crashes; the generated
``stg`` view and the typed ``elt stage`` starter model both read every stored
record; and no SQL held in the data ever runs (a canary table and every
relation present before stay untouched).

Examples run from a fixed seed (printed), so a failure reproduces. Records
nested deeper than about 450 levels are beyond what elt's JSON writer can
hold and are dead-lettered ("nested too deeply"); shallower ones must load.
"""

from __future__ import annotations

import json
import math
import reprlib
import sys
from collections import Counter
from collections.abc import Iterator
from typing import Any

import orjson
import psycopg
import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from psycopg import sql

from elt import Pipeline, RestExtractor, extractor
from elt.loaders.postgres import PostgresLoader
from elt.testing import FakeApi, Reply
from elt.transforms.stage import starter_sql
from tests.helpers import run
from tests.reliability.conftest import Attack, AttackReport, Size

SEED = 1818  # printed with every run, so a failure found in CI reproduces locally

SQL_NAMES = [
    'x"); DROP TABLE raw.canary; --',
    "'; DROP TABLE raw.canary; --",
    "a' || (SELECT pg_sleep(5)) || '",
    "id\"; DELETE FROM raw.canary; --",
    "$$; TRUNCATE raw.canary; $$",
    "_raw_payload", "_row_seq", "id ", "ID", "select", "from",
]
LONG = "k" * 10_000

# Strings: ordinary text plus the hostile kinds, each likely enough to show up in 1,000 examples.
storable_texts = st.one_of(
    st.text(max_size=12),  # control characters too, NUL now and then (the model checks the actual strings)
    st.text(alphabet=st.characters(exclude_categories=["Cc", "Cs"]), max_size=12),
    st.sampled_from(SQL_NAMES),
    st.sampled_from(["", LONG, LONG + "2", "\u2028", "\ufeff", "é" * 40, "\U0001f4a5", "null", "NaN"]),
)
# Text PostgreSQL cannot hold, often: such a record must be dead-lettered.
unstorable_texts = st.sampled_from(["\x00", "a\x00b", "\ud800", "x\udfff"])
numbers = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.integers(min_value=-(10**40), max_value=10**40),  # far beyond 64 bits both ways
    st.sampled_from([2**63, -(2**63) - 1, 2**64, 10**100]),
    st.floats(allow_nan=True, allow_infinity=True),
)


def json_values(texts: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    keys = st.one_of(texts, st.text(alphabet="abcdefghij_", min_size=1, max_size=4))
    scalars = st.one_of(st.none(), st.booleans(), numbers, texts)
    return st.recursive(
        scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3), max_leaves=8)


keys = st.one_of(storable_texts, st.text(alphabet="abcdefghij_", min_size=1, max_size=4))
values = json_values(storable_texts)
hostile_texts = st.one_of(storable_texts, unstorable_texts)
hostile_keys = st.one_of(hostile_texts, st.text(alphabet="abcdefghij_", min_size=1, max_size=4))


class Deep:
    """A value nested ``depth`` levels deep, expanded only when the records are built (short to print)."""

    def __init__(self, depth: int) -> None:
        self.depth = depth

    def __repr__(self) -> str:
        return f"Deep({self.depth})"

    def expand(self) -> Any:
        value: Any = "bottom"
        for level in range(self.depth):
            value = [value] if level % 2 else {"d": value}
        return value


deep = st.builds(Deep, st.integers(min_value=50, max_value=1500))


def one_in(n: int, rare: st.SearchStrategy[Any], common: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``rare`` one time in ``n``, else ``common`` (st.one_of merges repeated branches, so no weights by repeating)."""
    return st.integers(min_value=1, max_value=n).flatmap(lambda k: rare if k == 1 else common)


storable_records = st.dictionaries(keys, one_in(8, deep, values), max_size=6)
# About one record in four may carry text PostgreSQL cannot hold, anywhere in it.
records = one_in(4, st.dictionaries(hostile_keys, json_values(hostile_texts), max_size=6), storable_records)
examples = st.lists(records, min_size=1, max_size=24)

#: Each hypothesis example is one run of a list of records (about 5 on average; a run costs
#: ~80-150 ms here). The size counts examples, so CI's 1,000 are 1,000 runs (about 5,000
#: records); raising this divides the runs to save time.
RECORDS_PER_RUN = 1


# --- what must happen to each record ----------------------------------------------------------


def _strings(value: Any) -> Iterator[str]:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def unstorable(record: dict[str, Any]) -> bool:
    """PostgreSQL text cannot hold NUL or a lone surrogate: such a record must be dead-lettered."""
    return any("\x00" in s or any(0xD800 <= ord(c) <= 0xDFFF for c in s) for s in _strings(record))


def depth(value: Any) -> int:
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return deepest


#: Records nested deeper than this may be dead-lettered ("nested too deeply"); shallower ones must load.
#: (orjson stops at 254 levels; the standard library's writer, elt's fallback, at Python's recursion limit.)
MUST_LOAD_DEPTH = 400


def same(expected: Any, stored: Any) -> bool:
    """``stored`` (parsed from jsonb) is ``expected``; non-finite floats are kept as their names.

    Iterative: records here are nested up to 1,500 levels.
    """
    stack = [(expected, stored)]
    while stack:
        want, got = stack.pop()
        if isinstance(want, float):
            if not math.isfinite(want):
                if got != {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}[repr(want)]:
                    return False
            # jsonb prints numbers in plain decimal: 1e308 comes back as an int of 309 digits.
            elif not (isinstance(got, (int, float)) and not isinstance(got, bool) and float(got) == want):
                return False
        elif isinstance(want, (bool, int, str)) or want is None:
            if type(got) is not type(want) or got != want:
                return False
        elif isinstance(want, list):
            if not isinstance(got, list) or len(got) != len(want):
                return False
            stack.extend(zip(want, got, strict=True))
        elif isinstance(want, dict):
            if not isinstance(got, dict) or got.keys() != want.keys():
                return False
            stack.extend((v, got[k]) for k, v in want.items())
        else:
            raise AssertionError(f"unexpected type {type(want)}")
    return True


def parse(text: str) -> Any:
    # The stdlib parser keeps integers of any size exactly (jsonb does too); deep records need the room.
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10_000))
    try:
        return json.loads(text)
    finally:
        sys.setrecursionlimit(limit)


# --- the database under attack ---------------------------------------------------------------


class Target:
    """One database for a whole hypothesis test, with a canary and the relations present before."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.loader = PostgresLoader(url)
        self.loader.store.migrate()
        self.conn = psycopg.connect(url, autocommit=True)
        self.conn.execute("CREATE SCHEMA IF NOT EXISTS raw")
        self.conn.execute("CREATE TABLE raw.canary (n int); INSERT INTO raw.canary SELECT generate_series(1, 10)")
        self.before = self.relations()
        self.runs = 0
        self.records = 0
        self.loaded = 0
        self.dead = 0
        self.reasons: Counter[str] = Counter()

    def relations(self) -> set[tuple[str, str]]:
        rows = self.conn.execute(
            "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')").fetchall()
        return {(r[0], r[1]) for r in rows}

    def check_untouched(self) -> None:
        missing = self.before - self.relations()
        assert not missing, f"relations dropped by data: {sorted(missing)}"
        assert self.conn.execute("SELECT count(*) FROM raw.canary").fetchone() == (10,)

    def close(self) -> None:
        self.loader.close()
        self.conn.close()

    def check_example(self, pipeline: str, batch: list[dict[str, Any]], result: Any, rest: bool = False) -> None:
        """Every record stored exactly or dead-lettered with a reason; both stg views read them all."""
        self.runs += 1
        self.records += len(batch)
        table = f"{pipeline}_items"
        assert result.status in ("success", "partial"), result.summary.error_message
        bad = [r for r in batch if unstorable(r)]
        good = {r["id"]: r for r in batch if not unstorable(r)}
        stored = dict(self.conn.execute(
            sql.SQL("SELECT (_raw_payload ->> 'id')::int, _raw_payload::text FROM {}").format(
                sql.Identifier("raw", table))).fetchall()) if good else {}
        too_deep = [good.pop(key) for key in list(good) if key not in stored and depth(good[key]) > MUST_LOAD_DEPTH]
        bad += too_deep
        assert stored.keys() == good.keys(), (sorted(stored), sorted(good), result.summary.error_message, short(batch))
        for key, record in good.items():
            assert same(record, parse(stored[key])), (short(record), stored[key][:500])
        letters = self.conn.execute(
            "SELECT error_message FROM pipeline.dead_letter WHERE pipeline_name = %s", (pipeline,)).fetchall()
        assert len(letters) == len(bad), (letters, short(bad))
        assert all(message and len(message) > 10 for (message,) in letters), letters
        assert sum("nested too deeply" in message for (message,) in letters) >= len(too_deep), letters
        self.reasons.update(message.split(": ")[-1] for (message,) in letters)
        assert result.status == ("partial" if bad else "success"), result.summary.error_message
        assert result.summary.rows_loaded == len(good) and result.summary.rows_rejected == len(bad)
        self.loaded += len(good)
        self.dead += len(bad)
        if not good:
            return
        # The generated stg view (latest per key) reads every stored record.
        (count,) = self.conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("stg", table))).fetchone()  # type: ignore[misc]
        assert count == len(good)
        # The typed starter model `elt stage` writes, built from the fields seen, reads them all too.
        _, fields = self.loader.store.read_state(pipeline, "items")
        samples: dict[str, list[Any]] = {}
        for payload in self.loader.store.sample_payloads(table, 200):
            for name, value in payload.items():
                samples.setdefault(name, []).append(value)
        kinds = {name: "|".join(t) if isinstance(t, list) else str(t) for name, t in fields.items()}
        stream = extractor(lambda: iter(()), name="items", primary_key="id", write_strategy="append_dedup")
        text = starter_sql(table, stream, kinds, samples)
        view = sql.Identifier("stg", f"starter_{pipeline}")
        try:
            self.conn.execute(sql.SQL("CREATE VIEW {} AS ").format(view) + sql.SQL(text))  # type: ignore[operator]
            (typed,) = self.conn.execute(sql.SQL("SELECT count(*) FROM (SELECT * FROM {}) v").format(view)).fetchone()  # type: ignore[misc]
        except psycopg.Error as exc:
            raise AssertionError(f"starter model of {table} failed: {exc}\n{text[:3000]}") from None
        assert typed == len(good)


@pytest.fixture
def target(database_url: str) -> Iterator[Target]:
    target = Target(database_url)
    try:
        yield target
        target.check_untouched()
    finally:
        target.close()


def hypothesis_settings(examples: int) -> Any:
    print(f"hypothesis: {examples} examples, seed {SEED}")
    fixed = settings(
        max_examples=examples, database=None, deadline=None, print_blob=True,
        suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate, Phase.shrink],
    )
    return lambda test: seed(SEED)(fixed(test))


def with_ids(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def build(value: Any) -> Any:
        if isinstance(value, Deep):
            return value.expand()
        if isinstance(value, dict):
            return {k: build(v) for k, v in value.items()}
        if isinstance(value, list):
            return [build(v) for v in value]
        return value

    return [{**build(record), "id": n} for n, record in enumerate(batch, start=1)]


def short(value: Any) -> str:
    """A bounded description for failure messages (a record may be 1,500 levels deep)."""
    return _short.repr(value)


_short = reprlib.Repr()
_short.maxlevel, _short.maxstring, _short.maxother = 6, 200, 200


def test_hostile_records_are_stored_exactly_or_dead_lettered(target: Target, reliability_size: Size,
                                                             attack_report: AttackReport) -> None:
    counter = iter(range(1, 10**9))

    @hypothesis_settings(reliability_size.hypothesis_examples // RECORDS_PER_RUN)
    @given(examples)
    def attack(batch: list[dict[str, Any]]) -> None:
        batch = with_ids(batch)
        pipeline = f"bad{next(counter)}"
        rows = list(batch)
        stream = extractor(lambda: iter(rows), name="items", primary_key="id", write_strategy="append_dedup",
                           max_bad_ratio=1.0)  # a reject makes the run partial, not failed
        result = run(Pipeline(pipeline, streams=[stream]), target.loader)
        target.check_example(pipeline, batch, result)

    attack()
    target.check_untouched()
    attack_report.record(Attack(
        attack="bad input (in-memory extractor)", runs=target.runs, compared=target.records, lost=0,
        notes=f"{target.loaded} records stored exactly, {target.dead} dead-lettered with a reason; canary and every"
              " relation present before untouched; generated stg view and typed starter model read all",
        extra={"hypothesis_examples": target.runs, "seed": SEED, "loaded": target.loaded,
               "dead_lettered": target.dead,
               "dead_letter_reasons": dict(target.reasons)},
    ))


class Items(RestExtractor):
    name = "items"
    base_url = "http://127.0.0.1:9"
    path = "/items"
    records_path = "data"
    primary_key = "id"
    write_strategy = "append_dedup"
    max_bad_ratio = 1.0


def test_hostile_records_read_from_a_real_api(target: Target, fake_api: FakeApi, reliability_size: Size,
                                              attack_report: AttackReport) -> None:
    counter = iter(range(1, 10**9))
    served: list[bytes] = [b""]
    # The body as a Python API would send it: NaN and Infinity as bare words, lone surrogates escaped.
    fake_api.route("/items", lambda request: Reply(body=served[0]))
    shallow = one_in(4, st.dictionaries(hostile_keys, json_values(hostile_texts), max_size=6),
                     st.dictionaries(keys, values, max_size=6))

    @hypothesis_settings(reliability_size.hypothesis_examples // (10 * RECORDS_PER_RUN))  # a tenth: HTTP is slower
    @given(st.lists(shallow, min_size=1, max_size=24))
    def attack(batch: list[dict[str, Any]]) -> None:
        batch = with_ids(batch)
        pipeline = f"api{next(counter)}"
        served[0] = json.dumps({"data": batch}).encode()
        result = run(Pipeline(pipeline, streams=[Items(base_url=fake_api.url)]), target.loader)
        target.check_example(pipeline, batch, result, rest=True)

    attack()
    target.check_untouched()
    attack_report.record(Attack(
        attack="bad input (REST API)", runs=target.runs, compared=target.records, lost=0,
        notes=f"{target.loaded} records stored exactly, {target.dead} dead-lettered with a reason",
        extra={"seed": SEED, "loaded": target.loaded, "dead_lettered": target.dead,
               "dead_letter_reasons": dict(target.reasons)},
    ))


def test_orjson_is_not_what_decides_exactness() -> None:
    # The comparison itself must be able to fail: a float where an int was sent is not the same.
    assert not same(2**64, parse(orjson.dumps(float(2**64)).decode()))
    assert same(float("nan"), "NaN") and not same(float("nan"), None)
