"""Models are written in PostgreSQL's dialect; other destinations get them transpiled by sqlglot."""

from __future__ import annotations

import sqlglot

from elt.errors import ConfigError


def transpile(sql: str, dialect: str, *, where: str = "model", pretty: bool = False) -> str:
    """``sql`` (PostgreSQL) rewritten for ``dialect`` (``bigquery``), e.g. DISTINCT ON as ROW_NUMBER()."""
    try:
        statements = sqlglot.transpile(sql, read="postgres", write=dialect, pretty=pretty,
                                       unsupported_level=sqlglot.ErrorLevel.RAISE)
    except sqlglot.errors.SqlglotError as exc:
        raise ConfigError(f"{where}: cannot be translated to {dialect}: {str(exc).splitlines()[0]}") from None
    if len(statements) != 1:
        raise ConfigError(f"{where}: a model is one SELECT statement, found {len(statements)}")
    return statements[0]
