"""Loaders write to one destination each: rows, run log, state and dead letters together."""

from elt.loaders.base import Loader, LoadResult

__all__ = ["LoadResult", "Loader"]
