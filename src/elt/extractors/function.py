"""``@extractor``: turn a generator function into a stream.

The function receives where to start (the stored watermark minus the lookback,
``None`` on a first or full-refresh run) and yields records or pages of
records::

    @extractor(name="orders", primary_key="id", cursor=Cursor("updated_at"))
    def orders(since):
        yield from fetch_orders(updated_since=since)

A function whose parameter is called ``state`` gets the whole
:class:`~elt.state.StreamState` instead; one with no parameter reads everything.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

from elt.extractors.base import Extractor
from elt.state import StreamState

RecordSource = Callable[..., Iterable[dict[str, Any] | list[dict[str, Any]]]]


class FunctionExtractor(Extractor):
    """An extractor whose records come from a plain generator function."""

    function: RecordSource

    def records(self, state: StreamState) -> Iterable[dict[str, Any] | list[dict[str, Any]]]:
        params = inspect.signature(self.function).parameters
        if not params:
            return self.function()
        if "state" in params:
            return self.function(state=state)
        return self.function(state.since)


def extractor(
    function: RecordSource | None = None, /, *, name: str | None = None, **settings: Any
) -> Any:
    """Decorate a generator function to make it a stream; settings are :class:`Extractor`'s attributes."""

    def wrap(fn: RecordSource) -> FunctionExtractor:
        attrs = {"name": name or fn.__name__, "__doc__": fn.__doc__, "__module__": fn.__module__}
        cls = type(f"{fn.__name__}_extractor", (FunctionExtractor,), attrs)
        instance = cls(**settings)
        instance.function = fn
        return instance

    return wrap(function) if function is not None else wrap
