"""Signature styles of webhook senders: HMAC-SHA256 of the body, checked in constant time.

Each style is a small class with one hook, :meth:`Signature.problem`, which
returns ``None`` for a valid signature or the reason it is refused (logged and
counted; the body is never stored). Styles:

- :class:`Stripe`: ``Stripe-Signature: t=<unix>,v1=<hex>`` over ``"<t>.<body>"``,
  with a timestamp tolerance so a captured request cannot be replayed later;
- :class:`GitHub`: ``X-Hub-Signature-256: sha256=<hex>``;
- :class:`Shopify`: ``X-Shopify-Hmac-Sha256: <base64>``;
- :class:`HeaderHmac`: any header, hex or base64, optional prefix (a CRM's own scheme).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass

from elt.errors import ConfigError


def _digest(secret: str, message: bytes) -> bytes:
    return hmac.new(secret.encode(), message, hashlib.sha256).digest()


@dataclass(frozen=True)
class Signature:
    """A signature style; ``header`` is the (case-insensitive) header that carries it."""

    header: str = ""

    def problem(self, body: bytes, headers: Mapping[str, str], secret: str, now: float | None = None) -> str | None:
        """``None`` when ``body`` is signed with ``secret``; otherwise why it is refused."""
        raise NotImplementedError

    def _value(self, headers: Mapping[str, str]) -> str | None:
        return headers.get(self.header.lower())


@dataclass(frozen=True)
class HeaderHmac(Signature):
    """HMAC-SHA256 of the body in ``header``, as ``hex`` or ``base64``, after an optional ``prefix``."""

    header: str = "X-Signature"
    encoding: str = "hex"
    prefix: str = ""

    def __post_init__(self) -> None:
        if self.encoding not in ("hex", "base64"):
            raise ConfigError(f"signature encoding {self.encoding!r} must be 'hex' or 'base64'")

    def problem(self, body: bytes, headers: Mapping[str, str], secret: str, now: float | None = None) -> str | None:
        value = self._value(headers)
        if not value:
            return f"missing signature header {self.header}"
        if self.prefix:
            if not value.startswith(self.prefix):
                return f"signature header {self.header} does not start with {self.prefix!r}"
            value = value[len(self.prefix):]
        try:
            given = bytes.fromhex(value) if self.encoding == "hex" else base64.b64decode(value, validate=True)
        except (ValueError, binascii.Error):
            return f"signature header {self.header} is not {self.encoding}"
        if not hmac.compare_digest(given, _digest(secret, body)):
            return "signature does not match the body (wrong secret, or the body was changed)"
        return None


@dataclass(frozen=True)
class GitHub(HeaderHmac):
    header: str = "X-Hub-Signature-256"
    encoding: str = "hex"
    prefix: str = "sha256="


@dataclass(frozen=True)
class Shopify(HeaderHmac):
    header: str = "X-Shopify-Hmac-Sha256"
    encoding: str = "base64"
    prefix: str = ""


@dataclass(frozen=True)
class Stripe(Signature):
    """Stripe's scheme; ``tolerance`` seconds of clock difference (and replay window) are accepted."""

    header: str = "Stripe-Signature"
    tolerance: float = 300.0

    def problem(self, body: bytes, headers: Mapping[str, str], secret: str, now: float | None = None) -> str | None:
        value = self._value(headers)
        if not value:
            return f"missing signature header {self.header}"
        stamp: str | None = None
        candidates: list[str] = []
        for part in value.split(","):
            name, _, item = part.strip().partition("=")
            if name == "t":
                stamp = item
            elif name == "v1":
                candidates.append(item)  # several during a secret roll: any may match
        if stamp is None or not candidates:
            return f"signature header {self.header} lacks t= or v1="
        try:
            sent = int(stamp)
        except ValueError:
            return f"signature timestamp {stamp!r} is not a number"
        age = (time.time() if now is None else now) - sent
        if abs(age) > self.tolerance:
            return (f"signature timestamp is {age:.0f} s from now, outside the {self.tolerance:g} s tolerance"
                    " (a replayed request, or this host's clock is wrong)")
        expected = _digest(secret, stamp.encode() + b"." + body)
        matched = False
        for candidate in candidates:
            try:
                # Every candidate is compared (no early exit) so timing says nothing about which matched.
                matched |= hmac.compare_digest(bytes.fromhex(candidate), expected)
            except ValueError:
                continue
        return None if matched else "signature does not match the body (wrong secret, or the body was changed)"


STYLES: dict[str, type[Signature]] = {"stripe": Stripe, "github": GitHub, "shopify": Shopify, "header": HeaderHmac}


def signature_of(style: str | Signature) -> Signature:
    """A :class:`Signature` from a style name (``stripe``, ``github``, ``shopify``, ``header``) or itself."""
    if isinstance(style, Signature):
        return style
    try:
        return STYLES[style.lower()]()
    except KeyError:
        raise ConfigError(
            f"signature style {style!r} is unknown; use one of {', '.join(STYLES)} or a Signature object"
            " such as HeaderHmac(header='X-My-Signature', encoding='base64')"
        ) from None


def sign(style: Signature, body: bytes, secret: str, timestamp: int | None = None) -> dict[str, str]:
    """The headers a sender of this style would add (for tests, benchmarks and `elt webhooks --sign`)."""
    if isinstance(style, Stripe):
        t = int(time.time()) if timestamp is None else timestamp
        return {style.header: f"t={t},v1={_digest(secret, str(t).encode() + b'.' + body).hex()}"}
    if isinstance(style, HeaderHmac):
        mac = _digest(secret, body)
        text = mac.hex() if style.encoding == "hex" else base64.b64encode(mac).decode()
        return {style.header: style.prefix + text}
    raise ConfigError(f"cannot sign for {type(style).__name__}")
