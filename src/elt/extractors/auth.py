"""Authentication for REST streams: API keys, bearer tokens, HTTP Basic, OAuth2 client credentials.

Each class is an ``httpx.Auth``, declared on the extractor with secrets read
from environment variables::

    class Charges(RestExtractor):
        auth = BearerAuth(from_env("STRIPE_KEY"))

Secret values are registered for redaction, so they never appear in logs,
errors or the run log, even inside a URL.
"""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Generator
from typing import Any

import httpx
import orjson

from elt.errors import ConfigError, EltError
from elt.extractors.retries import RETRY_STATUSES, TransientFault, cause_of
from elt.secrets import Secret, redact, register

SecretLike = Secret | str


def reveal(value: SecretLike) -> str:
    """The plain text of a secret (registering plain strings for redaction too)."""
    text = value.value if isinstance(value, Secret) else str(value)
    register(text)
    return text


def _where(value: SecretLike) -> str:
    return f" in {value.name}" if isinstance(value, Secret) else ""


class AuthError(EltError):
    """The source refused the credentials, or the token endpoint failed."""


class Auth(httpx.Auth):
    """Base class: :meth:`hint` says where to look when the source answers 401 or 403."""

    def hint(self) -> str:
        return "check the credentials"


class ApiKeyAuth(Auth):
    """An API key in a header (default ``X-API-Key``) or a query parameter::

        auth = ApiKeyAuth(from_env("HUBSPOT_KEY"), header="X-API-Key")
        auth = ApiKeyAuth(from_env("WEATHER_KEY"), query="appid")
    """

    def __init__(self, key: SecretLike, *, header: str | None = "X-API-Key", query: str | None = None,
                 prefix: str = "") -> None:
        if not header and not query:
            raise ConfigError("ApiKeyAuth: give a header or a query parameter name for the key")
        self.key, self.header, self.query, self.prefix = key, (None if query else header), query, prefix

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self.query:
            request.url = request.url.copy_merge_params({self.query: reveal(self.key)})
        else:
            request.headers[str(self.header)] = self.prefix + reveal(self.key)
        yield request

    def hint(self) -> str:
        return f"check the API key{_where(self.key)}"


class BearerAuth(Auth):
    """``Authorization: Bearer <token>``::

        auth = BearerAuth(from_env("STRIPE_KEY"))
    """

    def __init__(self, token: SecretLike) -> None:
        self.token = token

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {reveal(self.token)}"
        yield request

    def hint(self) -> str:
        return f"check the token{_where(self.token)}"


class BasicAuth(Auth):
    """HTTP Basic::

        auth = BasicAuth("api", from_env("MAILGUN_KEY"))
    """

    def __init__(self, username: SecretLike, password: SecretLike) -> None:
        self.username, self.password = username, password

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        encoded = base64.b64encode(f"{reveal(self.username)}:{reveal(self.password)}".encode()).decode("ascii")
        # The encoded pair is as secret as the password it encodes.
        register(encoded)
        request.headers["Authorization"] = f"Basic {encoded}"
        yield request

    def hint(self) -> str:
        return f"check the user name and password{_where(self.password)}"


class OAuth2ClientCredentials(Auth):
    """OAuth2 client-credentials grant, with the access token refreshed before it expires::

        auth = OAuth2ClientCredentials(
            "https://login.example.com/oauth/token",
            client_id=from_env("XERO_CLIENT_ID"), client_secret=from_env("XERO_CLIENT_SECRET"),
            scope="accounting.transactions.read",
        )

    A token is fetched on first use and again ``refresh_margin`` seconds before
    its ``expires_in`` runs out. When the API answers 401 the token is refreshed
    once and the request repeated; a second 401 fails the stream clearly.
    Thread-safe: streams sharing the object share the token.

    The token request goes through the stream's own HTTP client (its timeouts,
    proxy and TLS verification) and is retried with the stream's retries.
    """

    #: The token answer is read in the flow (httpx reads bodies for flows that ask).
    requires_response_body = True

    def __init__(
        self, token_url: str, *, client_id: SecretLike, client_secret: SecretLike, scope: str | None = None,
        audience: str | None = None, credentials_in: str = "basic", refresh_margin: float = 60.0,
        timeout: float = 30.0, extra: dict[str, str] | None = None,
    ) -> None:
        if credentials_in not in ("basic", "body"):
            raise ConfigError("OAuth2ClientCredentials: credentials_in must be 'basic' or 'body'")
        self.token_url, self.client_id, self.client_secret = token_url, client_id, client_secret
        self.scope, self.audience, self.credentials_in = scope, audience, credentials_in
        self.refresh_margin, self.timeout, self.extra = refresh_margin, timeout, dict(extra or {})
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0
        #: How many tokens this object has fetched (visible for monitoring and tests).
        self.fetches = 0

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self._valid_token()
        if token is None:
            token = yield from self._fetch(request)
        request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            # The token may have been revoked or expired early: one refresh, then give up.
            fresh = self._valid_token(stale=token)
            if fresh is None:
                fresh = yield from self._fetch(request)
            request.headers["Authorization"] = f"Bearer {fresh}"
            yield request

    def _valid_token(self, stale: str | None = None) -> str | None:
        """The current token unless it is (nearly) expired or is ``stale``; another thread may have replaced it."""
        with self._lock:
            fresh = self._token is not None and time.monotonic() < self._expires_at - self.refresh_margin
            return str(self._token) if fresh and self._token != stale else None

    def _fetch(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, str]:
        """Ask the token endpoint through the stream's own client (its timeouts, proxy and TLS settings).

        A transient failure (429, 5xx, a cut body; a timeout or dropped connection
        raises from the client) is raised as such, so the stream's retries repeat
        the request, token included, with the stream's backoff.
        """
        data: dict[str, str] = {"grant_type": "client_credentials", **self.extra}
        if self.scope:
            data["scope"] = self.scope
        if self.audience:
            data["audience"] = self.audience
        headers: dict[str, str] = {}
        if self.credentials_in == "basic":
            pair = base64.b64encode(f"{reveal(self.client_id)}:{reveal(self.client_secret)}".encode()).decode("ascii")
            register(pair)
            headers["Authorization"] = f"Basic {pair}"
        else:
            data.update(client_id=reveal(self.client_id), client_secret=reveal(self.client_secret))
        timeout = request.extensions.get("timeout") or httpx.Timeout(self.timeout).as_dict()
        response = yield httpx.Request("POST", self.token_url, data=data, headers=headers,
                                       extensions={"timeout": timeout})
        self.fetches += 1
        where = f"OAuth2 token request to {self.token_url}"
        if response.status_code in RETRY_STATUSES:
            raise TransientFault(redact(f"{where} answered HTTP {response.status_code}"), cause_of(response), response)
        if response.status_code != 200:
            raise AuthError(redact(f"{where} answered HTTP {response.status_code}: {response.text[:300]} ({self.hint()})"))
        try:
            body: Any = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise TransientFault(f"{where}: the response is not valid JSON", "invalid_body", response) from None
        try:
            token = str(body["access_token"])
        except (KeyError, TypeError):
            raise AuthError(f"OAuth2 token response from {self.token_url} has no access_token") from None
        register(token)
        try:
            lifetime = float(body.get("expires_in", 3600))
        except (TypeError, ValueError):
            lifetime = 3600.0
        with self._lock:
            self._token, self._expires_at = token, time.monotonic() + lifetime
        return token

    def hint(self) -> str:
        return f"check the client id and secret{_where(self.client_secret)} and the scopes granted"
