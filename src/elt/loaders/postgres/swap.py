"""One swap: a freshly built relation takes the place of a live one, keeping everything users added.

``swap(cur, schema, name, shadow)`` is used by table, view and materialised-view
models, and is written so that a raw ``replace`` stream can use it too (schema,
live name, shadow name; the shadow built and filled in the same transaction).

What carries over from the live relation to the new one:

- grants on the relation and on its columns, ``WITH GRANT OPTION`` included, and
  exactly those (privileges that default privileges put on the new relation but
  the old one did not have are revoked);
- owner, comment, column comments, storage options, ``NOT NULL`` columns a user set;
- row-level security (enabled / forced) and every policy;
- indexes, constraints and triggers a user added (those the shadow already has,
  by definition, are not doubled);
- views and materialised views reading it, directly or not, with their options
  (``security_invoker``, ``security_barrier``, ``check_option``), indexes,
  grants, owners and comments;
- SQL functions whose body or signature depends on it (``BEGIN ATOMIC`` bodies,
  ``RETURNS SETOF <table>``) with their owner and grants, and policies of other
  tables that read it.

Anything else that ``DROP ... CASCADE`` would remove (a foreign key from another
table, publication membership, a rule, extended statistics, an object that depends
on a carried function) makes the swap refuse with :class:`SwapRefused`, naming the
object and the fix; nothing is dropped then (the caller rolls back).

Readers are blocked only for catalog work: every copy that costs time in
proportion to the data (the new table, its indexes and constraints, dependent
materialised views, computed once from the new data) is built beside the live
relations before the swap locks them. The locked step drops the old relations
and renames the new ones in. Waiting for that lock is bounded too (new readers
queue behind a waiting ACCESS EXCLUSIVE request): :data:`LOCK_TIMEOUT` per
attempt, :data:`LOCK_ATTEMPTS` attempts, then the swap gives up and names the cause.

What a reader sees:

- a ``READ COMMITTED`` reader (the default) sees the old relation until the
  swap commits, waits for the short locked step, then sees the new one; never
  an empty or half-built relation;
- a ``REPEATABLE READ`` / ``SERIALIZABLE`` transaction whose snapshot was taken
  before the swap committed and that first reads the relation after it, sees the
  *new* relation as its snapshot shows it: empty (0 rows), since the new rows
  were written after its snapshot. Where that matters (long-running reports,
  ``pg_dump``), use :func:`replace_rows` (model setting ``swap: delete_insert``):
  the rows are deleted and inserted in one transaction, so such a reader keeps
  seeing the old rows, at the price of a table-sized write and dead rows for
  VACUUM.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus
from sqlglot.dialects.postgres import Postgres
from sqlglot.tokens import TokenType

from elt.errors import EltError
from elt.loaders.postgres.raw import short_identifier

_KIND_WORD = {"r": "TABLE", "p": "TABLE", "v": "VIEW", "m": "MATERIALIZED VIEW"}
_PRIVILEGE_COLUMNS = ("SELECT", "INSERT", "UPDATE", "REFERENCES")
#: What may follow a table name in a deparsed query when no alias was printed.
_AFTER_TABLE = {"WHERE", "JOIN", "ON", "GROUP", "ORDER", "LIMIT", "OFFSET", "UNION", "EXCEPT", "INTERSECT", "HAVING",
                "WINDOW", "FETCH", "FOR", "CROSS", "NATURAL", "LEFT", "RIGHT", "FULL", "INNER", "TABLESAMPLE", ")", ",",
                ";", "USING", "RETURNING", "SET", "WITH"}


class SwapRefused(EltError):
    """The swap would drop something a user added that it cannot carry over."""


@dataclass
class Relation:
    """One live relation (the swapped one or a view reading it) and everything to carry to its replacement."""

    oid: int
    schema: str
    name: str
    relkind: str
    shadow: str = ""
    owner: str = ""
    comment: str | None = None
    options: list[str] = field(default_factory=list)
    definition: str = ""  # views and materialised views
    rls: bool = False
    force_rls: bool = False
    replica_identity: str = "d"
    grants: list[tuple[str, str, bool]] = field(default_factory=list)
    column_grants: list[tuple[str, str, str, bool]] = field(default_factory=list)
    column_comments: list[tuple[str, str]] = field(default_factory=list)
    not_null: list[str] = field(default_factory=list)
    indexes: list[dict[str, Any]] = field(default_factory=list)
    constraints: list[dict[str, Any]] = field(default_factory=list)
    triggers: list[dict[str, Any]] = field(default_factory=list)
    policies: list[dict[str, Any]] = field(default_factory=list)

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)

    @property
    def shadow_ident(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.shadow)

    @property
    def kind(self) -> sql.SQL:
        return sql.SQL(_KIND_WORD[self.relkind])


@dataclass
class SwapReport:
    """What a swap carried over, for the build's action text."""

    relation: str
    replaced: bool = False
    dependents: list[str] = field(default_factory=list)
    recomputed: list[str] = field(default_factory=list)  # dependent materialised views computed from the new data
    functions: list[str] = field(default_factory=list)
    policies: int = 0
    indexes: int = 0

    def describe(self) -> str:
        def count(n: int, one: str, many: str) -> str:
            return f"{n} {one if n == 1 else many}"

        parts = [count(len(self.dependents), "dependent view", "dependent views") + " kept"] if self.dependents else []
        carried = [count(n, one, many) for n, one, many in (
            (self.policies, "policy", "policies"), (self.indexes, "index", "indexes"),
            (len(self.functions), "function", "functions")) if n]
        if carried:
            parts.append(f"{', '.join(carried)} carried over")
        return f"rebuilt ({'; '.join(parts)})" if parts else "rebuilt"


