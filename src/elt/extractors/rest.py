"""``RestExtractor``: a REST API stream declared in a few class attributes.

A new API is a short subclass::

    class Charges(RestExtractor):
        name = "charges"
        base_url = "https://api.stripe.com/v1"
        path = "/charges"
        records_path = "data"
        primary_key = "id"
        cursor = Cursor("created", param="created[gte]")
        paginator = StartingAfterPaginator(limit=100)
        auth = BearerAuth(from_env("STRIPE_KEY"))
        rate_limit = RateLimit(per_second=25)

Override the hooks when an API needs more: :meth:`request_params`,
:meth:`parse_response`, :meth:`transform_record`, :meth:`should_retry`,
:meth:`format_cursor`, :meth:`source_keys`. A child stream names its
``parent`` and takes each parent record's fields into its ``path``
(``/customers/{id}/orders``).

Every request waits for the rate limit, then retries transient faults (429,
5xx, timeouts, dropped connections, a 2xx body that is not complete, valid
JSON) through tenacity, with capped exponential backoff and full jitter,
honouring ``Retry-After`` and ``X-RateLimit-Reset``; each retry is counted by
cause in :attr:`RestExtractor.faults`, which the run stores. A failure that
outlasts the retries stops the stream with the URL (secrets masked), the
status and the start of the body; the pages read before it are loaded.

A read is complete or says why not: offset and page-number paging over data
that changes can skip records, so a key read twice is reported through
``Batch.incomplete`` and the watermark moves only after a complete read;
:class:`~elt.extractors.paginators.KeysetPaginator` (by the cursor) does not
skip, and is the paging to use for incremental streams.
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import httpx
import orjson
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from elt.errors import ConfigError, PaginationError, SourceError
from elt.extractors.auth import Auth
from elt.extractors.base import Batch, Extractor
from elt.extractors.cursor_text import text_like
from elt.extractors.paginators import KeysetPaginator, Page, Paginator, SinglePage, dig, pages_for
from elt.extractors.ratelimit import RateLimit
from elt.extractors.retries import (
    RETRY_STATUSES,
    Faults,
    ServerWait,
    TransientFault,
    cause_of,
    cause_of_transport,
    retry_after,
)
from elt.logs import get_logger
from elt.records import exact_float, loads_capped
from elt.secrets import redact
from elt.state import StreamState

# A number of 19 or more digits may be an integer beyond 64 bits, which orjson turns into a
# float. Numbers follow ":", "[" or ","; anchoring there keeps the scan at about half of
# orjson's own parse time (1.3 MB page: 8 ms against 14 ms), where a bare digit run costs more.
_LONG_NUMBER = re.compile(rb"[:\[,]\s*-?\d{19}")
#: A number a double may not hold: 16 or more digits (with its point), or a three-digit exponent.
_LONG_FRACTION = re.compile(rb"\d[\d.]{16}|\d[eE][+-]?\d{3}")


def _decode(content: bytes) -> Any:
    """A JSON body, with every number exact.

    orjson is fast but reads integers beyond 64 bits and numbers with more digits
    than a double holds as floats (digits lost: 0.1234567890123456789, 1e400 as
    infinity) and refuses NaN, Infinity and lone surrogate escapes, which APIs
    written in Python send. A body that may hold such a number goes to the
    standard library, which keeps integers exact and reads each such fraction as
    an ``ExactNumber`` (written back digit for digit); a record that still cannot
    be stored (a lone surrogate) is then dead-lettered, not the whole page.
    """
    try:
        return _parse(content)
    except RecursionError:  # deeper than the parsers go: only the records too deep are lost
        return loads_capped(content, _parse)


def _parse(content: bytes) -> Any:
    if _LONG_NUMBER.search(content) or _LONG_FRACTION.search(content):
        return json.loads(content, parse_float=exact_float)
    try:
        return orjson.loads(content)
    except orjson.JSONDecodeError:
        # Also a body deeper than orjson reads: the standard library raises RecursionError for it.
        return json.loads(content, parse_float=exact_float)


class RestExtractor(Extractor):
    """A stream read from a JSON REST endpoint, page by page."""

    #: Scheme and host (and any common prefix): ``https://api.example.com/v1``.
    base_url: ClassVar[str] = ""
    #: The endpoint, appended to ``base_url``; ``{field}`` placeholders take a parent record's fields.
    path: ClassVar[str] = ""
    #: Dotted path of the record list in the body (``data``, ``result.items``); empty for a top-level list.
    records_path: ClassVar[str] = ""
    paginator: ClassVar[Paginator] = SinglePage()
    auth: ClassVar[httpx.Auth | None] = None
    rate_limit: ClassVar[RateLimit | None] = None
    #: Query parameters sent with every request.
    params: ClassVar[Mapping[str, Any]] = {}
    headers: ClassVar[Mapping[str, str]] = {}
    #: Seconds to wait for the server to connect, send or answer.
    timeout: ClassVar[float] = 30.0
    #: An HTTP(S) proxy for this stream's requests (the OAuth2 token request included); default:
    #: the environment's ``HTTPS_PROXY``/``HTTP_PROXY``.
    proxy: ClassVar[str | None] = None
    #: TLS certificate verification: ``True``, ``False`` (never in production) or a CA bundle path.
    verify: ClassVar[bool | str] = True
    #: Retries after the first attempt of a request (so ``max_retries + 1`` attempts in all).
    max_retries: ClassVar[int] = 5
    #: First backoff in seconds; it doubles per retry (with full jitter) up to ``max_backoff``.
    backoff: ClassVar[float] = 1.0
    max_backoff: ClassVar[float] = 60.0
    #: A ``Retry-After`` longer than this fails the stream instead of blocking the run.
    max_retry_after: ClassVar[float] = 600.0
    #: The parent stream of a child stream (``/customers/{id}/orders``): its records fill ``path``.
    parent: ClassVar[type[RestExtractor] | None] = None
    #: Fields copied from the parent record into each child record: ``{"customer_id": "id"}``.
    parent_fields: ClassVar[Mapping[str, str]] = {}
    #: The key-only listing `elt reconcile` reads for ``detect_deletes``: extra query parameters
    #: (``{"fields": "id"}``) and/or another endpoint (``keys_path = "/items/ids"``), read with the
    #: stream's paginator from the start. Setting either (or overriding source_keys) offers delete detection.
    keys_params: ClassVar[Mapping[str, Any] | None] = None
    keys_path: ClassVar[str | None] = None
    #: The paginator of the key listing (default: the stream's, unless that pages by the cursor).
    keys_paginator: ClassVar[Paginator | None] = None

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        if self.parent is not None and "sorted_by_cursor" not in settings:
            # Records of different parents interleave: the watermark advances when the stream completes.
            self.sorted_by_cursor = False  # type: ignore[misc]
        self.log = get_logger(stream=self.name)
        #: The faults of the current (or last) read, stored with the run's figures.
        self.faults = Faults()
        if isinstance(self.paginator, KeysetPaginator) and self.cursor_field:
            self.paginator = self.paginator.bound(  # type: ignore[misc]
                self.cursor_field, getattr(self.cursor, "param", None) or "")
        declared = "complete_per_batch" in settings or any(
            "complete_per_batch" in vars(c) for c in type(self).__mro__ if c not in (RestExtractor, Extractor))
        if self.paginator.positional and not declared:
            # Offsets shift when records change during the read: only a read that saw no
            # key twice is known complete, which is known at its end.
            self.complete_per_batch = False  # type: ignore[misc]
        #: One cursor value as the source wrote it: the model for sending the watermark back.
        self._cursor_text: str | None = None
        #: Reasons the current read may have skipped records (reported with its last batch).
        self._incomplete: list[str] = []

    def _check(self) -> None:
        super()._check()
        label = f"stream {self.name!r}"
        if not self.base_url:
            raise ConfigError(f"{label}: set base_url (scheme and host of the API, e.g. https://api.example.com/v1)")
        if not isinstance(self.paginator, Paginator):
            raise ConfigError(f"{label}: paginator must be a Paginator instance, got {self.paginator!r}")
        if self.parent is not None and not (isinstance(self.parent, type) and issubclass(self.parent, RestExtractor)):
            raise ConfigError(f"{label}: parent must be a RestExtractor subclass, got {self.parent!r}")
        if isinstance(self.paginator, KeysetPaginator) and not (self.paginator.field and self.paginator.param):
            if not (self.cursor_field and getattr(self.cursor, "param", None)):
                raise ConfigError(
                    f"{label}: KeysetPaginator resumes from the cursor: declare cursor = Cursor(field, param=...)"
                    " naming the request parameter the API filters on (inclusive), or give the paginator field and param"
                )
        if self.detect_deletes and type(self).source_keys is RestExtractor.source_keys and self.lists_keys:
            self._keys_paginator()  # refused now, not when `elt reconcile` runs

    # --- hooks ------------------------------------------------------------------

    def request_params(self, state: StreamState, page: Page) -> dict[str, Any]:
        """Query parameters of one page: ``params``, the cursor's start value, then the paginator's."""
        params = dict(self.params)
        param = getattr(self.cursor, "param", None)
        if param and state.since is not None:
            params[param] = self.format_cursor(state.since)
        params.update(page.params)
        return params

    def format_cursor(self, since: Any) -> str:
        """The watermark as the API wants it in ``cursor.param``.

        By default in the textual form the source used for its cursor values
        (precision, separator, ``Z`` or offset), learnt from the records read;
        ISO 8601 until one was seen. Override for an API that wants another form.
        """
        text = text_like(since, self._cursor_text)
        if text is not None:
            return text
        return since.isoformat() if hasattr(since, "isoformat") else str(since)

    def parse_response(self, response: httpx.Response) -> list[dict[str, Any]]:
        """The records of one response: the list at ``records_path``."""
        body = self.json(response)
        try:
            records = dig(body, self.records_path)
        except KeyError as missing:
            raise SourceError(
                f"stream {self.name!r}: the response of {self._show(response.request.url)} has no {missing.args[0]!r}"
                f" on the way to records_path {self.records_path!r}; keys present: {_keys(body)}."
                " Check records_path against the API's documentation"
            ) from None
        if not isinstance(records, list):
            where = f"at records_path {self.records_path!r}" if self.records_path else "at the top of the body"
            raise SourceError(
                f"stream {self.name!r}: expected a list of records {where} in the response of"
                f" {self._show(response.request.url)}, found {type(records).__name__}"
            )
        return records

    def should_retry(self, response: httpx.Response) -> bool:
        """Whether a response is a transient failure worth another attempt."""
        return response.status_code in RETRY_STATUSES

    # --- reading ----------------------------------------------------------------

    def extract(self, state: StreamState) -> Iterator[Batch]:
        """The base batching, plus the cursor's textual form kept with each batch and a last report
        of anything that makes this read possibly incomplete."""
        self.faults = Faults()
        self._incomplete = []
        stored = state.values.get(CURSOR_TEXT)
        self._cursor_text = stored if isinstance(stored, str) else None
        for batch in super().extract(state):
            if self._cursor_text is not None and self._cursor_text != stored:
                batch.state[CURSOR_TEXT] = stored = self._cursor_text
            yield batch
        if self._incomplete:
            yield Batch([], incomplete=list(self._incomplete))

    def records(self, state: StreamState) -> Iterator[list[dict[str, Any]]]:
        return self._records(state, estimate=state.since is None)

    def fault_report(self) -> dict[str, Any]:
        return self.faults.as_json()

    @property
    def lists_keys(self) -> bool:
        return (self.keys_params is not None or bool(self.keys_path)
                or type(self).source_keys is not RestExtractor.source_keys)

    def _keys_paginator(self) -> Paginator:
        if self.keys_paginator is not None:
            return self.keys_paginator
        if isinstance(self.paginator, KeysetPaginator):
            raise ConfigError(
                f"stream {self.name!r}: the key listing of detect_deletes has no cursor to page by: set keys_paginator"
                " (an OffsetPaginator, say) for it"
            )
        return self.paginator

    def source_keys(self) -> Iterator[list[tuple[Any, ...]]]:
        """Every key in the source now, in pages: the key-only listing read from its first page."""
        if self.parent is not None:
            raise ConfigError(f"stream {self.name!r}: source_keys of a child stream needs an override of source_keys()")
        settings = {k: v for k, v in vars(self).items() if hasattr(type(self), k)}  # this instance's own settings
        listing = type(self)(**{**settings, "params": {**self.params, **(self.keys_params or {})},
                                "path": self.keys_path or self.path, "paginator": self._keys_paginator(),
                                "cursor": None, "detect_deletes": False, "write_strategy": "append"})
        listing.faults = self.faults = Faults()
        fields = self.key_fields
        state = StreamState("reconcile", self.name, full_refresh=True)
        with listing.client() as client:
            for page in listing._pages(client, state, listing.path, estimate=False):
                try:
                    yield [tuple(dig(record, f) for f in fields) for record in page]
                except KeyError as missing:
                    raise SourceError(
                        f"stream {self.name!r}: the key listing returned a record without key field"
                        f" {missing.args[0]!r}; check keys_params/keys_path"
                    ) from None
        if listing._incomplete:
            # A key missing from the listing would be marked deleted: a listing that may be short marks nothing.
            raise SourceError(f"stream {self.name!r}: the key listing may have missed keys, so none is marked"
                              f" deleted: {listing._incomplete[0]}")

    def _records(self, state: StreamState, *, estimate: bool) -> Iterator[list[dict[str, Any]]]:
        with self.client() as client:
            if self.parent is None:
                yield from self._pages(client, state, self.path, estimate=estimate)
                return
            parent = self.parent()
            parent.faults = self.faults  # the parent's requests are this stream's too
            # Every parent, every run: a child of a parent that did not change may still have changed.
            parent_state = StreamState(state.pipeline, parent.name, full_refresh=True)
            for item in parent._records(parent_state, estimate=False):
                for record in [item] if isinstance(item, dict) else item:
                    path = self._child_path(record)
                    extra = {child: record.get(field) for child, field in self.parent_fields.items()}
                    for page in self._pages(client, state, path, estimate=False):
                        if extra:
                            page = [{**extra, **r} for r in page]
                        yield page

    def client(self) -> httpx.Client:
        """The HTTP client of one extraction (closed when it ends)."""
        return httpx.Client(
            auth=self.auth, headers=dict(self.headers), timeout=self.timeout, follow_redirects=True,
            proxy=self.proxy, verify=self.verify,
        )

    def json(self, response: httpx.Response) -> Any:
        """The decoded body (decoded once per response)."""
        cached = getattr(response, "_elt_json", _UNSET)
        if cached is not _UNSET:
            return cached
        try:
            body = _decode(response.content)
        except (ValueError, RecursionError) as exc:
            excerpt = response.content[:200].decode("utf-8", "replace")
            expected = f"a JSON body with the records at {self.records_path!r}" if self.records_path else "a JSON list"
            raise SourceError(
                f"stream {self.name!r}: the response of {self._show(response.request.url)} is not valid JSON ({exc});"
                f" expected {expected}. It starts: {redact(excerpt)!r}"
            ) from None
        response._elt_json = body  # type: ignore[attr-defined]
        return body

    def _child_path(self, record: dict[str, Any]) -> str:
        try:
            return self.path.format_map({k: urllib.parse.quote(str(v), safe="") for k, v in record.items()})
        except KeyError as missing:
            raise ConfigError(
                f"stream {self.name!r}: path {self.path!r} needs field {missing.args[0]!r}, which parent"
                f" {self.parent.name if self.parent else ''!r} records do not have"
            ) from None

    def _pages(self, client: httpx.Client, state: StreamState, path: str, *, estimate: bool) -> Iterator[list[dict[str, Any]]]:
        paginator = self.paginator
        url = self.base_url.rstrip("/") + "/" + path.lstrip("/") if path else self.base_url
        page: Page | None = paginator.first_page()
        seen: dict[str, Page] = {}
        read, total, next_report = 0, None, time.monotonic() + PROGRESS_EVERY
        # Positional paging over moving data: a key read twice means another may have been skipped.
        # Hashes, not the keys: 8 bytes a record (a collision is a false alarm, never a silent loss).
        keys: set[int] | None = set() if paginator.positional and self.key_fields else None
        while page is not None:
            if paginator.max_pages is not None and page.number > paginator.max_pages:
                raise PaginationError(
                    f"stream {self.name!r}: stopped at max_pages={paginator.max_pages} of {type(paginator).__name__}"
                    f" ({self._show(url)}); the pages read so far are loaded. Raise max_pages if the source is that big"
                )
            target = page.url or url
            params = dict(page.params) if page.url else self.request_params(state, page)
            identity = normalised_url(target, params)
            if identity in seen:
                raise PaginationError(
                    f"stream {self.name!r}: {type(paginator).__name__} was handed a page already requested in this"
                    f" read (token {redact(str(page.token))!r}, pages {seen[identity].number} and {page.number}) at"
                    f" {self._show(httpx.URL(target, params=params or None))}; stopped instead of requesting it again."
                    " The pages read so far are loaded; check the paginator's settings against the API"
                )
            seen[identity] = page
            started = time.monotonic()
            response = self._request(client, target, params)
            records = self.parse_response(response)
            if page.number == 1:
                total = self.reported_total(response)
                if estimate:
                    self._log_estimate(paginator, response, len(records), time.monotonic() - started)
            read += len(records)
            if keys is not None and page.number > 1 and total is not None and not self._incomplete:
                # A total that moves during a positional read means records were added or deleted while it
                # was read: the pages shifted, and a record can have been skipped without any key read twice.
                now_total = self.reported_total(response)
                if now_total is not None and now_total != total:
                    self._incomplete.append(
                        f"the source's total went from {total} to {now_total} during one read of {self._show(url)}"
                        f" with {type(paginator).__name__}: records were added or deleted while it was read, so"
                        " others may have been skipped. The records read are loaded; the watermark and a replace"
                        " table stay as they were. Use KeysetPaginator for data that changes while it is read")
            if time.monotonic() >= next_report:
                self._log_progress(read, total, page.number)
                next_report = time.monotonic() + PROGRESS_EVERY
            try:
                next_page = paginator.next_page(page, response, self.json(response), records)
            except KeyError as missing:
                raise SourceError(
                    f"stream {self.name!r}: {type(paginator).__name__} found no {missing.args[0]!r} in the response of"
                    f" {self._show(response.request.url)}; check its settings"
                ) from None
            if next_page is None and not self._incomplete:
                more = paginator.more_left(response, self.json(response), records)
                if more:
                    self._incomplete.append(
                        f"the response of {self._show(response.request.url)} says the source holds more ({more}), but"
                        f" the stream reads one page ({type(paginator).__name__}): the rest was not read. The records"
                        " read are loaded; the watermark and a replace table stay as they were. Set the stream's"
                        " paginator to follow the API's paging (see README, REST APIs: paginators)")
            if records:
                self._note(records, keys, url)
                yield records
            page = next_page
        if keys is not None and total is not None and len(keys) < total and not self._incomplete:
            self._incomplete.append(
                f"the source reported {total} records but one read of {self._show(url)} with"
                f" {type(paginator).__name__} found {len(keys)} distinct keys: records were deleted or moved"
                " while it was read, so some may have been skipped. The records read are loaded; the watermark"
                " and a replace table stay as they were. Use KeysetPaginator for data that changes while it is read")

    def _note(self, records: list[dict[str, Any]], keys: set[int] | None, url: str) -> None:
        """Learn the cursor's textual form; with positional paging, watch for a key read twice."""
        field = self.cursor_field
        if field:
            last = records[-1].get(field) if isinstance(records[-1], dict) else None
            if isinstance(last, str):
                self._cursor_text = last
        if keys is None or self._incomplete:
            return
        fields = self.key_fields
        for record in records:
            key = tuple(record.get(f) for f in fields) if isinstance(record, dict) else None
            if key is None:
                continue
            try:
                digest = hash(key)
            except TypeError:  # a key field holding a list or an object
                digest = hash(repr(key))
            if digest in keys:
                paging = type(self.paginator).__name__
                self._incomplete.append(
                    f"key {redact(str(key[0] if len(key) == 1 else key))!r} was read twice in one"
                    f" read of {self._show(url)} with {paging}: records changed during the read and shifted between"
                    " pages, so others may have been skipped. The records read are loaded; the watermark and a replace"
                    " table stay as they were. Use KeysetPaginator (paging by the cursor) for data that changes"
                    " while it is read"
                )
                return
            keys.add(digest)

    def _request(self, client: httpx.Client, url: str, params: dict[str, Any]) -> httpx.Response:
        """GET one page: rate limit, send, decode; retry transient faults, fail clearly on the rest.

        A 2xx body that is cut short or not valid JSON is a transient fault like
        a 5xx: it is retried, and the response returned has its body decoded.
        """
        shown = self._show(httpx.URL(url, params=params or None))

        def attempt() -> httpx.Response:
            if self.rate_limit is not None:
                self.rate_limit.acquire()
            try:
                # No params at all (not {}): httpx would drop the query of a next-page URL.
                response = client.get(url, params=params or None)
            except httpx.TransportError as exc:
                raise TransientFault(f"{type(exc).__name__}: {exc}", cause_of_transport(exc)) from None
            if self.should_retry(response):
                raise TransientFault(f"HTTP {response.status_code} {response.reason_phrase}", cause_of(response),
                                     response)
            if response.is_error:
                raise self._http_error(response)
            self._decode(response)
            return response

        def transient(exc: BaseException) -> bool:
            if not isinstance(exc, TransientFault):
                return False
            asked = retry_after(exc.response) if exc.response is not None else None
            return asked is None or asked <= self.max_retry_after

        def before_sleep(retry_state: RetryCallState) -> None:
            failure = retry_state.outcome.exception() if retry_state.outcome else None
            assert isinstance(failure, TransientFault)
            wait = retry_state.upcoming_sleep
            self.faults.count(failure.cause)
            self.log.warning("request failed; retrying", url=shown, error=failure.reason, cause=failure.cause,
                             attempt=retry_state.attempt_number, of=attempts, wait_s=round(wait, 2))
            if failure.response is not None and failure.response.status_code == 429 and self.rate_limit is not None:
                # Everyone sharing this API's budget backs off, not just this stream.
                self.rate_limit.defer(wait)

        attempts = max(0, int(self.max_retries)) + 1
        retrying = Retrying(
            stop=stop_after_attempt(attempts), wait=ServerWait(self.backoff, self.max_backoff),
            retry=retry_if_exception(transient), before_sleep=before_sleep, reraise=True,
        )
        try:
            return retrying(attempt)
        except TransientFault as failure:
            self.faults.failed_urls.append(shown)
            if failure.response is not None:
                shown = self._show(failure.response.request.url)
                asked = retry_after(failure.response)
                if asked is not None and asked > self.max_retry_after:
                    raise SourceError(
                        f"stream {self.name!r}: GET {shown} answered {failure.reason} and asked to wait {asked:.0f} s,"
                        f" longer than max_retry_after={self.max_retry_after:g}; the pages read so far are loaded."
                        " Run again later or raise max_retry_after"
                    ) from None
            tries = retrying.statistics.get("attempt_number", attempts)
            raise SourceError(
                f"stream {self.name!r}: GET {shown} failed after {tries} attempts: {failure.reason}"
                f"{_excerpt(failure.response)}; the pages read so far are loaded"
            ) from None

    def _decode(self, response: httpx.Response) -> Any:
        """Decode a 2xx body once; a body that is not complete, valid JSON is a transient fault."""
        try:
            return self.json(response)
        except SourceError as exc:
            raise TransientFault(str(exc).removeprefix(f"stream {self.name!r}: "), "invalid_body") from None

    def _http_error(self, response: httpx.Response) -> SourceError:
        hint = ""
        if response.status_code in (401, 403):
            hint = f" ({self.auth.hint() if isinstance(self.auth, Auth) else 'check the credentials'})"
        elif response.status_code == 404:
            hint = " (check base_url and path)"
        return SourceError(
            f"stream {self.name!r}: GET {self._show(response.request.url)} answered HTTP {response.status_code}"
            f" {response.reason_phrase}{hint}{_excerpt(response)}; not retried (a client error will not fix itself)"
        )

    def reported_total(self, response: httpx.Response) -> int | None:
        """How many records the API says this read has: the paginator's total field, else ``X-Total-Count``."""
        total = self.paginator.total_records(self.json(response))
        if total is None:
            try:
                total = int(response.headers.get("X-Total-Count", ""))
            except ValueError:
                return None
        return total

    def _log_progress(self, read: int, total: int | None, pages: int) -> None:
        if total:
            self.log.info(f"read {read:,} of {total:,} records ({min(read / total, 1):.0%}) in {pages:,} pages",
                          records=read, total_records=total, pages=pages)
        else:
            self.log.info(f"read {read:,} records in {pages:,} pages", records=read, pages=pages)

    def _log_estimate(self, paginator: Paginator, response: httpx.Response, first_page: int, seconds: float) -> None:
        """Log how long a full sync will take: pages x seconds per page."""
        per_page = paginator.page_size or first_page or None
        total = self.reported_total(response)
        pages = pages_for(total, per_page)
        # A page costs the slower of the limiter's spacing and the server's answer time.
        pace = max(seconds, self.rate_limit.interval if self.rate_limit else 0.0)
        limit = f"{self.rate_limit.rate:.3g} requests/s" if self.rate_limit else "no rate limit"
        if pages is not None:
            self.log.info(
                f"full sync estimate: {pages:,} pages x {pace:.2f} s/page ≈ {_duration(pages * pace)}"
                f" for {total:,} records ({limit}, {per_page} records/page)",
                pages=pages, seconds_per_page=round(pace, 3), total_records=total,
            )
        else:
            self.log.info(
                f"full sync: the API gives no total; each page of {per_page or 'unknown'} records takes about"
                f" {pace:.2f} s ({limit})", seconds_per_page=round(pace, 3),
            )

    def _show(self, url: httpx.URL | str) -> str:
        return redact(str(url))


