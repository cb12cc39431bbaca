"""Transient source faults: what counts as one, how long to wait, and the tally a run keeps.

A REST stream retries a request through tenacity when the source fails in a
way that may pass: rate limited (429), a server error (5xx), a timeout, a
connection dropped (before or in the middle of the body), or a 2xx answer
whose body is not complete, valid JSON. The wait honours ``Retry-After`` (in
seconds or as an HTTP date) and the rate-limit reset headers, else it is an
exponential backoff with full jitter; both are capped. Every retry is counted
by cause in :class:`Faults`, which the run stores with the stream's figures.
"""

from __future__ import annotations

import email.utils
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from tenacity import RetryCallState, wait_random_exponential

#: Statuses worth another try: rate limited, or the server (or a proxy in front of it) failing.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})

#: The causes faults are counted under (the keys of ``Faults.retries``).
CAUSES = ("429", "5xx", "timeout", "connection_dropped", "invalid_body")


@dataclass
class TransientFault(Exception):
    """A failure worth another attempt; carries what the wait and the final error message need."""

    reason: str
    cause: str
    response: httpx.Response | None = None

    def __str__(self) -> str:
        return self.reason


def cause_of(response: httpx.Response) -> str:
    """The fault cause a retried response is counted under."""
    if response.status_code == 429:
        return "429"
    return "5xx" if response.status_code >= 500 else f"HTTP {response.status_code}"  # should_retry widened


def cause_of_transport(exc: httpx.TransportError) -> str:
    return "timeout" if isinstance(exc, httpx.TimeoutException) else "connection_dropped"


@dataclass
class Faults:
    """The faults one stream met in one read: retries by cause, and the URLs that failed for good."""

    retries: dict[str, int] = field(default_factory=dict)
    failed_urls: list[str] = field(default_factory=list)

    def count(self, cause: str) -> None:
        self.retries[cause] = self.retries.get(cause, 0) + 1

    def as_json(self) -> dict[str, Any]:
        """For the run's record; empty when the read met no fault."""
        data: dict[str, Any] = {}
        if self.retries:
            data["retries"] = dict(sorted(self.retries.items()))
        if self.failed_urls:
            data["failed_urls"] = list(self.failed_urls)
        return data


def retry_after(response: httpx.Response) -> float | None:
    """Seconds the server asked us to wait: ``Retry-After`` (seconds or HTTP date), else a rate-limit reset."""
    value = response.headers.get("Retry-After")
    if value:
        value = value.strip()
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            when = None
        if when is not None:
            return max(0.0, when.timestamp() - time.time())
    for header in ("X-RateLimit-Reset", "X-Rate-Limit-Reset", "RateLimit-Reset"):
        value = response.headers.get(header)
        if not value:
            continue
        try:
            number = float(value)
        except ValueError:
            continue
        # GitHub and Twitter send an epoch time; the IETF draft and others send seconds to wait.
        return max(0.0, number - time.time()) if number > 1_000_000_000 else number
    return None


class ServerWait:
    """tenacity wait: the server's ``Retry-After`` when it gave one, else exponential backoff with full jitter.

    ``cap`` bounds the backoff; a server asking for more than ``max_asked`` is
    refused before this wait is consulted (see the retry predicate in rest.py).
    """

    def __init__(self, backoff: float, cap: float) -> None:
        self._backoff = wait_random_exponential(multiplier=max(backoff, 0.0), max=max(cap, 0.0))

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        failure = outcome.exception() if outcome is not None else None
        if isinstance(failure, TransientFault) and failure.response is not None:
            asked = retry_after(failure.response)
            if asked is not None:
                return asked
        return float(self._backoff(retry_state))
