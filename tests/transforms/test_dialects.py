"""Typical staging and mart SQL, written for PostgreSQL, as sqlglot translates it for BigQuery.

No BigQuery emulator is set up yet: these tests check the SQL's shape (and that sqlglot's
BigQuery dialect parses it), not its results on BigQuery. Each rewritten construct should
also run on the emulator once the BigQuery destination lands.
"""

from __future__ import annotations

import pytest

from elt.errors import ConfigError
from elt.transforms.dialects import transpile

CASES = {
    "json extraction from _raw_payload": (
        "SELECT _raw_payload->>'id' AS id, _raw_payload->'customer'->>'email' AS email,"
        " (_raw_payload->>'amount')::numeric AS amount FROM raw.shop_orders",
        "SELECT JSON_EXTRACT_SCALAR(_raw_payload, '$.id') AS id,"
        " JSON_EXTRACT_SCALAR(JSON_EXTRACT(_raw_payload, '$.customer'), '$.email') AS email,"
        " CAST((JSON_EXTRACT_SCALAR(_raw_payload, '$.amount')) AS NUMERIC) AS amount FROM raw.shop_orders",
    ),
    "date truncation": (
        "SELECT date_trunc('month', created_at) AS month, count(*) FROM stg.orders GROUP BY 1",
        "SELECT TIMESTAMP_TRUNC(created_at, MONTH) AS month, COUNT(*) FROM stg.orders GROUP BY 1",
    ),
    "window function for dedup": (
        "SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY id ORDER BY _loaded_at DESC) AS rn"
        " FROM raw.shop_orders) t WHERE rn = 1",
        # PostgreSQL sorts NULLs first in DESC order; BigQuery is told so explicitly.
        "SELECT * FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY id ORDER BY _loaded_at DESC NULLS FIRST) AS rn"
        " FROM raw.shop_orders) AS t WHERE rn = 1",
    ),
    "casts": (
        "SELECT id::int AS id, created::timestamptz AS created, flag::boolean AS flag, note::text AS note FROM raw.x",
        "SELECT CAST(id AS INT64) AS id, CAST(created AS TIMESTAMP) AS created, CAST(flag AS BOOL) AS flag,"
        " CAST(note AS STRING) AS note FROM raw.x",
    ),
    "DISTINCT ON rewritten as ROW_NUMBER": (
        "SELECT DISTINCT ON (id) id, status FROM raw.x ORDER BY id, updated_at DESC",
        "SELECT id, status FROM (SELECT id AS id, status AS status, ROW_NUMBER() OVER (PARTITION BY id"
        " ORDER BY id NULLS LAST, updated_at DESC NULLS FIRST) AS _row_number FROM raw.x) AS _t WHERE _row_number = 1",
    ),
    "intervals and now()": (
        "SELECT * FROM stg.orders WHERE created_at > now() - interval '7 days'",
        "SELECT * FROM stg.orders WHERE created_at > CURRENT_TIMESTAMP() - INTERVAL '7' DAY",
    ),
    "ILIKE": (
        "SELECT coalesce(name, 'n/a') AS name FROM stg.c WHERE email ILIKE '%@example.com'",
        "SELECT COALESCE(name, 'n/a') AS name FROM stg.c WHERE LOWER(email) LIKE LOWER('%@example.com')",
    ),
    "FILTER (WHERE ...)": (
        "SELECT count(*) FILTER (WHERE status = 'paid') AS paid FROM stg.orders",
        "SELECT COUNTIF(status = 'paid') AS paid FROM stg.orders",
    ),
    # The constructs sqlglot alone gets wrong, rewritten.
    "#>> and #> with a constant path": (
        "SELECT _raw_payload #>> '{customer,email}' AS email, _raw_payload #> '{items,0}' AS first FROM raw.o",
        "SELECT JSON_EXTRACT_SCALAR(_raw_payload, '$.customer.email') AS email,"
        " JSON_EXTRACT(_raw_payload, '$.items[0]') AS first FROM raw.o",
    ),
    "generate_series over dates, its column alias kept": (
        "SELECT s.day FROM generate_series('2026-01-01'::date, '2026-01-31'::date, interval '1 day') AS s(day)",
        "SELECT s.day FROM (SELECT day FROM UNNEST(GENERATE_DATE_ARRAY(CAST('2026-01-01' AS DATE),"
        " CAST('2026-01-31' AS DATE), INTERVAL 1 DAY)) AS day) AS s",
    ),
    "generate_series over timestamps": (
        "SELECT h FROM generate_series('2026-01-01'::timestamptz, '2026-01-02'::timestamptz, '1 hour') AS h",
        "SELECT h FROM (SELECT h FROM UNNEST(GENERATE_TIMESTAMP_ARRAY(CAST('2026-01-01' AS TIMESTAMP),"
        " CAST('2026-01-02' AS TIMESTAMP), INTERVAL 1 HOUR)) AS h) AS h",
    ),
    "generate_series over numbers stays GENERATE_ARRAY": (
        "SELECT n FROM generate_series(1, 10) AS n",
        "SELECT n FROM UNNEST(GENERATE_ARRAY(1, 10)) AS n",
    ),
    "extract(isodow) counts Monday 1 .. Sunday 7": (
        "SELECT extract(isodow FROM created_at) AS weekday FROM stg.o",
        "SELECT (MOD(EXTRACT(DAYOFWEEK FROM created_at) + 5, 7) + 1) AS weekday FROM stg.o",
    ),
    "date_trunc('week') starts on Monday, as in PostgreSQL": (
        "SELECT date_trunc('week', created_at) AS w, date_trunc('month', created_at) AS m FROM stg.o",
        "SELECT TIMESTAMP_TRUNC(created_at, WEEK(MONDAY)) AS w, TIMESTAMP_TRUNC(created_at, MONTH) AS m FROM stg.o",
    ),
    "extract(dow), doy, week": (
        "SELECT extract(dow FROM a), extract(doy FROM a), extract(week FROM a) FROM t",
        "SELECT (EXTRACT(DAYOFWEEK FROM a) - 1), EXTRACT(DAYOFYEAR FROM a), EXTRACT(ISOWEEK FROM a) FROM t",
    ),
    "extract(second) keeps the fraction": (
        "SELECT extract(second FROM a), extract(milliseconds FROM a) FROM t",
        "SELECT (EXTRACT(SECOND FROM a) + EXTRACT(MICROSECOND FROM a) / 1000000),"
        " (EXTRACT(SECOND FROM a) * 1000 + EXTRACT(MICROSECOND FROM a) / 1000) FROM t",
    ),
    "extract(epoch FROM b - a): seconds between two timestamps": (
        "SELECT extract(epoch FROM (shipped_at - ordered_at)) AS seconds FROM stg.o",
        "SELECT ((UNIX_MICROS(shipped_at) - UNIX_MICROS(ordered_at)) / 1000000) AS seconds FROM stg.o",
    ),
    "extract(epoch FROM timestamp)": (
        "SELECT extract(epoch FROM created_at) FROM stg.o",
        "SELECT (UNIX_MICROS(created_at) / 1000000) FROM stg.o",
    ),
    "ILIKE ANY (ARRAY[...])": (
        "SELECT id FROM stg.c WHERE email ILIKE ANY (ARRAY['%@a.com', '%@b.com'])",
        "SELECT id FROM stg.c WHERE (LOWER(email) LIKE LOWER('%@a.com') OR LOWER(email) LIKE LOWER('%@b.com'))",
    ),
    "LIKE ALL (ARRAY[...])": (
        "SELECT id FROM stg.c WHERE name LIKE ALL (ARRAY['A%', '%z'])",
        "SELECT id FROM stg.c WHERE (name LIKE 'A%' AND name LIKE '%z')",
    ),
    "to_char on a timestamptz": (
        "SELECT to_char(created_at, 'YYYY-MM-DD HH24:MI') AS formatted FROM stg.o",
        "SELECT FORMAT_TIMESTAMP('%Y-%m-%d %H:%M', CAST(created_at AS TIMESTAMP)) AS formatted FROM stg.o",
    ),
    "::numeric(12,2) keeps its rounding": (
        "SELECT amount::numeric(12, 2) AS amount, big::numeric(40, 20) AS big FROM stg.o",
        "SELECT ROUND(CAST(amount AS NUMERIC), 2) AS amount, ROUND(CAST(big AS BIGNUMERIC), 20) AS big FROM stg.o",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_postgres_model_sql_becomes_bigquery_sql(case):
    postgres, bigquery = CASES[case]
    assert transpile(postgres, "bigquery") == bigquery


def test_the_starter_staging_model_translates(tmp_path):
    # What `elt stage` writes must be portable too.
    from elt import extractor
    from elt.transforms.stage import starter_sql

    stream = extractor(lambda: [], name="orders", primary_key="id", cursor="updated_at")
    sql = starter_sql("shop_orders", stream, {"id": "integer", "updated_at": "string", "tags": "object"},
                      {"updated_at": ["2026-01-01T00:00:00Z"]})
    body = "\n".join(line for line in sql.splitlines() if not line.startswith("--"))
    translated = transpile(body, "bigquery")
    assert "ROW_NUMBER() OVER (PARTITION BY JSON_EXTRACT_SCALAR(_raw_payload, '$.id')" in translated
    assert "CAST(NULLIF(JSON_EXTRACT_SCALAR(_raw_payload, '$.updated_at'), '') AS TIMESTAMP) AS updated_at" in translated


def test_more_than_one_statement_is_refused():
    with pytest.raises(ConfigError, match="one SELECT statement, found 2"):
        transpile("SELECT 1; SELECT 2", "bigquery", where="sql/mart/x.sql")


@pytest.mark.parametrize(("postgres", "construct", "alternative"), [
    ("SELECT id FROM raw.o WHERE _raw_payload @> '{\"status\": \"paid\"}'::jsonb", "@> / <@ (containment)",
     "payload->>'status' = 'paid'"),
    ("SELECT id FROM raw.o WHERE tags @> ARRAY['vip']", "@> / <@ (containment)", "EXISTS over unnest()"),
    ("SELECT id FROM raw.o WHERE _raw_payload ? 'coupon'", "? / ?| / ?& (jsonb key exists)", "IS NOT NULL"),
    ("SELECT _raw_payload #>> path FROM raw.o", "#> / #>> (jsonb path)", "payload->'a'->>'b'"),
    ("SELECT d FROM generate_series(a, b, interval '1 day') AS d", "generate_series over dates or timestamps",
     "cast the bounds"),
    ("SELECT generate_series(now(), now() + interval '1 day', interval '1 hour') AS h",
     "generate_series over dates or timestamps", "call it in FROM"),
    ("SELECT extract(epoch FROM interval '1 day') AS s", "extract(...)", "extract(epoch FROM b) - extract(epoch FROM a)"),
    ("SELECT extract(century FROM created_at) FROM t", "extract(...)", "extract(year"),
    ("SELECT to_char(created_at, 'FMDay DD') FROM t", "to_char", "YYYY, MM, DD"),
    ("SELECT id FROM t WHERE name ILIKE ANY (patterns)", "LIKE / ILIKE ANY (ARRAY[...])", "x ILIKE 'a%' OR"),
])
def test_constructs_without_a_bigquery_equivalent_are_refused_by_name(postgres, construct, alternative):
    with pytest.raises(ConfigError) as error:
        transpile(postgres, "bigquery", where="sql/mart/m.sql")
    message = str(error.value)
    assert message.startswith(f"sql/mart/m.sql: {construct} in `")
    assert alternative in message


def test_a_postgres_only_function_left_in_the_translation_is_refused():
    with pytest.raises(ConfigError, match="sql/stg/items.sql: JSONB_ARRAY_ELEMENTS has no BigQuery equivalent"):
        transpile("SELECT jsonb_array_elements(_raw_payload->'items') AS item FROM raw.o", "bigquery",
                  where="sql/stg/items.sql")


def test_every_translation_parses_as_bigquery():
    import sqlglot

    for postgres, _ in CASES.values():
        sqlglot.parse_one(transpile(postgres, "bigquery"), read="bigquery")


def test_a_division_of_integers_keeps_postgres_truncation():
    # PostgreSQL: 7 / 2 = 3 and count(*) / 2 is an integer; BigQuery's / gives 3.5: DIV(a, b) truncates alike.
    out = transpile("SELECT sum(u::int) / count(*) AS a, 7 / 2 AS b, (7 / 2) / 2 AS c FROM stg.items", "bigquery")
    assert out == "SELECT DIV(SUM(CAST(u AS INT64)), COUNT(*)) AS a, DIV(7, 2) AS b, DIV((DIV(7, 2)), 2) AS c FROM stg.items"
    out = transpile("SELECT row_number() OVER (ORDER BY x) / 2 AS r,"
                    " sum(n::int) OVER () / nullif(count(*) OVER (), 0) AS s FROM t", "bigquery")
    assert out == ("SELECT DIV(ROW_NUMBER() OVER (ORDER BY x NULLS LAST), 2) AS r,"
                   " DIV(SUM(CAST(n AS INT64)) OVER (), NULLIF(COUNT(*) OVER (), 0)) AS s FROM t")


@pytest.mark.parametrize("division", [
    "x::numeric / 2", "7.0 / 2", "avg(u) / 2", "count(*) * 1.0 / count(*)", "x::float8 / y", "round(x) / 2",
    "extract(year FROM d) / 2", "sum(u::bigint) / 2",  # sum(bigint) and extract() are numeric in PostgreSQL
    "10000000000000000000 / 3",  # beyond bigint, a literal is numeric
])
def test_a_division_with_a_real_side_stays_a_real_division(division):
    out = transpile(f"SELECT {division} AS v FROM t", "bigquery")
    assert " / " in out and "DIV(" not in out


@pytest.mark.parametrize("division", ["sum(u) / count(*)", "amount / 100", "(SELECT count(*) FROM t) / 2", "a / b"])
def test_a_division_whose_types_cannot_be_told_is_refused(division):
    with pytest.raises(ConfigError) as error:
        transpile(f"SELECT {division} AS v FROM stg.items", "bigquery", where="sql/mart/avg.sql")
    message = str(error.value)
    assert message.startswith("sql/mart/avg.sql: `")
    assert "cannot be told from the SQL" in message
    assert "x::numeric / y" in message and "div(x, y)" in message
