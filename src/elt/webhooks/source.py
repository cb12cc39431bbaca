"""`WebhookSource`: a declared endpoint that senders push events to, and the registry it joins.

Declared in a project's ``pipelines.py`` next to its pipelines::

    WebhookSource("stripe", "/webhooks/stripe", secret=from_env("STRIPE_WEBHOOK_SECRET"), signature="stripe")

Each event is stored in ``raw.<name>_<entity>`` (``raw.stripe_events``) before
the sender gets its 2xx; `elt serve` and `elt webhooks` serve every declared source.
A declaration imports nothing that serves it.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from elt.destinations import Destination, resolve
from elt.errors import ConfigError
from elt.pipeline import on_clear
from elt.secrets import Secret
from elt.webhooks.signatures import GitHub, Shopify, Signature, signature_of

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_registry: dict[str, WebhookSource] = {}

#: Headers stored with every event: what a person debugging a delivery wants to see.
#: Signature and authorisation headers are never stored.
DEFAULT_HEADERS = (
    "content-type", "user-agent", "x-request-id",
    "x-github-event", "x-github-delivery", "x-github-hook-id",
    "x-shopify-topic", "x-shopify-shop-domain", "x-shopify-webhook-id", "x-shopify-event-id",
)


@dataclass
class WebhookSource:
    """An HTTP endpoint receiving one sender's events into ``raw.<name>_<entity>``.

    ``event_id`` is the payload field (a dotted path) that identifies an event;
    ``event_id_header`` a header that does (wins when present; GitHub and Shopify
    set one by default). A delivery with neither is identified by the SHA-256 of
    its body, so a sender's retry of the same body is still stored once.
    """

    name: str
    path: str
    secret: Secret | str | None = None
    #: ``"stripe"``, ``"github"``, ``"shopify"``, ``"header"`` or a Signature object; ``None``: unsigned (warned).
    signature: str | Signature | None = "header"
    entity: str = "events"
    event_id: str = "id"
    event_id_header: str | None = None
    #: Headers kept with each event, besides :data:`DEFAULT_HEADERS`.
    keep_headers: Sequence[str] = ()
    #: Largest body accepted (bytes); larger gets 413.
    max_bytes: int = 1_000_000
    #: `elt check` flags the source when no event arrived for longer than this (timedelta or "6h").
    expect_every: dt.timedelta | str | None = None
    #: Models to build after new events: ``True`` every model reading the raw table (and its dependents),
    #: a list of selectors, or ``False``; at most once per ``transform_every``.
    transforms: bool | Sequence[str] = False
    transform_every: dt.timedelta | float = dt.timedelta(seconds=60)
    destination: Destination | str | None = None
    description: str = ""
    _style: Signature | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        label = f"webhook source {self.name!r}"
        if not _NAME.match(self.name or "") or not _NAME.match(self.entity or ""):
            raise ConfigError(f"{label}: name and entity must start with a letter or _ and hold only letters, digits and _")
        if not self.path.startswith("/") or self.path in ("/", "/healthz"):
            raise ConfigError(f"{label}: path {self.path!r} must start with / and not be / or /healthz")
        if isinstance(self.secret, str):
            self.secret = Secret(self.secret, name=f"{self.name} webhook secret")
        self._style = None if self.signature is None else signature_of(self.signature)
        if self._style is not None and self.secret is None:
            raise ConfigError(f"{label}: signature {self.signature!r} needs secret=from_env('...') (the signing secret)")
        if self.event_id_header is None and isinstance(self._style, GitHub):
            self.event_id_header = "X-GitHub-Delivery"
        elif self.event_id_header is None and isinstance(self._style, Shopify):
            self.event_id_header = "X-Shopify-Webhook-Id"
        if int(self.max_bytes) <= 0:
            raise ConfigError(f"{label}: max_bytes must be positive")
        if isinstance(self.expect_every, str):
            from elt.schedules import parse_every

            self.expect_every = parse_every(self.expect_every)
        if isinstance(self.transform_every, (int, float)):
            self.transform_every = dt.timedelta(seconds=float(self.transform_every))
        self.destination = resolve(self.destination)
        for other in _registry.values():
            if other.path == self.path and other.table != self.table:
                raise ConfigError(f"{label}: path {self.path} is already served by raw.{other.table}")
        # By table: one sender may have several entities (a WebhookSource each, with its own path).
        _registry[self.table] = self

    @property
    def style(self) -> Signature | None:
        return self._style

    @property
    def table(self) -> str:
        return f"{self.name}_{self.entity}"

    @property
    def kept_headers(self) -> tuple[str, ...]:
        signed = {self._style.header.lower()} if self._style else set()
        wanted = {*DEFAULT_HEADERS, *(h.lower() for h in self.keep_headers)}
        if self.event_id_header:
            wanted.add(self.event_id_header.lower())
        return tuple(sorted(wanted - signed - {"authorization", "cookie"}))

    def event_id_of(self, payload: Any, headers: Mapping[str, str]) -> str | None:
        """The event's id from its header or payload field; ``None`` when it has neither."""
        if self.event_id_header:
            value = headers.get(self.event_id_header.lower())
            if value:
                return value
        node = payload
        for part in self.event_id.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return None if node is None or isinstance(node, (dict, list)) else str(node)

    def secret_value(self) -> str:
        assert isinstance(self.secret, Secret)
        return self.secret.value


def registered_webhooks() -> dict[str, WebhookSource]:
    return dict(_registry)


def clear_webhooks() -> None:
    _registry.clear()


on_clear(clear_webhooks)
