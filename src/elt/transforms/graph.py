"""The model graph: dependencies read from the SQL itself, build order, and selections.

Every table a model selects from is found with sqlglot (CTE names excluded).
A reference into ``stg``, ``mart`` or ``rpt`` must be another model (or a view
the loader generates for a stream); ``raw`` tables and anything else are
sources. A cycle or a reference to a missing model is an error naming both
files.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import sqlglot
from sqlglot import exp

from elt.errors import ConfigError
from elt.logs import get_logger
from elt.transforms.models import LAYERS, Model

# Fallback when sqlglot cannot parse a model (exotic PostgreSQL syntax): good enough for FROM/JOIN.
_FROM = re.compile(r"\b(?:from|join)\s+([a-z_][a-z0-9_]*)\.([a-z_][a-z0-9_]*)", re.I)


def references(sql: str, where: str = "model") -> set[str]:
    """The ``schema.table`` names a query reads (unqualified names are left out: they are not models)."""
    try:
        tree = sqlglot.parse_one(sql, read="postgres")
    except sqlglot.errors.ParseError as exc:
        get_logger().warning("sqlglot could not parse the model; dependencies read with a simple pattern",
                             model=where, error=str(exc).splitlines()[0])
        return {f"{s.lower()}.{t.lower()}" for s, t in _FROM.findall(sql)}
    # CTE names are never schema-qualified, so qualified tables are exactly the relations read.
    return {f"{t.db.lower()}.{t.name.lower()}" for t in tree.find_all(exp.Table) if t.db}


@dataclass
class Graph:
    """Models by relation, with edges both ways."""

    models: dict[str, Model]
    dependents: dict[str, set[str]]
    #: Raw tables the project's streams load (a model reading one that is not there yet waits for data).
    sources: set[str] = field(default_factory=set)

    @classmethod
    def build(cls, models: Iterable[Model], external: Iterable[str] = (), sources: Iterable[str] = ()) -> Graph:
        """Read each model's dependencies and check them; ``external`` are relations that exist without a model."""
        by_relation = {m.relation: m for m in models}
        known_external = set(external)
        for model in by_relation.values():
            model.reads = references(model.sql, model.path) - {model.relation}
            reads = model.reads | {d.lower() for d in model.depends_on}
            # A relationships test reads its parent table: build that first.
            reads |= {".".join(t.args[0].lower().split(".")[:2]) for t in model.config.tests if t.kind == "relationships"}
            model.depends_on = set()
            for ref in sorted(reads):
                if ref == model.relation:
                    continue
                schema, _, name = ref.partition(".")
                if ref in by_relation:
                    model.depends_on.add(ref)
                elif schema in LAYERS and ref not in known_external:
                    raise ConfigError(
                        f"{model.path} selects from {ref}, but there is no sql/{schema}/{name}.sql"
                        f" (nor a Transform named {ref}); create it or fix the name"
                    )
        dependents: dict[str, set[str]] = {r: set() for r in by_relation}
        for model in by_relation.values():
            for dep in model.depends_on:
                dependents[dep].add(model.relation)
        graph = cls(by_relation, dependents, set(sources))
        graph.order()  # raises on a cycle
        return graph

    def order(self, selected: Iterable[str] | None = None) -> list[Model]:
        """Models in build order (dependencies first); ties broken by layer, then name."""
        chosen = set(self.models if selected is None else selected)
        remaining = {r: {d for d in self.models[r].depends_on if d in chosen} for r in chosen}
        ordered: list[Model] = []
        while remaining:
            ready = sorted((r for r, deps in remaining.items() if not deps), key=_layer_then_name)
            if not ready:
                raise ConfigError(f"models depend on each other in a cycle: {self._cycle(remaining)}")
            for relation in ready:
                ordered.append(self.models[relation])
                del remaining[relation]
            for deps in remaining.values():
                deps.difference_update(ready)
        return ordered

    def _cycle(self, remaining: dict[str, set[str]]) -> str:
        # Walk dependencies from any member until a relation repeats: that loop is the cycle.
        start = sorted(remaining)[0]
        path, seen = [start], {start: 0}
        while True:
            nxt = sorted(remaining[path[-1]])[0]
            if nxt in seen:
                loop = path[seen[nxt]:] + [nxt]
                return " -> ".join(f"{self.models[r].path} ({r})" for r in loop)
            seen[nxt] = len(path)
            path.append(nxt)

    def downstream(self, relations: Iterable[str]) -> set[str]:
        """``relations`` and every model that reads from them, directly or not."""
        return self._walk(relations, lambda r: self.dependents[r])

    def upstream(self, relations: Iterable[str]) -> set[str]:
        """``relations`` and every model they read from, directly or not."""
        return self._walk(relations, lambda r: self.models[r].depends_on)

    def _walk(self, relations: Iterable[str], edges: Callable[[str], Iterable[str]]) -> set[str]:
        found: set[str] = set()
        stack = [r for r in relations if r in self.models]
        while stack:
            relation = stack.pop()
            if relation not in found:
                found.add(relation)
                stack.extend(edges(relation))
        return found

    def reading(self, tables: Iterable[str]) -> set[str]:
        """Models that read any of ``tables`` (e.g. a pipeline's raw tables), and their dependents."""
        wanted = {t.lower() for t in tables}
        direct = [r for r, m in self.models.items() if wanted & (m.reads | m.depends_on)]
        return self.downstream(direct)

    def select(self, selectors: Iterable[str] = (), layers: Iterable[str] = ()) -> set[str]:
        """dbt-style selection: ``name`` alone, ``name+`` with its dependents, ``+name`` with what it reads;
        a layer name (``mart``, ``mart+``) selects every model of that layer.

        A name is ``schema.name`` or just ``name`` when that is unique. ``layers``
        select every model of a layer, with its dependents. Nothing given: all models.
        """
        selectors, layers = list(selectors), list(layers)
        if not selectors and not layers:
            return set(self.models)
        chosen: set[str] = set()
        for layer in layers:
            if layer not in LAYERS:
                raise ConfigError(f"unknown layer {layer!r}; layers are {', '.join(LAYERS)}")
            chosen |= self.downstream(r for r, m in self.models.items() if m.schema == layer)
        for selector in selectors:
            down, up = selector.endswith("+"), selector.startswith("+")
            name = selector.strip("+")
            if name in LAYERS and not any(m.name == name for m in self.models.values()):
                # A layer: every model in it ("mart+": and what reads them).
                members = [r for r, m in self.models.items() if m.schema == name]
                chosen |= set(members)
                chosen |= self.downstream(members) if down else set()
                chosen |= self.upstream(members) if up else set()
                continue
            relation = self.resolve(name)
            chosen.add(relation)
            if down:
                chosen |= self.downstream([relation])
            if up:
                chosen |= self.upstream([relation])
        return chosen

    def resolve(self, name: str) -> str:
        if name in self.models:
            return name
        matches = [r for r, m in self.models.items() if m.name == name]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise ConfigError(f"model name {name!r} is ambiguous ({', '.join(sorted(matches))}); use schema.name")
        raise ConfigError(f"no model {name!r}; models: {', '.join(sorted(self.models)) or 'none (add sql/<layer>/*.sql)'}")


def _layer_then_name(relation: str) -> tuple[int, str]:
    schema = relation.partition(".")[0]
    return (LAYERS.index(schema) if schema in LAYERS else len(LAYERS), relation)