@dataclass
class _Plan:
    relations: list[Relation]  # the swapped relation first, then dependents, dependencies first
    functions: list[dict[str, Any]]
    foreign_policies: list[dict[str, Any]]
    refusals: list[str]
    seen: list[tuple[str, int]]

    @property
    def main(self) -> Relation:
        return self.relations[0]


def swap(cur: Any, schema: str, name: str, shadow: str, *, where: str = "",
         own_indexes: Collection[str] = ()) -> SwapReport:
    """Put ``schema.shadow`` in the place of ``schema.name``, carrying over what users added to the live one.

    Runs in the cursor's transaction; the caller commits (and rolls back on an error, which
    leaves the live relation as it was). ``where`` (a model file) starts refusal messages;
    ``own_indexes`` names indexes of the live relation that the caller built anew on the shadow
    itself (they are not carried).
    """
    report = SwapReport(f"{schema}.{name}")
    # Swaps take turns: two swaps sharing a dependent view would otherwise deadlock dropping it.
    # Only this step is serialised; the builds before it run in parallel.
    cur.execute("SELECT pg_advisory_xact_lock(hashtext('elt:swap'))")
    search_path = _qualify_all(cur)
    try:
        plan = _plan(cur, schema, name)
        if plan is None:
            cur.execute(sql.SQL("ALTER {} {} RENAME TO {}").format(
                _kind_of(cur, schema, shadow), sql.Identifier(schema, shadow), sql.Identifier(name)))
            return report
        _refuse(plan, where)
        plan.main.indexes = [i for i in plan.main.indexes if i["name"] not in own_indexes]
        plan.main.shadow = shadow
        renames = {plan.main.qualified: (plan.main.schema, shadow)}
        for dependent in plan.relations[1:]:
            dependent.shadow = short_identifier(dependent.qualified, "swap")
            renames[dependent.qualified] = (dependent.schema, dependent.shadow)
        # Everything that takes time builds here, beside the live relations (readers go on reading).
        for relation in plan.relations:
            if relation is not plan.main:
                _create_dependent(cur, relation, renames)
            _carry_onto_shadow(cur, relation, renames, where)
        # The locked step: catalog work only.
        _lock(cur, plan.main, where)
        again = _plan(cur, schema, name)
        if again is None or again.seen != plan.seen:
            raise SwapRefused(f"{_prefix(where)}objects depending on {schema}.{name} changed during the rebuild;"
                              " nothing was replaced: run it again")
        cur.execute(sql.SQL("DROP {} {} CASCADE").format(plan.main.kind, plan.main.ident))
        for relation in plan.relations:
            cur.execute(sql.SQL("ALTER {} {} RENAME TO {}").format(
                _kind_of(cur, relation.schema, relation.shadow), relation.shadow_ident, sql.Identifier(relation.name)))
            for index in relation.indexes + relation.constraints:
                if index.get("temp"):
                    cur.execute(sql.SQL("ALTER INDEX {} RENAME TO {}").format(
                        sql.Identifier(relation.schema, index["temp"]), sql.Identifier(index["name"])))
        for function in plan.functions:
            _recreate_function(cur, function, where)
        for policy in plan.foreign_policies:
            _run(cur, _policy_sql(policy, sql.SQL(policy["table"])), f"policy {policy['name']} on {policy['table']}", where)
    finally:
        # After a failed statement the transaction is rolled back by the caller, and the path with it.
        if cur.connection.info.transaction_status != TransactionStatus.INERROR:
            cur.execute("SELECT set_config('search_path', %s, true)", [search_path])
    report.replaced = True
    report.dependents = [r.qualified for r in plan.relations[1:]]
    report.recomputed = [r.qualified for r in plan.relations[1:] if r.relkind == "m"]
    report.functions = [f["signature"] for f in plan.functions]
    report.policies = sum(len(r.policies) for r in plan.relations) + len(plan.foreign_policies)
    report.indexes = sum(len([i for i in r.indexes if not i.get("skip")]) for r in plan.relations)
    return report


