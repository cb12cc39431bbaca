"""elt: ELT pipelines that run unattended and never lose a record silently.

Public API::

    from elt import Pipeline, Extractor, Cursor, Batch, extractor, from_env
    from elt import RestExtractor, StartingAfterPaginator, BearerAuth, RateLimit
    from elt import WebhookSource

Everything not re-exported here is private and may change.
"""

from elt.alerts import Alerts, Email, Webhook
from elt.destinations import BigQuery, Postgres
from elt.errors import ConfigError, EltError, LoadError
from elt.extractors import (
    ApiKeyAuth,
    BasicAuth,
    Batch,
    BearerAuth,
    Cursor,
    CursorPaginator,
    Extractor,
    FileExtractor,
    KeysetPaginator,
    LinkHeaderPaginator,
    NextUrlPaginator,
    OAuth2ClientCredentials,
    OffsetPaginator,
    Page,
    PageNumberPaginator,
    Paginator,
    RateLimit,
    RestExtractor,
    SinglePage,
    SourceError,
    StartingAfterPaginator,
    WriteStrategy,
    extractor,
)
from elt.pipeline import Pipeline
from elt.runner import EXIT_CODES, Runner, RunResult
from elt.secrets import Secret, from_env
from elt.state import StreamState, Watermark
from elt.webhooks import HeaderHmac, WebhookSource

__version__ = "0.1.0"

__all__ = [
    "EXIT_CODES",
    "Alerts",
    "ApiKeyAuth",
    "BasicAuth",
    "Batch",
    "BearerAuth",
    "BigQuery",
    "CdcExtractor",
    "ConfigError",
    "Cursor",
    "CursorPaginator",
    "Email",
    "EltError",
    "Extractor",
    "FileExtractor",
    "KeysetPaginator",
    "LinkHeaderPaginator",
    "LoadError",
    "NextUrlPaginator",
    "OAuth2ClientCredentials",
    "OffsetPaginator",
    "Page",
    "PageNumberPaginator",
    "Paginator",
    "Pipeline",
    "Postgres",
    "RateLimit",
    "RestExtractor",
    "RunResult",
    "Runner",
    "Secret",
    "SinglePage",
    "SourceError",
    "SqlExtractor",
    "StartingAfterPaginator",
    "StreamState",
    "Transform",
    "Watermark",
    "Webhook",
    "WebhookSource",
    "HeaderHmac",
    "WriteStrategy",
    "extractor",
    "from_env",
]



def __getattr__(name: str) -> object:
    # Loaded on first use (SQLAlchemy is slow to import): see elt.extractors.
    if name in ("SqlExtractor", "CdcExtractor"):
        from elt import extractors

        return getattr(extractors, name)
    if name == "Transform":  # the transform layer imports sqlglot: only projects that use it pay for it
        from elt.transforms.models import Transform

        return Transform
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
