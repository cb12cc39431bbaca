"""Paginators: how a REST stream asks for the next page, and when it stops.

A paginator is a small, stateless object declared on a
:class:`~elt.extractors.rest.RestExtractor`. It describes the first page and,
given the response to one page, returns the next :class:`Page` or ``None``
when the stream is complete. Every paginator stops on an empty page; the
extractor itself refuses to request the same page twice (a loop) and to pass
``max_pages``.

Write your own by subclassing :class:`Paginator` and overriding
:meth:`Paginator.next_page` (and :meth:`Paginator.first_page` when the first
request needs parameters).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import httpx

from elt.errors import ConfigError, PaginationError

_MISSING = object()


def dig(body: Any, path: str, default: Any = _MISSING) -> Any:
    """The value at dotted ``path`` in a JSON body (``""`` is the body itself).

    Raises ``KeyError`` naming the missing part unless a ``default`` is given.
    """
    value = body
    if not path:
        return value
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.lstrip("-").isdigit() and -len(value) <= int(part) < len(value):
            value = value[int(part)]
        else:
            if default is not _MISSING:
                return default
            raise KeyError(part)
    return value


@dataclass(frozen=True)
class Page:
    """One page to request.

    ``params`` are the query parameters the paginator adds; ``url`` replaces the
    stream's own URL (next-URL and ``Link`` styles, whose URL already carries
    every parameter); ``token`` is what identifies the page in error messages;
    ``size`` is the page size the API was found to serve when it caps the one
    requested.
    """

    number: int = 1
    params: dict[str, Any] = field(default_factory=dict)
    url: str | None = None
    token: Any = None
    size: int | None = None


class Paginator:
    """Base class. The default is a single page (no pagination).

    ``max_pages`` stops a stream that has requested that many pages with an
    error (its pages so far stay loaded) rather than paging for ever; raise it
    when the source really is that large.
    """

    #: Records per page, when the paginator sets the page size (used for the sync estimate).
    page_size: int | None = None
    #: Pages are positions in the result (offset, page number): when records change during the
    #: read they shift between pages, so one can be read twice and another never. The stream
    #: reports a key seen twice as a possible skip, and moves its watermark only after a complete read.
    positional: bool = False

    def __init__(self, *, max_pages: int | None = None) -> None:
        if max_pages is not None and max_pages < 1:
            raise ConfigError(f"{type(self).__name__}: max_pages must be at least 1, got {max_pages}")
        self.max_pages = max_pages

    def first_page(self) -> Page:
        return Page()

    def next_page(self, page: Page, response: httpx.Response, body: Any, records: list[dict[str, Any]]) -> Page | None:
        """The page after ``page``, or ``None`` when ``page`` was the last."""
        return None

    def total_records(self, body: Any) -> int | None:
        """How many records the whole stream has, when the first response says so."""
        return None

    def more_left(self, response: httpx.Response, body: Any, records: list[dict[str, Any]]) -> str | None:
        """After the last page: what in ``response`` says the source holds more than was read, or ``None``.

        A paginator that follows the API's paging has nothing to add; one that
        stops without asking (:class:`SinglePage`) checks, so that a missing
        ``paginator`` setting is not a silent cut.
        """
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


#: Top-level fields by which APIs say that another page exists (a true flag, or a non-empty link/token).
_MORE_FLAGS = ("has_more", "hasMore", "has_next", "hasNext", "has_next_page", "hasNextPage", "more")
_NEXT_LINKS = ("next", "next_page", "nextPage", "next_page_url", "nextPageUrl", "next_url", "nextUrl",
               "next_cursor", "nextCursor", "next_page_token", "nextPageToken", "links.next", "_links.next",
               "meta.next", "paging.next", "pagination.next", "pagination.next_url", "meta.pagination.next")
_TOTALS = ("total", "total_count", "totalCount", "count", "meta.total", "pagination.total",
           "meta.pagination.total")


class SinglePage(Paginator):
    """The endpoint returns everything in one response::

        paginator = SinglePage()

    If the response says there is more (a ``has_more`` flag, a ``next`` link or
    token, a ``Link: rel="next"`` header, a total above the records read), the
    read is reported as possibly incomplete (the run ends ``partial``, naming
    the signal): the stream needs a paginator that follows it.
    """

    def more_left(self, response: httpx.Response, body: Any, records: list[dict[str, Any]]) -> str | None:
        if "next" in response.links:
            return 'a Link header with rel="next"'
        if not isinstance(body, dict):
            return None
        for path in _MORE_FLAGS:
            if dig(body, path, None) is True:
                return f"{path}: true"
        for path in _NEXT_LINKS:
            value = dig(body, path, None)
            if isinstance(value, str) and value.strip() or isinstance(value, dict) and value.get("href"):
                return f"{path}: {value if isinstance(value, str) else value['href']!r}"
        for path in _TOTALS:
            total = dig(body, path, None)
            if isinstance(total, int) and not isinstance(total, bool) and total > len(records):
                return f"{path}: {total} (the response held {len(records)} records)"
        return None


def _flag(body: Any, path: str | None) -> bool | None:
    """A boolean like ``has_more`` at ``path``; ``None`` when not configured or absent."""
    if not path:
        return None
    value = dig(body, path, None)
    return None if value is None else bool(value)


def _short(page: Page, records: list[dict[str, Any]], requested: int | None) -> tuple[bool, int | None]:
    """Whether a page shorter than asked ends paging, and the page size to expect from now on.

    Called only when the API gave no other signal (no next link, no total, no
    has-more flag). A short first page is taken as the API capping the page
    size (it serves fewer than asked): that size is adopted and paging goes on;
    the empty or short page after it ends the stream. Later pages end paging
    when shorter than the size in force.
    """
    if not requested:
        return False, page.size
    expected = page.size or requested
    if page.number == 1 and len(records) < requested:
        return False, len(records)
    return len(records) < expected, page.size


def _count(body: Any, path: str | None) -> int | None:
    if not path:
        return None
    value = dig(body, path, None)
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


class PageNumberPaginator(Paginator):
    """``?page=1``, ``?page=2``, ... until a page is empty or short, or the last page is reached::

        paginator = PageNumberPaginator(param="page", size_param="per_page", page_size=100,
                                        total_pages_path="meta.total_pages")

    Stops on: an empty page; ``total_pages_path`` reached; the records counted
    at ``total_path`` reached; ``has_more_path`` false. Only when the API gives
    none of these does a page shorter than ``page_size`` end paging; a short
    first page is taken as the API capping the page size, which is adopted.

    Page numbers over data that changes during the read can skip records (see
    :class:`KeysetPaginator`, the recommended paging for incremental streams).
    """

    positional = True

    def __init__(
        self, *, param: str = "page", start: int = 1, size_param: str | None = None, page_size: int | None = None,
        total_pages_path: str | None = None, total_path: str | None = None, has_more_path: str | None = None,
        max_pages: int | None = None,
    ) -> None:
        super().__init__(max_pages=max_pages)
        self.param, self.start, self.size_param, self.page_size = param, start, size_param, page_size
        self.total_pages_path, self.total_path, self.has_more_path = total_pages_path, total_path, has_more_path

    def first_page(self) -> Page:
        params: dict[str, Any] = {self.param: self.start}
        if self.size_param and self.page_size:
            params[self.size_param] = self.page_size
        return Page(1, params, token=self.start)

    def next_page(self, page: Page, response: httpx.Response, body: Any, records: list[dict[str, Any]]) -> Page | None:
        more = _flag(body, self.has_more_path)
        if not records or more is False:
            return None
        total_pages = _count(body, self.total_pages_path)
        total = _count(body, self.total_path)
        size = page.size
        if total_pages is not None:
            if page.number >= total_pages:
                return None
        elif total is not None:
            size = page.size or len(records)  # the size served, capped or not
            if page.number * size >= total:
                return None
        elif more is None:
            # No signal but the page's length: a short page is the last one.
            last, size = _short(page, records, self.page_size)
            if last:
                return None
        number = self.start + page.number
        return replace(page, number=page.number + 1, params={**page.params, self.param: number}, token=number,
                       size=size)

    def total_records(self, body: Any) -> int | None:
        total = _count(body, self.total_path)
        pages = _count(body, self.total_pages_path)
        if total is None and pages is not None and self.page_size:
            total = pages * self.page_size
        return total


class OffsetPaginator(Paginator):
    """``?offset=0&limit=100``, ``?offset=100&limit=100``, ... ::

        paginator = OffsetPaginator(limit=100, total_path="total")

    Stops on: an empty page; ``offset`` past the total at ``total_path``;
    ``has_more_path`` false. Only when the API gives none of these does a page
    shorter than ``limit`` end paging; a short first page is taken as the API
    capping the page size, which is adopted.

    Offsets over data that changes during the read can skip records (see
    :class:`KeysetPaginator`, the recommended paging for incremental streams).
    """

    positional = True

    def __init__(
        self, *, limit: int = 100, offset_param: str = "offset", limit_param: str = "limit",
        total_path: str | None = None, has_more_path: str | None = None, max_pages: int | None = None,
    ) -> None:
        super().__init__(max_pages=max_pages)
        if limit < 1:
            raise ConfigError(f"OffsetPaginator: limit must be at least 1, got {limit}")
        self.page_size = limit
        self.offset_param, self.limit_param = offset_param, limit_param
        self.total_path, self.has_more_path = total_path, has_more_path

    def first_page(self) -> Page:
        return Page(1, {self.offset_param: 0, self.limit_param: self.page_size}, token=0)

    def next_page(self, page: Page, response: httpx.Response, body: Any, records: list[dict[str, Any]]) -> Page | None:
        more = _flag(body, self.has_more_path)
        if not records or more is False:
            return None
        # The next offset follows what was served, so a capped page size loses nothing.
        offset = int(page.params.get(self.offset_param, 0)) + len(records)
        total = _count(body, self.total_path)
        size = page.size
        if total is not None:
            if offset >= total:
                return None
        elif more is None:
            last, size = _short(page, records, self.page_size)
            if last:
                return None
        return replace(page, number=page.number + 1, params={**page.params, self.offset_param: offset}, token=offset,
                       size=size)

    def total_records(self, body: Any) -> int | None:
        return _count(body, self.total_path)


class CursorPaginator(Paginator):
    """An opaque token in the body is sent back for the next page::

        paginator = CursorPaginator(token_path="meta.next_cursor", param="cursor")

    Stops when the token is missing, null or empty, or ``has_more_path`` is false.
    """

    def __init__(
        self, *, token_path: str = "next_cursor", param: str = "cursor", has_more_path: str | None = None,
        total_path: str | None = None, max_pages: int | None = None,
    ) -> None:
        super().__init__(max_pages=max_pages)
        self.token_path, self.param, self.has_more_path, self.total_path = token_path, param, has_more_path, total_path

    def token(self, body: Any, records: list[dict[str, Any]]) -> Any:
        return dig(body, self.token_path, None)

    def next_page(self, page: Page, response: httpx.Response, body: Any, records: list[dict[str, Any]]) -> Page | None:
        if not records or _flag(body, self.has_more_path) is False:
            return None
        token = self.token(body, records)
        if token is None or token == "":
            return None
        return replace(page, number=page.number + 1, params={**page.params, self.param: token}, token=token)

    def total_records(self, body: Any) -> int | None:
        return _count(body, self.total_path)


class StartingAfterPaginator(CursorPaginator):
    """Stripe style: the last record's id is sent as ``starting_after`` while ``has_more`` is true::

        paginator = StartingAfterPaginator(limit=100)   # ?limit=100&starting_after=ch_123

    Stops when ``has_more`` is false or the page is empty.
    """

    def __init__(
        self, *, param: str = "starting_after", id_field: str = "id", has_more_path: str = "has_more",
        limit: int | None = None, limit_param: str = "limit", max_pages: int | None = None,
    ) -> None:
        super().__init__(param=param, has_more_path=has_more_path, max_pages=max_pages)
        self.id_field, self.page_size, self.limit_param = id_field, limit, limit_param

    def first_page(self) -> Page:
        return Page(1, {self.limit_param: self.page_size} if self.page_size else {})

    def token(self, body: Any, records: list[dict[str, Any]]) -> Any:
        last = records[-1]
        if not isinstance(last, dict) or self.id_field not in last:
            raise KeyError(self.id_field)
        return last[self.id_field]


class NextUrlPaginator(Paginator):
    """The body carries the full URL of the next page::

        paginator = NextUrlPaginator(next_url_path="links.next")

    Relative URLs are resolved against the current page's URL. Stops when the
    URL is missing, null or empty.
    """

    def __init__(self, *, next_url_path: str = "next", total_path: str | None = None, max_pages: int | None = None) -> None:
        super().__init__(max_pages=max_pages)
        self.next_url_path, self.total_path = next_url_path, total_path

    def next_page(self, page: Page, response: httpx.Response, body: Any, records: list[dict[str, Any]]) -> Page | None:
        url = dig(body, self.next_url_path, None)
        if not records or not url:
            return None
        absolute = str(response.request.url.join(str(url)))
        return Page(page.number + 1, {}, url=absolute, token=absolute)

    def total_records(self, body: Any) -> int | None:
        return _count(body, self.total_path)


class LinkHeaderPaginator(Paginator):
    """RFC 5988 ``Link: <https://api.example.com/items?page=2>; rel="next"`` (GitHub style)::

        paginator = LinkHeaderPaginator()            # follows rel="next"

    Stops when the response has no link with relation ``rel``.
    """

    def __init__(self, *, rel: str = "next", page_size: int | None = None, max_pages: int | None = None) -> None:
        super().__init__(max_pages=max_pages)
        self.rel, self.page_size = rel, page_size

    def next_page(self, page: Page, response: httpx.Response, body: Any, records: list[dict[str, Any]]) -> Page | None:
        url = response.links.get(self.rel, {}).get("url")
        if not records or not url:
            return None
        absolute = str(response.request.url.join(url))
        return Page(page.number + 1, {}, url=absolute, token=absolute)


class KeysetPaginator(Paginator):
    """Resume from the highest cursor value seen: the recommended paging for incremental streams::

        cursor = Cursor("updated_at", param="updated_since")    # the API filters updated_at >= updated_since
        paginator = KeysetPaginator(page_size=100, size_param="limit", sort_params={"sort": "updated_at"})

    Each request repeats the stream's query with the cursor parameter set to the
    highest cursor value of the page before, as the source wrote it, inclusive:
    the records of that value are read again and the write strategy absorbs the
    duplicates. The API must return records sorted by the cursor, ascending.
    Unlike offsets and page numbers, nothing shifts when records change during
    the read: an updated record moves to a later cursor value and is read there.

    A page full of one cursor value (a tie as large as the page) would be asked
    for again for ever: the page size is doubled for that request, up to
    ``max_page_size``; a tie larger than that (or than the size the API caps
    pages at) is a :class:`PaginationError` naming the value. ``field`` and
    ``param`` default to the stream's cursor. A page shorter than asked ends
    the read; a short first page is taken as the API capping the page size.

    An API that can break ties pages within them instead: with ``tie_param``
    (say ``"after_id"``) every next request also sends the last record's
    ``tie_field`` (default ``"id"``), and the API returns the records after
    ``(cursor, id)`` in that order; no page is grown, no tie is too large.
    """

    def __init__(
        self, *, page_size: int = 100, size_param: str = "limit", max_page_size: int = 10_000,
        field: str | None = None, param: str | None = None, sort_params: dict[str, Any] | None = None,
        has_more_path: str | None = None, tie_param: str | None = None, tie_field: str = "id",
        max_pages: int | None = None,
    ) -> None:
        super().__init__(max_pages=max_pages)
        self.tie_param, self.tie_field = tie_param, tie_field
        if page_size < 1 or max_page_size < page_size:
            raise ConfigError(f"KeysetPaginator: need 1 <= page_size <= max_page_size, got {page_size} and {max_page_size}")
        self.page_size = self.base_size = page_size
        self.size_param, self.max_page_size = size_param, max_page_size
        self.field, self.param, self.sort_params, self.has_more_path = field, param, dict(sort_params or {}), has_more_path

    def bound(self, field: str, param: str) -> KeysetPaginator:
        """A copy reading ``field`` and sending ``param`` (the stream's cursor, filled in by the stream)."""
        copy = KeysetPaginator(page_size=self.base_size, size_param=self.size_param, max_page_size=self.max_page_size,
                               field=self.field or field, param=self.param or param, sort_params=self.sort_params,
                               has_more_path=self.has_more_path, tie_param=self.tie_param, tie_field=self.tie_field,
                               max_pages=self.max_pages)
        return copy

    def first_page(self) -> Page:
        return Page(1, {**self.sort_params, self.size_param: self.base_size})

    def next_page(self, page: Page, response: httpx.Response, body: Any, records: list[dict[str, Any]]) -> Page | None:
        if not self.field or not self.param:
            raise ConfigError("KeysetPaginator: set field and param, or declare the stream's Cursor with a param")
        if not records or _flag(body, self.has_more_path) is False:
            return None
        asked = int(page.params.get(self.size_param) or self.base_size)
        cap = page.size
        if page.number == 1 and len(records) < asked:
            cap = len(records)  # the API serves fewer than asked: its cap, adopted
        low, high = dig(records[0], self.field), dig(records[-1], self.field)
        if page.number > 1 and len(records) < min(asked, cap or asked):
            if low == high and asked > self.base_size and len(records) == asked // 2:
                # A grown page came back no bigger: the API caps its pages at the old size.
                cap = len(records)
            else:
                return None  # a short page: the end of the data
        size = self.base_size
        if self.tie_param:
            # The API orders by (cursor, tie field) and resumes after the last pair: ties page like the rest.
            after = dig(records[-1], self.tie_field)
            params = {**page.params, self.param: high, self.tie_param: after, self.size_param: size}
            return Page(page.number + 1, params, token=(high, after), size=cap)
        if low == high:
            # The whole page is one cursor value: from that value again, the same page would come back.
            if (cap is not None and len(records) >= cap) or asked >= self.max_page_size:
                raise PaginationError(
                    f"KeysetPaginator: more than {len(records)} records share the cursor value {high!r} of"
                    f" {self.field!r}, more than one page can hold (max_page_size={self.max_page_size}"
                    f"{f', the API serves at most {cap} per page' if cap is not None else ''}); they cannot be"
                    " paged through by the cursor alone. Raise max_page_size, or use a cursor the API can"
                    " break ties on (a timestamp with finer precision, or cursor and id)"
                )
            size = min(asked * 2, self.max_page_size)
        params = {**page.params, self.param: high, self.size_param: size}
        return Page(page.number + 1, params, token=high, size=cap)


def pages_for(total: int | None, page_size: int | None) -> int | None:
    """How many pages ``total`` records take at ``page_size`` per page."""
    if total is None or not page_size:
        return None
    return max(1, math.ceil(total / page_size))