#: How long one attempt waits for the live relation's lock, and how many attempts. While the swap
#: waits, new readers queue behind it: a bounded wait keeps a long-running query from stalling them all.
LOCK_TIMEOUT = "3s"
LOCK_ATTEMPTS = 5
LOCK_PAUSE_S = 1.0


def _lock(cur: Any, relation: Relation, where: str) -> None:
    cur.execute("SELECT current_setting('lock_timeout')")
    previous = cur.fetchone()[0]
    for attempt in range(1, LOCK_ATTEMPTS + 1):
        cur.execute("SAVEPOINT elt_swap_lock")
        cur.execute("SELECT set_config('lock_timeout', %s, true)", [LOCK_TIMEOUT])
        try:
            cur.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(relation.ident))
        except psycopg.errors.LockNotAvailable:
            cur.execute("ROLLBACK TO SAVEPOINT elt_swap_lock")
            if attempt == LOCK_ATTEMPTS:
                raise SwapRefused(
                    f"{_prefix(where)}{relation.qualified} stayed in use by another transaction ({LOCK_ATTEMPTS} waits"
                    f" of {LOCK_TIMEOUT}); nothing was replaced. Find it with SELECT pid, query FROM pg_stat_activity"
                    " WHERE state <> 'idle', let it finish (or end it), and run again") from None
            time.sleep(LOCK_PAUSE_S)  # readers queued behind the attempt go on meanwhile
            continue
        cur.execute("RELEASE SAVEPOINT elt_swap_lock")
        cur.execute("SELECT set_config('lock_timeout', %s, true)", [previous])
        return


def replace_rows(cur: Any, schema: str, name: str, shadow: str) -> bool:
    """Replace the rows of ``schema.name`` by those of ``schema.shadow`` in place (DELETE + INSERT), then drop the shadow.

    Everything users added stays (the relation is the same), and a ``REPEATABLE READ``
    reader keeps seeing the old rows. Returns False, changing nothing, when the columns
    differ (names or types): the caller swaps instead.
    """
    columns = [_columns(cur, schema, n) for n in (name, shadow)]
    if columns[0] != columns[1] or not columns[0]:
        return False
    cols = sql.SQL(", ").join(sql.Identifier(c) for c, _ in columns[0])
    live, new = sql.Identifier(schema, name), sql.Identifier(schema, shadow)
    # DELETE, not TRUNCATE: TRUNCATE is not MVCC-safe and takes ACCESS EXCLUSIVE for the whole copy.
    cur.execute(sql.SQL("DELETE FROM {}").format(live))
    cur.execute(sql.SQL("INSERT INTO {} ({c}) SELECT {c} FROM {}").format(live, new, c=cols))
    cur.execute(sql.SQL("DROP TABLE {}").format(new))
    return True


# -- reading what the live relations carry ---------------------------------------------------------------


def _qualify_all(cur: Any) -> str:
    """Print every name schema-qualified (view and function definitions re-create exactly); return the old path."""
    cur.execute("SELECT current_setting('search_path')")
    search_path = cur.fetchone()[0]
    cur.execute("SELECT set_config('search_path', 'pg_catalog', true)")
    return str(search_path)


def _kind_of(cur: Any, schema: str, name: str) -> sql.SQL:
    cur.execute("SELECT relkind FROM pg_class WHERE oid = %s::regclass", [f"{_quote(schema)}.{_quote(name)}"])
    return sql.SQL(_KIND_WORD[cur.fetchone()[0]])


