"""Exceptions ``elt`` raises on purpose, each saying what to do about it."""

from __future__ import annotations


class EltError(Exception):
    """Base class: an error whose message is meant for the user as it is."""


class ConfigError(EltError):
    """A pipeline, stream or project is declared wrongly."""


class ProjectNotFound(ConfigError):
    """No pipelines module where one was expected."""


class LoadError(EltError):
    """The destination refused a batch."""


class SourceError(EltError):
    """The source answered with an error, an unusable body, or not at all."""


class PaginationError(SourceError):
    """The paginator would loop, passed ``max_pages``, or met a tie it cannot page through."""
