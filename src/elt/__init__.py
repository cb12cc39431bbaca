"""elt: ELT pipelines that run unattended and never lose a record silently.

Public API::

    from elt import Pipeline, Extractor, Cursor, Batch, extractor, from_env

Everything not re-exported here is private and may change.
"""

from elt.destinations import Postgres
from elt.errors import ConfigError, EltError, LoadError
from elt.extractors.base import Batch, Cursor, Extractor, WriteStrategy
from elt.extractors.function import extractor
from elt.pipeline import Pipeline
from elt.runner import EXIT_CODES, Runner, RunResult
from elt.secrets import Secret, from_env
from elt.state import StreamState, Watermark

__version__ = "0.1.0"

__all__ = [
    "EXIT_CODES",
    "Batch",
    "ConfigError",
    "Cursor",
    "EltError",
    "Extractor",
    "LoadError",
    "Pipeline",
    "Postgres",
    "RunResult",
    "Runner",
    "Secret",
    "StreamState",
    "Watermark",
    "WriteStrategy",
    "extractor",
    "from_env",
]
