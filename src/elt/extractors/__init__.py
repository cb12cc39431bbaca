"""Extractors read from sources and yield batches; they never write to a destination."""

from elt.extractors.base import Batch, Cursor, Extractor, WriteStrategy
from elt.extractors.function import FunctionExtractor, extractor

__all__ = ["Batch", "Cursor", "Extractor", "FunctionExtractor", "WriteStrategy", "extractor"]
