"""A project's model graph: its ``sql/`` models and ``Transform`` classes, checked against its pipelines."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from elt.pipeline import Pipeline
from elt.transforms.graph import Graph
from elt.transforms.models import discover


def generated_views(pipelines: Iterable[Pipeline]) -> set[str]:
    """The ``stg`` views the loader generates (append_dedup streams): models may read them without owning them."""
    return {f"stg.{stream.table_name(p.name)}" for p in pipelines for stream in p.streams
            if stream.strategy.latest_view}


def stream_tables(pipeline: Pipeline, streams: Iterable[str] | None = None) -> set[str]:
    """The relations a pipeline's streams write (raw tables and their generated views)."""
    wanted = set(streams) if streams is not None else {s.name for s in pipeline.streams}
    tables = set()
    for stream in pipeline.streams:
        if stream.name in wanted:
            table = stream.table_name(pipeline.name)
            tables |= {f"raw.{table}", f"stg.{table}"}
    return tables


def project_graph(project_dir: Path, pipelines: Iterable[Pipeline]) -> Graph:
    pipelines = list(pipelines)
    raw = {f"raw.{stream.table_name(p.name)}" for p in pipelines for stream in p.streams}
    return Graph.build(discover(project_dir), external=generated_views(pipelines), sources=raw)
