"""Where models are built: the seam between the model graph and one destination's SQL engine.

:class:`~elt.transforms.build.Builder` orders the models, runs them in
parallel and isolates failures; a :class:`Warehouse` does the database work
for one model: create its relation (view, table, incremental merge), run its
data tests against the new version before it replaces the live one, and say
which relations exist. Each destination has one (PostgreSQL:
``elt.loaders.postgres.warehouse``; BigQuery: ``elt.loaders.bigquery.warehouse``),
handed out by ``Loader.warehouse()``.

Models are written in PostgreSQL's dialect; a warehouse for another engine
translates them (``elt.transforms.dialects``).
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from elt.errors import EltError

if TYPE_CHECKING:
    from elt.transforms.datatests import DataTestResult
    from elt.transforms.models import Model

#: Start of the description (PostgreSQL: COMMENT) on every relation a model builds (the loader leaves these alone).
MODEL_MARK = "elt:model"
CREATE_KIND = {"view": "VIEW", "table": "TABLE", "incremental": "TABLE", "materialized_view": "MATERIALIZED VIEW"}

#: Called with a model's data test results on the relation about to go live: records warnings, and raises
#: :class:`DataTestFailed` when a test that is not ``warn`` failed (the build then keeps the old version).
Judge = Callable[["list[DataTestResult]"], "list[DataTestResult]"]


class ModelError(EltError):
    """A model could not be built as declared."""


class DataTestFailed(EltError):
    """A model's data test failed; the model was not replaced."""


@dataclass
class Built:
    rows: int
    tests: list[DataTestResult]
    action: str
    #: Dependent materialised views the swap computed from the new data (their own build need not refresh them).
    recomputed: list[str] = field(default_factory=list)


def fingerprint(model: Model) -> str:
    """Changes when the SQL or the settings that shape the relation change."""
    text = "\n".join([model.sql, model.config.materialized, ",".join(model.config.unique_key)])
    return hashlib.md5(text.encode()).hexdigest()[:12]


def model_comment(model: Model) -> str:
    """What a built relation is marked with: an unchanged view is kept when its mark matches."""
    return f"{MODEL_MARK} {model.path} sha={fingerprint(model)}"


class Warehouse(ABC):
    """Builds models in one destination. Thread-safe: the builder calls :meth:`build` from several threads."""

    #: The destination's name, as logs and messages give it.
    name: ClassVar[str] = ""
    #: Exceptions of this destination's driver whose message speaks for itself (reported without a type name).
    errors: ClassVar[tuple[type[BaseException], ...]] = ()

    @abstractmethod
    def prepare(self, schemas: Collection[str]) -> set[str]:
        """Create the layers' schemas (datasets) the models build in, once, before models build in
        parallel; return every existing relation of the destination as ``schema.name``."""

    @abstractmethod
    def build(self, model: Model, *, full_refresh: bool, judge: Judge, recomputed: Collection[str] = ()) -> Built:
        """Build ``model`` atomically: a failure (SQL error, or ``judge`` raising) leaves the last good version.

        ``recomputed`` names materialised views that an upstream's swap already computed in this build.
        """

    @abstractmethod
    def statement(self, model: Model) -> str:
        """The statement that creates ``model`` here, as this destination runs it (``elt transform --dry-run``).

        Writes text only: a warehouse made for a dry run may have nothing open.
        """

    def close(self) -> None:  # noqa: B027 - most warehouses hold nothing open between builds
        """Release connections."""
