"""Typical staging and mart SQL, written for PostgreSQL, as sqlglot translates it for BigQuery."""

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
