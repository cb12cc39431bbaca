"""What each destination's JSON column holds: the rule validation dead-letters by (no database needed here)."""

from __future__ import annotations

from elt import extractor
from elt.limits import JsonLimits
from elt.loaders.bigquery.writer import BigQueryWriter
from elt.loaders.postgres.writer import PostgresWriter
from elt.records import ExactNumber, to_json
from elt.validation import prepare

BIGQUERY = BigQueryWriter.json_limits
POSTGRES = PostgresWriter.json_limits


def _problem(limits: JsonLimits, record: dict) -> str | None:
    return limits.problem(record, to_json(record))


def test_bigquery_refuses_integers_beyond_64_bits_and_decimals_a_double_would_change():
    assert _problem(BIGQUERY, {"n": 2**64 - 1, "m": -(2**63), "f": 0.1, "big": 1e300}) is None
    assert "field 'n' = 18446744073709551616" in _problem(BIGQUERY, {"n": 2**64})
    assert "field 'a[1].n'" in _problem(BIGQUERY, {"a": [{"n": 1}, {"n": -(2**63) - 1}]})
    # A long decimal split by its point, and one beyond a double's range: both caught by the quick scan.
    assert "field 'x'" in _problem(BIGQUERY, {"x": ExactNumber("1234567890.1234567")})
    assert "field 'x'" in _problem(BIGQUERY, {"x": ExactNumber("1e400")})
    # Digits in a string are text: stored as they are.
    assert _problem(BIGQUERY, {"s": "123456789012345678901234567890"}) is None


def test_the_nul_rule_names_the_destination_that_has_it():
    assert "PostgreSQL jsonb cannot store" in _problem(POSTGRES, {"s": "a\u0000b"})
    assert _problem(BIGQUERY, {"s": "a\u0000b"}) is None
    # jsonb stores any number digit for digit.
    assert _problem(POSTGRES, {"n": 2**100, "x": ExactNumber("0.12345678901234567890")}) is None


def test_a_dead_letter_copy_fits_only_when_the_column_holds_it_unchanged():
    assert BIGQUERY.fits(b'{"n":18446744073709551615,"s":"123456789012345678901"}')
    assert not BIGQUERY.fits(b'{"n":123456789012345678901234567890}')
    assert not BIGQUERY.fits(b'{"x":0.12345678901234567890}')
    assert POSTGRES.fits(b'{"n":123456789012345678901234567890}')
    assert not POSTGRES.fits(b'{"s":"a\\u0000"}')


def test_validation_rejects_only_the_record_beyond_the_limits_naming_stream_record_and_field():
    stream = extractor(lambda: iter(()), name="events", primary_key="id")
    batch = prepare(stream, [{"id": 1, "n": 1}, {"id": 2, "n": 10**30}], None, BigQueryWriter)
    assert len(batch.rows) == 1 and [r.index for r in batch.rejected] == [1]
    assert batch.rejected[0].reason.startswith("stream 'events', record id='2': field 'n' = 1000000000000000000000000000000")
    assert len(prepare(stream, [{"id": 2, "n": 10**30}], None, PostgresWriter).rows) == 1
