"""Data tests: SQL that counts the rows breaking a rule, run against a model as it is built.

Each test is one query returning the number of offending rows (or 1 for a
table-level failure such as no rows at all, or stale data). Zero passes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from elt.errors import EltError
from elt.transforms.models import DataTest, parse_duration


class UnreadableColumn(EltError):
    """A column of a model cannot be computed for some row (a cast meeting a value of another type)."""


@dataclass
class DataTestResult:
    test: DataTest
    failures: int

    @property
    def passed(self) -> bool:
        return self.failures == 0

    def describe(self, relation: str) -> str:
        what = {
            "unique": "duplicate key groups", "not_null": "null rows", "accepted_values": "rows with other values",
            "relationships": "rows without a match", "row_count": "too few rows", "freshness": "data too old",
            "readable": "unreadable rows",
        }[self.test.kind]
        return f"test {self.test.text} on {relation} failed: {self.failures} {what}"


def _ident(dotted: str) -> sql.Identifier:
    return sql.Identifier(*dotted.split("."))


def check_sql(test: DataTest, relation: str) -> sql.Composed:
    """The query counting what breaks ``test`` in ``relation`` (``schema.name``)."""
    table = _ident(relation)
    cols = [sql.Identifier(c) for c in test.columns]
    if test.kind == "unique":
        return sql.SQL(
            "SELECT count(*) FROM (SELECT 1 FROM {t} WHERE {notnull} GROUP BY {cols} HAVING count(*) > 1) AS dup"
        ).format(t=table, cols=sql.SQL(", ").join(cols),
                 notnull=sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(c) for c in cols))
    if test.kind == "not_null":
        return sql.SQL("SELECT count(*) FROM {t} WHERE {cond}").format(
            t=table, cond=sql.SQL(" OR ").join(sql.SQL("{} IS NULL").format(c) for c in cols))
    if test.kind == "accepted_values":
        return sql.SQL("SELECT count(*) FROM {t} WHERE {c} IS NOT NULL AND {c}::text <> ALL({values})").format(
            t=table, c=cols[0], values=sql.Literal(list(test.args)))
    if test.kind == "relationships":
        schema, other, column = test.args[0].split(".")
        return sql.SQL(
            "SELECT count(*) FROM {t} AS child WHERE child.{c} IS NOT NULL"
            " AND NOT EXISTS (SELECT 1 FROM {o} AS parent WHERE parent.{pc} = child.{c})"
        ).format(t=table, c=cols[0], o=sql.Identifier(schema, other), pc=sql.Identifier(column))
    if test.kind == "row_count":
        return sql.SQL("SELECT (count(*) <= {n})::int FROM {t}").format(t=table, n=sql.Literal(int(test.args[0])))
    if test.kind == "freshness":
        seconds = parse_duration(test.args[0])
        # No rows at all is as stale as old rows: both mean the data stopped arriving.
        return sql.SQL(
            "SELECT (coalesce(max({c})::timestamptz < now() - make_interval(secs => {s}), true))::int FROM {t}"
        ).format(t=table, c=cols[0], s=sql.Literal(seconds))
    if test.kind == "readable":
        # Every column of every row computed: a view's cast that fails on some row fails here,
        # at build time, instead of in the first SELECT * after a build that said success.
        return sql.SQL("SELECT count(*) FROM (SELECT row_value::text AS r FROM {t} AS row_value) AS rows"
                       " WHERE r IS NULL").format(t=table)
    raise ValueError(f"unknown test kind {test.kind!r}")


def run_checks(cursor: Any, tests: tuple[DataTest, ...], relation: str) -> list[DataTestResult]:
    results = []
    for test in tests:
        if test.kind == "readable":
            failures = _readable_failures(cursor, test, relation)
        else:
            cursor.execute(check_sql(test, relation))
            failures = int(cursor.fetchone()[0])
        results.append(DataTestResult(test, failures))
    return results


def unreadable_column(test: DataTest, relation: str, column: str, error: str, json_type: str) -> UnreadableColumn:
    """The ``readable`` test's error naming the column a row cannot be computed for (every destination's wording)."""
    return UnreadableColumn(
        f"test {test.text} on {relation} failed: column {column!r} cannot be read for every row"
        f" ({error.strip().splitlines()[0]}): its field now holds values of another type. Cast it"
        f" differently in the model, or keep it as {json_type} (`_raw_payload -> 'field'`)")


def _readable_failures(cursor: Any, test: DataTest, relation: str) -> int:
    """The ``readable`` test's count; :class:`UnreadableColumn` naming the column when a row cannot be computed.

    The whole-row query fails with PostgreSQL's message alone ("invalid input syntax
    for type bigint"), which does not say which field changed type; each column is then
    computed on its own, so the error names it.
    """
    table = _ident(relation)
    cursor.execute("SAVEPOINT elt_readable")
    try:
        cursor.execute(check_sql(test, relation))
        failures = int(cursor.fetchone()[0])
        cursor.execute("RELEASE SAVEPOINT elt_readable")
        return failures
    except psycopg.errors.DataError as exc:
        cursor.execute("ROLLBACK TO SAVEPOINT elt_readable")
        whole = exc
    cursor.execute(sql.SQL("SELECT * FROM {} LIMIT 0").format(table))
    for column in [c.name for c in cursor.description or ()]:
        try:
            cursor.execute(sql.SQL("SELECT count(*) FROM (SELECT {c}::text AS v FROM {t}) AS one WHERE v IS NULL")
                           .format(c=sql.Identifier(column), t=table))
        except psycopg.errors.DataError as exc:
            cursor.execute("ROLLBACK TO SAVEPOINT elt_readable")
            raise unreadable_column(test, relation, column, str(exc), "jsonb") from None
    cursor.execute("ROLLBACK TO SAVEPOINT elt_readable")
    raise UnreadableColumn(f"test {test.text} on {relation} failed: {str(whole).strip().splitlines()[0]}") from None
