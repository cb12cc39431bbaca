"""Models are written in PostgreSQL's dialect; other destinations get them transpiled by sqlglot.

sqlglot translates most PostgreSQL to BigQuery correctly (``DISTINCT ON``,
``->``/``->>``, casts, ``date_trunc``, ``ILIKE``, ``FILTER (WHERE ...)``). For
the constructs it gets wrong without saying so, :data:`BIGQUERY_CONSTRUCTS`
holds one rule each: the rule rewrites the construct into BigQuery SQL that
means the same, or refuses it with a message naming the construct, the file and
a portable way to write it. Every translation is then parsed back with sqlglot's
BigQuery dialect and checked for PostgreSQL-only leftovers.

Assumption: models run with the session time zone UTC on PostgreSQL (BigQuery
formats and extracts timestamps in UTC).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

import sqlglot
from sqlglot import exp

from elt.errors import ConfigError


class Refused(Exception):
    """Raised by a rule that cannot rewrite this occurrence: the reason, and a better alternative if there is one."""

    def __init__(self, reason: str = "", alternative: str = "") -> None:
        super().__init__(reason)
        self.alternative = alternative


@dataclass(frozen=True)
class Construct:
    """A PostgreSQL construct that sqlglot's BigQuery output gets wrong, and what to do with it.

    Subclasses set ``name`` (as a user would search for it), ``kinds`` (the sqlglot nodes
    it appears as) and ``alternative`` (portable SQL for the refusal message), and override
    :meth:`rewrite` when the construct can be rewritten; the default refuses.
    """

    name: ClassVar[str] = ""
    kinds: ClassVar[tuple[type[exp.Expression], ...]] = ()
    alternative: ClassVar[str] = ""

    def matches(self, node: exp.Expression) -> bool:
        return isinstance(node, self.kinds)

    def rewrite(self, node: exp.Expression) -> exp.Expression:
        raise Refused("")


class JsonContains(Construct):
    name = "@> / <@ (containment)"
    kinds = (exp.ArrayContainsAll, exp.ArrayContainedBy, exp.JSONBContains)
    alternative = ("compare the extracted field (payload->>'status' = 'paid'),"
                   " or test array membership with an EXISTS over unnest()")


class JsonHasKey(Construct):
    name = "? / ?| / ?& (jsonb key exists)"
    kinds = (exp.JSONBContainsTopKey, exp.JSONBContainsAnyTopKeys, exp.JSONBContainsAllTopKeys)
    alternative = "payload->'key' IS NOT NULL (it differs only for a key holding JSON null)"


class JsonPath(Construct):
    """``#>`` / ``#>>`` with a constant path become ``JSON_EXTRACT`` / ``JSON_EXTRACT_SCALAR`` with a JSONPath."""

    name = "#> / #>> (jsonb path)"
    kinds = (exp.JSONBExtract, exp.JSONBExtractScalar)
    alternative = "chain -> and ->> with plain keys: payload->'a'->>'b'"

    def rewrite(self, node: exp.Expression) -> exp.Expression:
        path = node.expression
        if not isinstance(path, exp.Literal) or not path.is_string:
            raise Refused("the path is not a constant")
        parts = [p.strip().strip('"') for p in path.this.strip().strip("{}").split(",")]
        if not parts or not all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*|\d+", p) for p in parts):
            raise Refused(f"path {path.this!r} has keys a JSONPath cannot hold as written")
        json_path = "$" + "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in parts)
        function = "JSON_EXTRACT_SCALAR" if isinstance(node, exp.JSONBExtractScalar) else "JSON_EXTRACT"
        return exp.Anonymous(this=function, expressions=[node.this, exp.Literal.string(json_path)])


