"""SQL transforms: staging, mart and reporting models built in dependency order, tested as they build."""

from elt.transforms.build import Builder, BuildResult, ModelResult
from elt.transforms.graph import Graph
from elt.transforms.models import Model, Transform
from elt.transforms.project import project_graph

__all__ = ["BuildResult", "Builder", "Graph", "Model", "ModelResult", "Transform", "project_graph"]