_UNSET = object()


_retry_after = retry_after  # the name tests and older code import

#: Seconds between progress lines of a long read (records read, of the total the API reports).
PROGRESS_EVERY = 10.0

#: The stream state key holding one cursor value as the source wrote it.
CURSOR_TEXT = "cursor_text"


def normalised_url(url: str, params: Mapping[str, Any] | None = None) -> str:
    """One spelling per resource: scheme and host lower-cased, default port and fragment dropped, query sorted.

    The pagination loop guard compares these, so a ``next`` link that spells
    the first page differently (parameters in another order, ``:443``) is
    still recognised as that page.
    """
    full = httpx.URL(url, params=params or None) if params else httpx.URL(url)
    default = {"http": 80, "https": 443}.get(full.scheme)
    port = "" if full.port in (None, default) else f":{full.port}"
    query = urllib.parse.urlencode(sorted(urllib.parse.parse_qsl(full.query.decode("ascii"), keep_blank_values=True)))
    return f"{full.scheme}://{full.host.lower()}{port}{full.path or '/'}" + (f"?{query}" if query else "")


def _excerpt(response: httpx.Response | None) -> str:
    if response is None:
        return ""
    text = response.text[:300].strip()
    return f": {redact(text)!r}" if text else ""


def _keys(body: Any) -> str:
    if isinstance(body, dict):
        return ", ".join(repr(k) for k in list(body)[:10]) or "none"
    return f"none (the body is a {type(body).__name__})"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