def _series_kind(node: exp.Expression) -> str | None:
    """``date``, ``timestamp`` or ``number`` for a generate_series bound, None when it cannot be told."""
    if isinstance(node, exp.Cast):
        if node.to.this in (exp.DataType.Type.DATE,):
            return "date"
        if node.to.is_type(*exp.DataType.TEMPORAL_TYPES):
            return "timestamp"
        if node.to.is_type(*exp.DataType.NUMERIC_TYPES):
            return "number"
    if isinstance(node, (exp.CurrentTimestamp, exp.CurrentDate)):
        return "timestamp" if isinstance(node, exp.CurrentTimestamp) else "date"
    if isinstance(node, (exp.Add, exp.Sub)):
        kinds = {_series_kind(node.this), _series_kind(node.expression)} - {None}
        if isinstance(node.expression, exp.Interval) or isinstance(node.this, exp.Interval):
            kinds = {_series_kind(n) for n in (node.this, node.expression) if not isinstance(n, exp.Interval)}
        return kinds.pop() if len(kinds) == 1 else None
    if isinstance(node, exp.Literal) and not node.is_string:
        return "number"
    if isinstance(node, exp.Paren):
        return _series_kind(node.this)
    return None


def _bq_interval(step: exp.Expression | None) -> exp.Expression | None:
    # BigQuery's INTERVAL takes a number: INTERVAL 1 DAY, not INTERVAL '1' DAY.
    if isinstance(step, exp.Interval) and isinstance(step.this, exp.Literal) and step.this.this.isdigit():
        return exp.Interval(this=exp.Literal.number(int(step.this.this)), unit=step.args.get("unit"))
    text = step.this if isinstance(step, exp.Cast) else step
    if isinstance(text, exp.Literal) and text.is_string:  # '1 day' or '1 day'::interval
        match = re.fullmatch(r"\s*(\d+)\s+(second|minute|hour|day|week|month|year)s?\s*", text.this, re.I)
        if match:
            return exp.Interval(this=exp.Literal.number(int(match.group(1))), unit=exp.Var(this=match.group(2).upper()))
    return step


class GenerateSeries(Construct):
    """``generate_series`` over dates or timestamps in ``FROM`` becomes ``UNNEST(GENERATE_DATE_ARRAY(...))`` or
    ``UNNEST(GENERATE_TIMESTAMP_ARRAY(...))``, its column alias kept."""

    name = "generate_series over dates or timestamps"
    kinds = (exp.Table, exp.GenerateSeries)
    alternative = ("cast the bounds (::date or ::timestamptz) and call it in FROM:"
                   " FROM generate_series(a::date, b::date, interval '1 day') AS g(day)")

    def matches(self, node: exp.Expression) -> bool:
        if isinstance(node, exp.Table):
            return isinstance(node.this, exp.ExplodingGenerateSeries)
        return isinstance(node, exp.GenerateSeries) and _series_kind(node.args["start"]) != "number"

    def rewrite(self, node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.GenerateSeries):
            raise Refused("generate_series in the SELECT list is only translated in FROM")
        series = node.this
        start, end, step = series.args.get("start"), series.args.get("end"), series.args.get("step")
        kind = {_series_kind(start), _series_kind(end)}
        if kind == {"number"}:
            return node  # GENERATE_ARRAY, as sqlglot writes it, is right for numbers
        if len(kind) != 1 or None in kind:
            raise Refused("the type of its bounds cannot be told from the SQL")
        function = "GENERATE_DATE_ARRAY" if kind == {"date"} else "GENERATE_TIMESTAMP_ARRAY"
        if function == "GENERATE_TIMESTAMP_ARRAY" and step is None:
            raise Refused("a timestamp series needs a step")
        args = [start, end] + ([_bq_interval(step)] if step is not None else [])
        alias = node.args.get("alias")
        table = alias.this.name if alias and alias.this else "generate_series"
        columns = alias.columns if alias else []
        column = columns[0].name if columns else table
        # UNNEST ... AS x names the value x; a subquery keeps PostgreSQL's table alias (g.d) working too.
        unnest = exp.Unnest(expressions=[exp.Anonymous(this=function, expressions=args)],
                            alias=exp.TableAlias(columns=[exp.to_identifier(column)]))
        inner = exp.select(exp.column(column)).from_(unnest)
        return exp.Subquery(this=inner, alias=exp.TableAlias(this=exp.to_identifier(table)))


_DAYOFWEEK = exp.Extract(this=exp.Var(this="DAYOFWEEK"))


