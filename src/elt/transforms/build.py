"""Building a selection of models: dependency order, bounded parallelism, failures isolated.

A model starts when every selected model it reads has been built. One that
fails (SQL error or failing data test) is rolled back, and every model
downstream of it is skipped with the reason; independent models carry on.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from elt import secrets
from elt.errors import EltError
from elt.logs import get_logger
from elt.transforms.datatests import DataTestResult
from elt.transforms.graph import Graph
from elt.transforms.models import Model
from elt.transforms.warehouse import DataTestFailed, Warehouse

__all__ = ["BuildResult", "Builder", "DataTestFailed", "ModelResult"]


@dataclass
class ModelResult:
    relation: str
    path: str
    status: str  # success | failed | skipped (an upstream failed) | waiting (its raw table has no data yet)
    rows: int = 0
    seconds: float = 0.0
    action: str = ""
    error: str | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass
class BuildResult:
    """The outcome of one ``elt transform`` (or a pipeline's transform step), model by model."""

    models: dict[str, ModelResult] = field(default_factory=dict)

    @property
    def rows_transformed(self) -> int:
        return sum(r.rows for r in self.models.values())

    @property
    def failures(self) -> dict[str, str]:
        """Models that failed or were skipped because of a failure (waiting for data is not a failure)."""
        return {r.relation: str(r.error) for r in self.models.values() if r.status in ("failed", "skipped")}

    @property
    def status(self) -> str:
        return "success" if not self.failures else "failed"

    def as_json(self) -> dict[str, Any]:
        return {r.relation: {k: v for k, v in r.__dict__.items() if v not in (None, [], "")} for r in self.models.values()}


class Builder:
    """Builds models of ``graph`` in ``warehouse`` (``Loader.warehouse()``; a URL: that PostgreSQL database)."""

    def __init__(self, warehouse: Warehouse | str, graph: Graph, *, threads: int = 4, full_refresh: bool = False) -> None:
        if isinstance(warehouse, str):
            from elt.loaders.postgres.warehouse import PostgresWarehouse

            warehouse = PostgresWarehouse(warehouse)
        self.warehouse, self.graph = warehouse, graph
        self.threads = max(1, threads)
        self.full_refresh = full_refresh
        self.log = get_logger()
        #: Materialised views computed from new data by an upstream's swap during this build.
        self.recomputed: set[str] = set()

    def plan(self, selected: Iterable[str]) -> list[Model]:
        return self.graph.order(selected)

    def dry_run(self, selected: Iterable[str]) -> str:
        """The SQL of each selected model, in build order, as `elt transform --dry-run` prints it."""
        parts = []
        for model in self.plan(selected):
            config = model.config
            extra = f", unique_key {', '.join(config.unique_key)}" if config.unique_key else ""
            tests = f"\n-- tests: {', '.join(t.text for t in config.tests)}" if config.tests else ""
            parts.append(f"-- {model.path} -> {model.relation} ({config.materialized}{extra}){tests}\n"
                         f"{self.warehouse.statement(model)};\n")
        return "\n".join(parts)

    def run(self, selected: Iterable[str]) -> BuildResult:
        order = self.plan(selected)
        existing: set[str] = set()
        if order:
            existing = self.warehouse.prepare({m.schema for m in order})
        chosen = {m.relation for m in order}
        # A stream of the project that has loaded nothing yet has no raw table: its models wait
        # instead of failing. Any other missing table is an error the build reports.
        absent = {m.relation: sorted(r for r in m.reads if r in self.graph.sources and r not in existing) for m in order}
        waiting = {m.relation: {d for d in m.depends_on if d in chosen} for m in order}
        result = BuildResult()
        running: dict[Future[ModelResult], str] = {}
        with ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="elt-model") as pool:
            while waiting or running:
                for model in order:
                    relation = model.relation
                    if relation not in waiting or len(running) >= self.threads:
                        continue
                    upstream = {d: result.models[d].status for d in waiting[relation] if d in result.models}
                    failed = sorted(d for d, status in upstream.items() if status in ("failed", "skipped"))
                    idle = sorted(d for d, status in upstream.items() if status == "waiting") + absent[relation]
                    if failed:
                        del waiting[relation]
                        reason = f"skipped: upstream {', '.join(failed)} failed"
                        result.models[relation] = ModelResult(relation, model.path, "skipped", error=reason)
                        self.log.warning("model skipped", model=relation, reason=reason)
                        continue
                    if idle and all(d in result.models for d in waiting[relation]):
                        del waiting[relation]
                        reason = f"waiting: {', '.join(idle)} has no data yet (no records loaded so far)"
                        result.models[relation] = ModelResult(relation, model.path, "waiting", error=reason)
                        self.log.info("model waits for data", model=relation, reason=reason)
                        continue
                    if all(d in result.models for d in waiting[relation]):
                        del waiting[relation]
                        running[pool.submit(self._build_one, model)] = relation
                if not running:
                    continue  # only skips happened this pass; look again
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    outcome = future.result()
                    result.models[running.pop(future)] = outcome
        # Keep the build order in the result, not the completion order.
        result.models = {m.relation: result.models[m.relation] for m in order}
        return result

    def _build_one(self, model: Model) -> ModelResult:
        started = time.monotonic()
        outcome = ModelResult(model.relation, model.path, "success")
        try:
            def judge(results: list[DataTestResult]) -> list[DataTestResult]:
                failed = [r for r in results if not r.passed and not r.test.warn]
                for warned in (r for r in results if not r.passed and r.test.warn):
                    outcome.warnings.append(warned.describe(model.relation))
                if failed:
                    raise DataTestFailed("; ".join(r.describe(model.relation) for r in failed)
                                         + f"; {model.relation} was not replaced")
                return results

            built = self.warehouse.build(model, full_refresh=self.full_refresh, judge=judge, recomputed=self.recomputed)
            self.recomputed.update(built.recomputed)
            outcome.rows, outcome.action = built.rows, built.action
        except Exception as exc:  # any failure stays with this model; the rest of the build goes on
            outcome.status = "failed"
            message = str(exc).strip() if isinstance(exc, (EltError, *self.warehouse.errors)) else f"{type(exc).__name__}: {exc}"
            outcome.error = secrets.redact(f"{model.path}: {message}" if not message.startswith(model.path) else message)
        outcome.seconds = round(time.monotonic() - started, 3)
        log = self.log.bind(model=model.relation, seconds=outcome.seconds)
        for warning in outcome.warnings:
            log.warning("data test failed (warn only)", detail=warning)
        if outcome.status == "success":
            log.info(f"model {outcome.action}", rows=outcome.rows)
        else:
            log.error("model failed; models that read it are skipped", error=outcome.error)
        return outcome
