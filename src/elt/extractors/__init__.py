"""Extractors read from sources and yield batches; they never write to a destination."""

from elt.extractors.auth import ApiKeyAuth, BasicAuth, BearerAuth, OAuth2ClientCredentials
from elt.extractors.base import Batch, Cursor, Extractor, WriteStrategy
from elt.extractors.cdc import CdcExtractor
from elt.extractors.files import FileExtractor
from elt.extractors.function import FunctionExtractor, extractor
from elt.extractors.paginators import (
    CursorPaginator,
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
from elt.extractors.sql import SqlExtractor

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