class ExtractPart(Construct):
    """``extract(part FROM x)`` where PostgreSQL's part means something else in BigQuery."""

    name = "extract(...)"
    kinds = (exp.Extract,)
    alternative = "date_trunc, or extract(year/month/day/hour/minute FROM ...)"
    same: ClassVar[set[str]] = {"YEAR", "MONTH", "DAY", "HOUR", "MINUTE", "QUARTER", "ISOYEAR"}

    def matches(self, node: exp.Expression) -> bool:
        return isinstance(node, exp.Extract) and node.this.name.upper() not in self.same

    def rewrite(self, node: exp.Expression) -> exp.Expression:
        part, value = node.this.name.upper(), node.expression
        def extract(unit: str) -> exp.Expression:
            return exp.Extract(this=exp.Var(this=unit), expression=value.copy())

        if part == "ISODOW":  # PostgreSQL: Monday 1 .. Sunday 7; BigQuery DAYOFWEEK: Sunday 1 .. Saturday 7
            return exp.Paren(this=exp.Add(this=exp.Mod(this=exp.Paren(this=exp.Add(
                this=extract("DAYOFWEEK"), expression=exp.Literal.number(5))), expression=exp.Literal.number(7)),
                expression=exp.Literal.number(1)))
        if part == "DOW":  # PostgreSQL: Sunday 0 .. Saturday 6
            return exp.Paren(this=exp.Sub(this=extract("DAYOFWEEK"), expression=exp.Literal.number(1)))
        if part == "DOY":
            return extract("DAYOFYEAR")
        if part == "WEEK":  # PostgreSQL's week is the ISO week
            return extract("ISOWEEK")
        if part in ("SECOND", "MILLISECONDS", "MICROSECONDS"):
            # PostgreSQL counts the fraction in (12.5 s is 12.5 / 12500 / 12500000); BigQuery's SECOND is
            # whole seconds and its MICROSECOND the fraction only.
            scale = {"SECOND": 1, "MILLISECONDS": 1000, "MICROSECONDS": 1_000_000}[part]
            seconds = extract("SECOND") if scale == 1 else exp.Mul(this=extract("SECOND"), expression=exp.Literal.number(scale))
            fraction = extract("MICROSECOND")
            if scale != 1_000_000:
                fraction = exp.Div(this=fraction, expression=exp.Literal.number(1_000_000 // scale))
            return exp.Paren(this=exp.Add(this=seconds, expression=fraction))
        if part == "EPOCH":
            inner = value.this if isinstance(value, exp.Paren) else value
            if isinstance(inner, exp.Sub) and not isinstance(inner.expression, exp.Interval):
                # The seconds between two timestamps.
                return exp.Paren(this=exp.Div(this=exp.Paren(this=exp.Sub(
                    this=exp.Anonymous(this="UNIX_MICROS", expressions=[inner.this.copy()]),
                    expression=exp.Anonymous(this="UNIX_MICROS", expressions=[inner.expression.copy()]))),
                    expression=exp.Literal.number(1_000_000)))
            if isinstance(inner, (exp.Interval, exp.Anonymous)) or (isinstance(inner, exp.Cast) and inner.to.is_type("interval")):
                raise Refused("the epoch of an interval has no BigQuery form",
                              "extract(epoch FROM b) - extract(epoch FROM a) for the seconds between two timestamps")
            return exp.Paren(this=exp.Div(this=exp.Anonymous(this="UNIX_MICROS", expressions=[value.copy()]),
                                          expression=exp.Literal.number(1_000_000)))
        raise Refused(f"part {part.lower()} has no BigQuery equivalent")


class TruncWeek(Construct):
    """``date_trunc('week', x)``: PostgreSQL's week starts on Monday, BigQuery's WEEK on Sunday: ``WEEK(MONDAY)``."""

    name = "date_trunc('week', ...)"
    kinds = (exp.TimestampTrunc, exp.DateTrunc)

    def matches(self, node: exp.Expression) -> bool:
        unit = node.args.get("unit")
        return isinstance(node, self.kinds) and isinstance(unit, exp.Var) and unit.name.upper() == "WEEK"

    def rewrite(self, node: exp.Expression) -> exp.Expression:
        node = node.copy()
        node.set("unit", exp.WeekStart(this=exp.Var(this="MONDAY")))
        return node


def _patterns(node: exp.Expression) -> list[exp.Expression] | None:
    target = node.expression
    inner = target.this if isinstance(target, (exp.Any, exp.All)) else None
    while isinstance(inner, exp.Paren):
        inner = inner.this
    return list(inner.expressions) if isinstance(inner, exp.Array) else None


class LikeAny(Construct):
    """``x ILIKE ANY (ARRAY['a', 'b'])`` becomes ``x ILIKE 'a' OR x ILIKE 'b'`` (ALL: AND)."""

    name = "LIKE / ILIKE ANY (ARRAY[...])"
    kinds = (exp.Like, exp.ILike)
    alternative = "list the patterns: x ILIKE 'a%' OR x ILIKE 'b%'"

    def matches(self, node: exp.Expression) -> bool:
        return isinstance(node, self.kinds) and isinstance(node.expression, (exp.Any, exp.All))

    def rewrite(self, node: exp.Expression) -> exp.Expression:
        patterns = _patterns(node)
        if not patterns:
            raise Refused("the patterns are not an ARRAY[...] literal")
        joined = [type(node)(this=node.this.copy(), expression=p.copy()) for p in patterns]
        combine = exp.or_ if isinstance(node.expression, exp.Any) else exp.and_
        return exp.Paren(this=combine(*joined))


class ToChar(Construct):
    """``to_char(timestamp, 'YYYY-MM')`` becomes ``FORMAT_TIMESTAMP('%Y-%m', CAST(x AS TIMESTAMP))``."""

    name = "to_char"
    kinds = (exp.TimeToStr,)
    alternative = "to_char with YYYY, MM, DD, HH24, MI, SS only, or date_trunc(...)::date"

    def rewrite(self, node: exp.Expression) -> exp.Expression:
        fmt = node.args.get("format")
        text = fmt.this if isinstance(fmt, exp.Literal) else None
        # Letters left outside %-codes are PostgreSQL patterns sqlglot did not translate.
        if text is None or re.search(r"[A-Za-z]", re.sub(r"%.", "", text)):
            raise Refused("its format has patterns without a BigQuery equivalent" if text else "its format is not constant")
        value = exp.Cast(this=node.this.copy(), to=exp.DataType.build("TIMESTAMPTZ"))
        return exp.Anonymous(this="FORMAT_TIMESTAMP", expressions=[exp.Literal.string(text), value])


class NumericScale(Construct):
    """``::numeric(12,2)`` rounds in PostgreSQL; BigQuery's plain NUMERIC does not: ``ROUND(CAST(x AS NUMERIC), 2)``."""

    name = "::numeric(p, s)"
    kinds = (exp.Cast, exp.TryCast)
    alternative = "round(x, 2)"

    def matches(self, node: exp.Expression) -> bool:
        to = node.args.get("to")
        return isinstance(node, self.kinds) and to is not None and to.is_type("decimal") and bool(to.expressions)

    def rewrite(self, node: exp.Expression) -> exp.Expression:
        params = [int(p.this.this) for p in node.args["to"].expressions]
        precision, scale = params[0], params[1] if len(params) > 1 else 0
        # NUMERIC holds 29 digits before the point and 9 after; beyond that, BIGNUMERIC.
        kind = "NUMERIC" if scale <= 9 and precision - scale <= 29 else "BIGNUMERIC"
        cast = type(node)(this=node.this.copy(), to=exp.DataType.build(kind, dialect="bigquery"))
        return exp.Anonymous(this="ROUND", expressions=[cast, exp.Literal.number(scale)])


# Division. PostgreSQL's `/` between two integers truncates toward zero (7 / 2 = 3); BigQuery's `/`
# always returns FLOAT64 (3.5). sqlglot keeps `/` unless it knows both operand types, and its type
# annotation follows other dialects where PostgreSQL differs (sum(bigint) is numeric, extract() is
# numeric, date - date is integer), so the operand types are told here, from PostgreSQL's rules, and
# only where the SQL itself shows them. Where it does not (a column, a function we do not know), the
# model is refused: guessing either way would give a silently wrong figure for some models, and a
# cast or div() in the model states the intent for both databases.
_INT2_INT4 = {exp.DataType.Type.TINYINT, exp.DataType.Type.SMALLINT, exp.DataType.Type.INT}
_INT8 = {exp.DataType.Type.BIGINT}
_NUMERIC = {exp.DataType.Type.DECIMAL, exp.DataType.Type.BIGDECIMAL, exp.DataType.Type.MONEY}
_FLOAT = {exp.DataType.Type.FLOAT, exp.DataType.Type.DOUBLE}
#: Functions whose PostgreSQL result is never an integer, whatever their argument.
_FRACTIONAL_FUNCTIONS = (exp.Avg, exp.Round, exp.Ceil, exp.Floor, exp.Trunc, exp.Sqrt, exp.Pow, exp.Exp, exp.Ln,
                         exp.Log, exp.Extract, exp.Stddev, exp.StddevPop, exp.StddevSamp, exp.Variance,
                         exp.VariancePop, exp.PercentileCont)
_RANKS = (exp.RowNumber, exp.Rank, exp.DenseRank, exp.Ntile, exp.Count)
_ORDER = ("int", "bigint", "numeric", "float")


def _widest(kinds: list[str | None]) -> str | None:
    if not kinds or None in kinds:
        # One real operand makes the result real, whatever the unknown one is.
        known = [k for k in kinds if k in ("numeric", "float")]
        return "numeric" if known else None
    return max(kinds, key=lambda k: _ORDER.index(k or "int"))


def _number_kind(node: exp.Expression) -> str | None:
    """PostgreSQL's type of a numeric expression, as far as the SQL shows it: ``int`` (int2/int4),
    ``bigint``, ``numeric``, ``float``, or None when it cannot be told (a column, an unknown function)."""
    if isinstance(node, (exp.Paren, exp.Neg)):
        return _number_kind(node.this)
    if isinstance(node, exp.Literal):
        if node.is_string:
            return None
        if node.is_int:  # PostgreSQL types an integer literal by its size: int4, int8, then numeric
            size = abs(int(node.this))
            return "int" if size < 2**31 else "bigint" if size < 2**63 else "numeric"
        return "numeric"
    if isinstance(node, (exp.Cast, exp.TryCast)):
        kind = node.to.this
        return ("int" if kind in _INT2_INT4 else "bigint" if kind in _INT8 else "numeric" if kind in _NUMERIC
                else "float" if kind in _FLOAT else None)
    if isinstance(node, (exp.Window, exp.Filter, exp.Nullif)):  # over (...), filter (where ...), nullif(x, 0): x's type
        return _number_kind(node.this)
    if isinstance(node, _RANKS):
        return "bigint"
    if isinstance(node, exp.Length):
        return "int"
    if isinstance(node, _FRACTIONAL_FUNCTIONS):
        return "numeric"
    if isinstance(node, exp.Sum):  # sum(int) is bigint, sum(bigint) numeric
        inner = _number_kind(node.this)
        return {"int": "bigint", "bigint": "numeric"}.get(inner or "", inner)
    if isinstance(node, (exp.Max, exp.Min, exp.Abs)):
        return _number_kind(node.this)
    if isinstance(node, (exp.Add, exp.Sub, exp.Mul, exp.Mod)):
        if isinstance(node.this, exp.Interval) or isinstance(node.expression, exp.Interval):
            return None
        return _widest([_number_kind(node.this), _number_kind(node.expression)])
    if isinstance(node, (exp.Div, exp.IntDiv)):
        return _widest([_number_kind(node.this), _number_kind(node.expression)])
    if isinstance(node, (exp.Coalesce, exp.Greatest, exp.Least)):
        return _widest([_number_kind(e) for e in [node.this, *node.expressions]])
    if isinstance(node, exp.Case):
        branches = [i.args["true"] for i in node.args.get("ifs", [])] + [node.args.get("default")]
        return _widest([_number_kind(b) for b in branches if b is not None and not isinstance(b, exp.Null)])
    return None


def _bigquery_division(node: exp.Div, where: str) -> exp.Expression:
    """``a / b`` as PostgreSQL means it: ``DIV(a, b)`` for two integers (both truncate toward zero and are
    exact, where sqlglot's own CAST(TRUNC(a / b)) goes through FLOAT64), ``/`` when one side is real."""
    kinds = {_number_kind(node.this), _number_kind(node.expression)}
    if kinds & {"numeric", "float"}:
        return node
    if None not in kinds:
        return exp.IntDiv(this=node.this.copy(), expression=node.expression.copy())
    text = node.sql(dialect="postgres")
    raise ConfigError(
        f"{where}: `{text}` divides values whose types cannot be told from the SQL; PostgreSQL divides two"
        " integers without the remainder (7 / 2 = 3) and BigQuery's / never does (3.5), so the figure could"
        " differ. Cast one side to numeric for a real division (x::numeric / y) or write div(x, y) for"
        " integer division")


#: The constructs sqlglot's BigQuery output gets wrong, each rewritten or refused.
BIGQUERY_CONSTRUCTS: tuple[Construct, ...] = (JsonContains(), JsonHasKey(), JsonPath(), GenerateSeries(),
                                              ExtractPart(), TruncWeek(), LikeAny(), ToChar(), NumericScale())

#: Names that must not survive into BigQuery SQL (a construct no rule caught).
_POSTGRES_ONLY = re.compile(r"\b(JSONB_\w+|TO_CHAR|GENERATE_SERIES|ISODOW|EPOCH|ARRAY_CONTAINS_ALL)\b|@>|<@|\?\|", re.I)


def transpile(sql: str, dialect: str, *, where: str = "model", pretty: bool = False) -> str:
    """``sql`` (PostgreSQL) rewritten for ``dialect`` (``bigquery``), e.g. DISTINCT ON as ROW_NUMBER()."""
    # Whole-line comments (a model's header) are left out: sqlglot copies them into each subquery it
    # writes, as /* */ comments that a `*/` inside one would end early.
    sql = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    try:
        statements = [s for s in sqlglot.parse(sql, read="postgres") if s is not None]
    except sqlglot.errors.SqlglotError as exc:
        raise ConfigError(f"{where}: cannot be translated to {dialect}: {str(exc).splitlines()[0]}") from None
    if len(statements) != 1:
        raise ConfigError(f"{where}: a model is one SELECT statement, found {len(statements)}")
    tree = statements[0]
    if dialect == "bigquery":
        # Divisions first: the rules below write divisions of their own, meant as BigQuery's `/`.
        tree = tree.copy()
        # Innermost first, so that an outer division sees the DIV an inner one became.
        for division in reversed(list(tree.find_all(exp.Div))):
            replacement = _bigquery_division(division, where)
            if replacement is not division:
                division.replace(replacement)
        tree = tree.transform(lambda node: _bigquery_rule(node, where), copy=False)
    try:
        out = tree.sql(dialect=dialect, pretty=pretty, unsupported_level=sqlglot.ErrorLevel.RAISE)
    except sqlglot.errors.SqlglotError as exc:
        raise ConfigError(f"{where}: cannot be translated to {dialect}: {str(exc).splitlines()[0]}") from None
    if dialect == "bigquery":
        _check_bigquery(out, where)
    return out


def _bigquery_rule(node: exp.Expression, where: str) -> exp.Expression:
    for construct in BIGQUERY_CONSTRUCTS:
        if construct.matches(node):
            try:
                return construct.rewrite(node)
            except Refused as refused:
                reason = f" ({refused})" if str(refused) else ""
                raise ConfigError(
                    f"{where}: {construct.name} in `{node.sql(dialect='postgres')}` has no BigQuery equivalent"
                    f"{reason}; write it portably: {refused.alternative or construct.alternative}") from None
    return node


def _check_bigquery(out: str, where: str) -> None:
    """The translation parses as BigQuery SQL and holds no PostgreSQL-only construct."""
    try:
        sqlglot.parse_one(out, read="bigquery")
    except sqlglot.errors.SqlglotError as exc:
        raise ConfigError(f"{where}: the BigQuery translation does not parse: {str(exc).splitlines()[0]}") from None
    # Strings are dropped first: a pattern inside a literal is data, not SQL.
    leftover = _POSTGRES_ONLY.search(re.sub(r"'(?:[^'\\]|\\.|'')*'", "''", out))
    if leftover:
        raise ConfigError(f"{where}: {leftover.group(0).upper()} has no BigQuery equivalent and was left in the translation;"
                          " rewrite it with portable SQL")