def _columns(cur: Any, schema: str, name: str) -> list[tuple[str, str]]:
    cur.execute(
        "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a"
        " JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        [schema, name])
    return [(r[0], r[1]) for r in cur.fetchall()]


def _plan(cur: Any, schema: str, name: str) -> _Plan | None:
    cur.execute(
        "SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND c.relname = %s AND c.relkind IN ('r', 'p', 'v', 'm')", [schema, name])
    row = cur.fetchone()
    if row is None:
        return None
    plan = _Plan([], [], [], [], [])
    queue, done = [int(row[0])], set()
    # Bounded: a relation is visited once, and the catalog has finitely many.
    while queue:
        oid = queue.pop(0)
        if oid in done:
            continue
        done.add(oid)
        relation = _relation(cur, oid)
        plan.relations.append(relation)
        for dep in _direct_dependents(cur, oid):
            plan.seen.append((dep["class"], dep["objid"]))
            _classify(cur, plan, relation, dep, queue)
    plan.relations = [plan.relations[0]] + _dependencies_first(cur, plan.relations[1:])
    plan.seen.sort()
    return plan


def _relation(cur: Any, oid: int) -> Relation:
    cur.execute(
        "SELECT n.nspname, c.relname, c.relkind, pg_get_userbyid(c.relowner), obj_description(c.oid, 'pg_class'),"
        " coalesce(c.reloptions, '{}'), c.relrowsecurity, c.relforcerowsecurity, c.relreplident,"
        " CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid) END"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = %s", [oid])
    (schema, name, relkind, owner, comment, options, rls, force, replident, definition) = cur.fetchone()
    relation = Relation(oid, schema, name, relkind, owner=owner, comment=comment, options=list(options),
                        definition=(definition or "").rstrip().rstrip(";"), rls=rls, force_rls=force,
                        replica_identity=replident)
    cur.execute(
        "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END,"
        " a.privilege_type, a.is_grantable FROM pg_class c, aclexplode(c.relacl) a"
        " WHERE c.oid = %s AND a.grantee <> c.relowner ORDER BY 1, 2", [oid])
    relation.grants = [(r[0], r[1], r[2]) for r in cur.fetchall()]
    cur.execute(
        "SELECT at.attname, CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END,"
        " a.privilege_type, a.is_grantable FROM pg_attribute at, aclexplode(at.attacl) a"
        " WHERE at.attrelid = %s AND at.attnum > 0 AND NOT at.attisdropped ORDER BY 1, 2, 3", [oid])
    relation.column_grants = [(r[0], r[1], r[2], r[3]) for r in cur.fetchall()]
    cur.execute(
        "SELECT a.attname, col_description(a.attrelid, a.attnum), a.attnotnull FROM pg_attribute a"
        " WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum", [oid])
    for column, comment, not_null in cur.fetchall():
        if comment is not None:
            relation.column_comments.append((column, comment))
        if not_null:
            relation.not_null.append(column)
    # Indexes not backing a constraint (those come with their constraint).
    cur.execute(
        "SELECT ic.relname, pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid"
        " WHERE i.indrelid = %s AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid"
        " AND k.conrelid = i.indrelid) ORDER BY 1", [oid])
    relation.indexes = [{"name": r[0], "definition": r[1]} for r in cur.fetchall()]
    cur.execute(
        "SELECT conname, contype, pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE conrelid = %s AND contype IN ('p', 'u', 'x', 'c', 'f') ORDER BY conname", [oid])
    relation.constraints = [{"name": r[0], "type": r[1], "definition": r[2]} for r in cur.fetchall()]
    cur.execute(
        "SELECT tgname, pg_get_triggerdef(oid), tgenabled FROM pg_trigger WHERE tgrelid = %s AND NOT tgisinternal"
        " ORDER BY tgname", [oid])
    relation.triggers = [{"name": r[0], "definition": r[1], "enabled": r[2]} for r in cur.fetchall()]
    relation.policies = _policies(cur, "p.polrelid = %s", oid)
    return relation


def _policies(cur: Any, condition: str, value: int) -> list[dict[str, Any]]:
    cur.execute(
        "SELECT p.polname, p.polpermissive, p.polcmd,"
        " array(SELECT CASE WHEN r = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(r)) END"
        "       FROM unnest(p.polroles) AS r ORDER BY 1),"
        " pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid),"
        " format('%%I.%%I', n.nspname, c.relname)"
        " FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
        f" WHERE {condition} ORDER BY p.polname", [value])
    return [{"name": r[0], "permissive": r[1], "command": r[2], "roles": list(r[3]), "using": r[4], "check": r[5],
             "table": r[6]} for r in cur.fetchall()]


def _direct_dependents(cur: Any, oid: int) -> list[dict[str, Any]]:
    """Objects that ``DROP ... CASCADE`` of ``oid`` removes directly: they depend on it, its columns or its row type."""
    cur.execute(
        """
        SELECT d.classid::regclass::text AS class, d.objid, pg_describe_object(d.classid, d.objid, d.objsubid) AS what
          FROM pg_depend d
          JOIN pg_class c ON c.oid = %(oid)s
          LEFT JOIN pg_type t ON t.oid = c.reltype
         WHERE d.deptype IN ('n', 'a')
           AND ((d.refclassid = 'pg_class'::regclass AND d.refobjid = c.oid)
             -- functions returning SETOF the table, or taking its rows, depend on its row type
             OR (d.refclassid = 'pg_type'::regclass AND d.refobjid IN (t.oid, t.typarray)))
           AND NOT (d.classid = 'pg_type'::regclass AND d.objid = t.typarray)
         GROUP BY 1, 2, 3
         ORDER BY 1, 2
        """,
        {"oid": oid})
    return [{"class": r[0], "objid": int(r[1]), "what": r[2]} for r in cur.fetchall()]


def _classify(cur: Any, plan: _Plan, relation: Relation, dep: dict[str, Any], queue: list[int]) -> None:
    """Decide, for one object depending on ``relation``, whether it is carried over or refused."""
    objid, what, cls = dep["objid"], dep["what"], dep["class"]
    fix = " or set `-- swap: delete_insert` on the model (rows are replaced in place, the relation is kept)"
    if cls == "pg_rewrite":
        cur.execute("SELECT ev_class, rulename FROM pg_rewrite WHERE oid = %s", [objid])
        ev_class, rulename = cur.fetchone()
        if ev_class != relation.oid and rulename == "_RETURN":
            queue.append(int(ev_class))
        else:
            plan.refusals.append(f"{what}: a rule is not carried over; drop it (re-create it after the rebuild){fix}")
    elif cls == "pg_class":
        cur.execute("SELECT relkind FROM pg_class WHERE oid = %s", [objid])
        relkind = cur.fetchone()[0]
        # Own indexes are carried; own sequences (serial columns) come new with the shadow.
        if relkind not in ("i", "I", "S"):
            plan.refusals.append(f"{what} depends on {relation.qualified}; drop it first{fix}")
    elif cls == "pg_constraint":
        cur.execute("SELECT conrelid, conname, conrelid::regclass::text FROM pg_constraint WHERE oid = %s", [objid])
        conrelid, conname, table = cur.fetchone()
        if conrelid != relation.oid:
            plan.refusals.append(
                f"foreign key {conname} on {table} references {relation.qualified}; a rebuild would drop it."
                f" Drop it (ALTER TABLE {table} DROP CONSTRAINT {conname}) and check the reference with a"
                f" `relationships` data test instead,{fix}")
    elif cls == "pg_trigger":
        cur.execute("SELECT tgrelid FROM pg_trigger WHERE oid = %s", [objid])
        if cur.fetchone()[0] != relation.oid:
            plan.refusals.append(f"{what} depends on {relation.qualified}; drop it first{fix}")
    elif cls == "pg_policy":
        cur.execute("SELECT polrelid FROM pg_policy WHERE oid = %s", [objid])
        if cur.fetchone()[0] != relation.oid:
            plan.foreign_policies.extend(_policies(cur, "p.oid = %s", objid))
    elif cls == "pg_proc":
        if any(f["oid"] == objid for f in plan.functions):
            return
        cur.execute(
            "SELECT p.oid::regprocedure::text, pg_get_functiondef(p.oid), pg_get_userbyid(p.proowner),"
            " p.proacl IS NOT NULL, obj_description(p.oid, 'pg_proc'),"
            " array(SELECT pg_describe_object(d.classid, d.objid, d.objsubid) FROM pg_depend d"
            "        WHERE d.refclassid = 'pg_proc'::regclass AND d.refobjid = p.oid AND d.deptype IN ('n', 'a'))"
            " FROM pg_proc p WHERE p.oid = %s", [objid])
        signature, definition, owner, has_acl, comment, users = cur.fetchone()
        if users:
            plan.refusals.append(
                f"{', '.join(users)} depends on function {signature}, which depends on {relation.qualified}:"
                f" only functions nothing else depends on are carried over; drop and re-create them after the rebuild,{fix}")
        cur.execute(
            "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END,"
            " a.privilege_type, a.is_grantable FROM pg_proc p, aclexplode(p.proacl) a"
            " WHERE p.oid = %s AND a.grantee <> p.proowner ORDER BY 1", [objid])
        plan.functions.append({"oid": objid, "signature": signature, "definition": definition, "owner": owner,
                               "has_acl": has_acl, "comment": comment, "grants": cur.fetchall()})
    elif cls == "pg_attrdef":
        cur.execute("SELECT adrelid FROM pg_attrdef WHERE oid = %s", [objid])
        if cur.fetchone()[0] != relation.oid:
            plan.refusals.append(f"{what} depends on {relation.qualified}; drop it first{fix}")
    else:
        # pg_publication_rel (Supabase Realtime), pg_statistic_ext, and anything not known: refuse, never drop.
        plan.refusals.append(f"{what} depends on {relation.qualified} and would be dropped by the rebuild;"
                             f" remove it before the rebuild and add it again after,{fix}")


def _dependencies_first(cur: Any, relations: list[Relation]) -> list[Relation]:
    """Order dependent views so each comes after the views it reads (bounded by their number)."""
    oids = {r.oid for r in relations}
    reads: dict[int, set[int]] = {}
    for relation in relations:
        cur.execute(
            "SELECT DISTINCT d.refobjid FROM pg_rewrite r JOIN pg_depend d ON d.objid = r.oid"
            " AND d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass"
            " WHERE r.ev_class = %s AND d.refobjid <> %s", [relation.oid, relation.oid])
        reads[relation.oid] = {int(r[0]) for r in cur.fetchall()} & oids
    ordered: list[Relation] = []
    placed: set[int] = set()
    for _ in range(len(relations) + 1):
        for relation in relations:
            if relation.oid not in placed and reads[relation.oid] <= placed:
                ordered.append(relation)
                placed.add(relation.oid)
    return ordered


def _refuse(plan: _Plan, where: str) -> None:
    main = plan.main
    problems = list(plan.refusals)
    if problems:
        raise SwapRefused(f"{_prefix(where)}{main.qualified} was not rebuilt, to keep what was added to it: "
                          + "; ".join(dict.fromkeys(problems)))


def _prefix(where: str) -> str:
    return f"{where}: " if where else ""


# -- building the replacements beside the live relations ------------------------------------------------


def retarget(text: str, renames: dict[str, tuple[str, str]], *, keep_alias: bool = True) -> str:
    """``text`` (deparsed SQL) reading the shadows named in ``renames`` instead of the live relations.

    Names are matched as tokens (never inside strings or longer names). Where no alias was
    printed, the old name becomes the alias, so ``orders.id`` still resolves.
    """
    tokens = Postgres().tokenize(text)
    wanted: dict[tuple[str | None, str | None], tuple[str, str]] = {
        (k.split(".", 1)[0], k.split(".", 1)[1]): v for k, v in renames.items()}
    out, last = [], 0

    def word(i: int) -> str | None:
        token = tokens[i]
        if token.token_type in (TokenType.STRING, TokenType.DOT, TokenType.NUMBER):
            return None
        return token.text if token.token_type == TokenType.IDENTIFIER else token.text.lower()

    for i in range(len(tokens) - 2):
        if tokens[i + 1].token_type != TokenType.DOT or (i and tokens[i - 1].token_type == TokenType.DOT):
            continue
        if i + 3 < len(tokens) and tokens[i + 3].token_type == TokenType.DOT:
            continue  # schema.table.column: not a relation reference
        key = (word(i), word(i + 2))
        if key not in wanted:
            continue
        schema, shadow = wanted[key]
        replacement = f"{_quote(schema)}.{_quote(shadow)}"
        following = tokens[i + 3] if i + 3 < len(tokens) else None
        if keep_alias and (following is None or following.text.upper() in _AFTER_TABLE):
            replacement += f" AS {_quote(key[1] or '')}"
        out.append(text[last:tokens[i].start])
        out.append(replacement)
        last = tokens[i + 2].end + 1
    out.append(text[last:])
    return "".join(out)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _run(cur: Any, statement: Any, what: str, where: str) -> None:
    """Run one carry-over statement; a failure names what could not be carried and stops the swap."""
    try:
        cur.execute(statement)
    except psycopg.Error as exc:
        raise SwapRefused(
            f"{_prefix(where)}{what} cannot be carried over to the new relation: {str(exc).splitlines()[0]}."
            " Nothing was replaced; change the model so it still fits (a column it uses was removed?),"
            " or drop it before the rebuild") from None


def _create_dependent(cur: Any, relation: Relation, renames: dict[str, tuple[str, str]]) -> None:
    options: sql.Composable = sql.SQL("")
    if relation.options:
        options = sql.SQL(" WITH ({})").format(sql.SQL(", ").join(sql.SQL(o) for o in relation.options))
    cur.execute(sql.SQL("CREATE {kind} {name}{options} AS {body}").format(
        kind=relation.kind, name=relation.shadow_ident, options=options,
        body=sql.SQL(retarget(relation.definition, renames))))  # type: ignore[arg-type]


def _carry_onto_shadow(cur: Any, relation: Relation, renames: dict[str, tuple[str, str]], where: str) -> None:
    target = relation.shadow_ident
    label = relation.qualified
    shadow_columns = {c for c, _ in _columns(cur, relation.schema, relation.shadow)}
    cur.execute("SELECT relkind, pg_get_userbyid(relowner) FROM pg_class WHERE oid = %s::regclass",
                [f"{_quote(relation.schema)}.{_quote(relation.shadow)}"])
    relkind, owner = cur.fetchone()
    kind = sql.SQL(_KIND_WORD[relkind])
    is_table = relkind in ("r", "p")
    if not is_table and (relation.rls or relation.policies or relation.constraints
                         or (relation.triggers and relation.relkind != relkind)):
        raise SwapRefused(f"{_prefix(where)}{label} is no longer a table, so its row-level security, policies,"
                          " triggers and constraints would be lost; nothing was replaced. Drop them first, or keep"
                          " the model a table")
    if relation.options and relkind == relation.relkind:
        _run(cur, sql.SQL("ALTER {} {} SET ({})").format(kind, target, sql.SQL(", ").join(sql.SQL(o) for o in relation.options)),
             f"options ({', '.join(relation.options)}) of {label}", where)
    _exact_grants(cur, relation, where)
    for column, grantee, privilege, grantable in relation.column_grants:
        what = f"grant {privilege} ({column}) on {label} to {grantee}"
        if column not in shadow_columns:
            raise SwapRefused(f"{_prefix(where)}{what}: the new {label} has no column {column}; nothing was replaced."
                              f" Keep the column in the model, or REVOKE {privilege} ({column}) ON {label} FROM {grantee}")
        _run(cur, sql.SQL("GRANT {p} ({c}) ON {t} TO {who}{option}").format(
            p=sql.SQL(privilege), c=sql.Identifier(column), t=target, who=sql.SQL(grantee),
            option=sql.SQL(" WITH GRANT OPTION" if grantable else "")), what, where)
    for column, comment in relation.column_comments:
        if column in shadow_columns:
            cur.execute(sql.SQL("COMMENT ON COLUMN {}.{} IS {}").format(target, sql.Identifier(column), sql.Literal(comment)))
    if relation.comment is not None:
        cur.execute(sql.SQL("COMMENT ON {} {} IS {}").format(kind, target, sql.Literal(relation.comment)))
    if is_table:
        _carry_table(cur, relation, renames, where)
    else:
        _carry_indexes(cur, relation, renames, where)
    for trigger in relation.triggers:  # INSTEAD OF triggers of views too
        _run(cur, sql.SQL(retarget(trigger["definition"], renames, keep_alias=False)),  # type: ignore[arg-type]
             f"trigger {trigger['name']} on {label}", where)
        if trigger["enabled"] == "D":
            cur.execute(sql.SQL("ALTER TABLE {} DISABLE TRIGGER {}").format(target, sql.Identifier(trigger["name"])))
    if relation.owner and owner != relation.owner:
        # Last: after it the builder may no longer own the new relation.
        _run(cur, sql.SQL("ALTER {} {} OWNER TO {}").format(kind, target, sql.Identifier(relation.owner)),
             f"owner {relation.owner} of {label}", where)


def _carry_table(cur: Any, relation: Relation, renames: dict[str, tuple[str, str]], where: str) -> None:
    target, label = relation.shadow_ident, relation.qualified
    shadow_columns = {c for c, _ in _columns(cur, relation.schema, relation.shadow)}
    cur.execute("SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnotnull AND attnum > 0",
                [f"{_quote(relation.schema)}.{_quote(relation.shadow)}"])
    already = {r[0] for r in cur.fetchall()}
    for column in relation.not_null:
        if column in shadow_columns and column not in already:
            _run(cur, sql.SQL("ALTER TABLE {} ALTER COLUMN {} SET NOT NULL").format(target, sql.Identifier(column)),
                 f"NOT NULL on {label}.{column}", where)
    _carry_constraints(cur, relation, where)
    _carry_indexes(cur, relation, renames, where)
    if relation.rls:
        cur.execute(sql.SQL("ALTER TABLE {} ENABLE ROW LEVEL SECURITY").format(target))
    if relation.force_rls:
        cur.execute(sql.SQL("ALTER TABLE {} FORCE ROW LEVEL SECURITY").format(target))
    for policy in relation.policies:
        _run(cur, _policy_sql(policy, target), f"policy {policy['name']} on {label}", where)
    if relation.relkind not in ("r", "p"):
        return  # a view has no replica identity to carry
    if relation.replica_identity in ("f", "n"):
        cur.execute(sql.SQL("ALTER TABLE {} REPLICA IDENTITY {}").format(
            target, sql.SQL("FULL" if relation.replica_identity == "f" else "NOTHING")))
    elif relation.replica_identity == "i":
        raise SwapRefused(f"{_prefix(where)}{label} has REPLICA IDENTITY USING INDEX, which is not carried over;"
                          f" nothing was replaced. Use REPLICA IDENTITY FULL or DEFAULT, or `-- swap: delete_insert`")


def _exact_grants(cur: Any, relation: Relation, where: str) -> None:
    """The shadow's relation-level grants become exactly the live relation's (default privileges undone)."""
    cur.execute(
        "SELECT DISTINCT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END"
        " FROM pg_class c, aclexplode(c.relacl) a WHERE c.oid = %s::regclass AND a.grantee <> c.relowner",
        [f"{_quote(relation.schema)}.{_quote(relation.shadow)}"])
    for (grantee,) in cur.fetchall():
        cur.execute(sql.SQL("REVOKE ALL ON {} FROM {}").format(relation.shadow_ident, sql.SQL(grantee)))
    for grantee, privilege, grantable in relation.grants:
        _run(cur, sql.SQL("GRANT {p} ON {t} TO {who}{option}").format(
            p=sql.SQL(privilege), t=relation.shadow_ident, who=sql.SQL(grantee),
            option=sql.SQL(" WITH GRANT OPTION" if grantable else "")),
            f"grant {privilege} on {relation.qualified} to {grantee}", where)


def _carry_constraints(cur: Any, relation: Relation, where: str) -> None:
    cur.execute("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass",
                [f"{_quote(relation.schema)}.{_quote(relation.shadow)}"])
    present = {r[0] for r in cur.fetchall()}
    for constraint in relation.constraints:
        if constraint["definition"] in present:
            constraint["skip"] = True
            continue
        name = constraint["name"]
        if constraint["type"] in ("p", "u", "x"):
            # Its index takes the constraint's name, which the live one still holds until the swap.
            constraint["temp"] = name = short_identifier(f"{relation.qualified}.{name}", "swapk")
        _run(cur, sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
            relation.shadow_ident, sql.Identifier(name), sql.SQL(constraint["definition"])),
            f"constraint {constraint['name']} on {relation.qualified}", where)


def _carry_indexes(cur: Any, relation: Relation, renames: dict[str, tuple[str, str]], where: str) -> None:
    cur.execute(
        "SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = %s::regclass",
        [f"{_quote(relation.schema)}.{_quote(relation.shadow)}"])
    present = {_index_shape(r[0]) for r in cur.fetchall()}
    for index in relation.indexes:
        if _index_shape(index["definition"]) in present:
            index["skip"] = True  # the builder made the same index (its key index)
            continue
        index["temp"] = short_identifier(f"{relation.qualified}.{index['name']}", "swapi")
        head, _, rest = index["definition"].partition(" INDEX ")
        rest = rest.split(" ", 1)[1]  # drop the name: "<name> ON <table> USING ..."
        statement = f"{head} INDEX {_quote(index['temp'])} {retarget(rest, renames, keep_alias=False)}"
        _run(cur, sql.SQL(statement), f"index {index['name']} on {relation.qualified}", where)  # type: ignore[arg-type]


def _index_shape(definition: str) -> tuple[bool, str]:
    """An index without its name and table: unique or not, and what follows USING."""
    return definition.startswith("CREATE UNIQUE"), definition.partition(" USING ")[2]


def _policy_sql(policy: dict[str, Any], table: sql.Composable) -> sql.Composable:
    command = {"r": "SELECT", "a": "INSERT", "w": "UPDATE", "d": "DELETE", "*": "ALL"}[policy["command"]]
    parts = [sql.SQL("CREATE POLICY {} ON {} AS {} FOR {} TO {}").format(
        sql.Identifier(policy["name"]), table, sql.SQL("PERMISSIVE" if policy["permissive"] else "RESTRICTIVE"),
        sql.SQL(command), sql.SQL(", ").join(sql.SQL(r) for r in policy["roles"]))]
    if policy["using"] is not None:
        parts.append(sql.SQL("USING ({})").format(sql.SQL(policy["using"])))
    if policy["check"] is not None:
        parts.append(sql.SQL("WITH CHECK ({})").format(sql.SQL(policy["check"])))
    return sql.SQL(" ").join(parts)


def _recreate_function(cur: Any, function: dict[str, Any], where: str) -> None:
    what = f"function {function['signature']}"
    _run(cur, sql.SQL(function["definition"]), what, where)
    name = sql.SQL(function["signature"])  # regprocedure text is already quoted and qualified
    cur.execute(sql.SQL("ALTER FUNCTION {} OWNER TO {}").format(name, sql.Identifier(function["owner"])))
    if function["has_acl"]:
        cur.execute(sql.SQL("REVOKE ALL ON FUNCTION {} FROM PUBLIC").format(name))
    for grantee, privilege, grantable in function["grants"]:
        cur.execute(sql.SQL("GRANT {} ON FUNCTION {} TO {}{}").format(
            sql.SQL(privilege), name, sql.SQL(grantee), sql.SQL(" WITH GRANT OPTION" if grantable else "")))
    if function["comment"] is not None:
        cur.execute(sql.SQL("COMMENT ON FUNCTION {} IS {}").format(name, sql.Literal(function["comment"])))
