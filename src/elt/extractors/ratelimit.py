"""Client-side rate limiting: stay under a source's request limit instead of hitting it.

One :class:`RateLimit` object is one budget. Streams (and threads) that share
the object share the budget, so declare it once per API::

    STRIPE_LIMIT = RateLimit(per_second=25)

    class Charges(RestExtractor):
        rate_limit = STRIPE_LIMIT
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from elt.errors import ConfigError


class RateLimit:
    """A token bucket of ``burst`` tokens refilled at the configured rate.

    With the default ``burst=1`` requests are spaced evenly, so no window of
    any length sees more than the limit (plus the one request that opens it).
    Implemented as a virtual schedule (GCRA): each request books the next free
    slot, so sleeps do not drift and the achieved rate stays at the limit.
    """

    def __init__(
        self, per_second: float | None = None, *, per_minute: float | None = None, burst: int = 1,
        clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        rates = [r for r in (per_second, (per_minute / 60.0) if per_minute else None) if r]
        if not rates or min(rates) <= 0:
            raise ConfigError("RateLimit: give per_second and/or per_minute, each above 0")
        if burst < 1:
            raise ConfigError(f"RateLimit: burst must be at least 1, got {burst}")
        #: The effective limit in requests per second (the stricter of the two).
        self.rate = min(rates)
        self.interval = 1.0 / self.rate
        self.burst = burst
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._next = 0.0  # the theoretical time of the next request at an even pace

    def acquire(self) -> float:
        """Wait for a slot; returns the seconds waited."""
        with self._lock:
            now = self._clock()
            slot = max(self._next, now)
            start = slot - (self.burst - 1) * self.interval
            wait = max(0.0, start - now)
            self._next = slot + self.interval
        if wait:
            self._sleep(wait)
        return wait

    def defer(self, seconds: float) -> None:
        """Push every sharer's next slot ``seconds`` away (the source said to back off)."""
        with self._lock:
            # Booked so that the first request after the pause (burst or not) waits the full time.
            self._next = max(self._next, self._clock() + seconds + (self.burst - 1) * self.interval)

    def __repr__(self) -> str:
        return f"RateLimit({self.rate:g}/s, burst={self.burst})"
