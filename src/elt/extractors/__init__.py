"""Extractors read from sources and yield batches; they never write to a destination."""

from elt.extractors.auth import ApiKeyAuth, BasicAuth, BearerAuth, OAuth2ClientCredentials
from elt.extractors.base import Batch, Cursor, Extractor, WriteStrategy
from elt.extractors.files import FileExtractor
from elt.extractors.function import FunctionExtractor, extractor
from elt.extractors.paginators import (
    CursorPaginator,
    KeysetPaginator,
    LinkHeaderPaginator,
    NextUrlPaginator,
    OffsetPaginator,
    Page,
    PageNumberPaginator,
    Paginator,
    SinglePage,
    StartingAfterPaginator,
)
from elt.extractors.ratelimit import RateLimit
from elt.extractors.rest import RestExtractor, SourceError

__all__ = [
    "ApiKeyAuth",
    "BasicAuth",
    "Batch",
    "BearerAuth",
    "CdcExtractor",
    "Cursor",
    "CursorPaginator",
    "Extractor",
    "FileExtractor",
    "FunctionExtractor",
    "KeysetPaginator",
    "LinkHeaderPaginator",
    "NextUrlPaginator",
    "OAuth2ClientCredentials",
    "OffsetPaginator",
    "Page",
    "PageNumberPaginator",
    "Paginator",
    "RateLimit",
    "RestExtractor",
    "SinglePage",
    "SourceError",
    "SqlExtractor",
    "StartingAfterPaginator",
    "WriteStrategy",
    "extractor",
]


def __getattr__(name: str) -> object:
    # SqlExtractor and CdcExtractor need SQLAlchemy, which takes a tenth of a second to import:
    # load them on first use so commands that do not read databases start faster.
    if name == "SqlExtractor":
        from elt.extractors.sql import SqlExtractor

        return SqlExtractor
    if name == "CdcExtractor":
        from elt.extractors.cdc import CdcExtractor

        return CdcExtractor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
