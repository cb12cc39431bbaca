"""Every auth style against a real HTTP server, including OAuth2 token refresh, and secrets kept out of errors."""

from __future__ import annotations

import base64
import itertools

import pytest

from elt import ApiKeyAuth, BasicAuth, BearerAuth, OAuth2ClientCredentials, RestExtractor, SourceError, from_env
from elt.extractors.auth import AuthError
from elt.secrets import MissingSecretError
from elt.testing import Reply
from tests.extractors.rest_helpers import ids, make_items, read_all

ITEMS = make_items(30)
KEY = "sk_test_4eC39HqLyjWDarjtT1zdp7dc"


class Items(RestExtractor):
    name = "items"
    base_url = "http://127.0.0.1:9"
    path = "/items"
    records_path = "data"
    primary_key = "id"
    backoff = 0.01


def paged(request):
    page = int(request.params.get("page", "1"))
    return {"data": ITEMS[(page - 1) * 10: page * 10]}


def guarded(check):
    """A paged route that answers 401 unless ``check(request)`` holds."""
    def route(request):
        if not check(request):
            return Reply({"error": "unauthorized"}, status=401)
        return paged(request)
    return route


def paged_stream(fake_api, **settings):
    from elt import PageNumberPaginator

    return Items(base_url=fake_api.url, paginator=PageNumberPaginator(page_size=10), **settings)


def test_api_key_in_a_header(fake_api, monkeypatch):
    monkeypatch.setenv("ITEMS_KEY", KEY)
    fake_api.route("/items", guarded(lambda r: r.headers.get("X-Api-Key") == KEY))
    assert ids(read_all(paged_stream(fake_api, auth=ApiKeyAuth(from_env("ITEMS_KEY"))))) == ids(ITEMS)


def test_api_key_in_the_query(fake_api, monkeypatch):
    monkeypatch.setenv("ITEMS_KEY", KEY)
    fake_api.route("/items", guarded(lambda r: r.params.get("api_key") == KEY))
    stream = paged_stream(fake_api, auth=ApiKeyAuth(from_env("ITEMS_KEY"), query="api_key"))
    assert ids(read_all(stream)) == ids(ITEMS)
    assert all(r.params["api_key"] == KEY for r in fake_api.requests)


def test_bearer_token(fake_api, monkeypatch):
    monkeypatch.setenv("ITEMS_TOKEN", KEY)
    fake_api.route("/items", guarded(lambda r: r.headers.get("Authorization") == f"Bearer {KEY}"))
    assert ids(read_all(paged_stream(fake_api, auth=BearerAuth(from_env("ITEMS_TOKEN"))))) == ids(ITEMS)


def test_http_basic(fake_api, monkeypatch):
    monkeypatch.setenv("ITEMS_PASSWORD", KEY)
    expected = "Basic " + base64.b64encode(f"api:{KEY}".encode()).decode()
    fake_api.route("/items", guarded(lambda r: r.headers.get("Authorization") == expected))
    assert ids(read_all(paged_stream(fake_api, auth=BasicAuth("api", from_env("ITEMS_PASSWORD"))))) == ids(ITEMS)


def test_a_refused_key_fails_clearly_and_the_key_never_shows(fake_api, monkeypatch):
    monkeypatch.setenv("ITEMS_KEY", KEY)
    fake_api.route("/items", lambda r: Reply({"error": f"invalid key {r.params['api_key']}"}, status=401))
    stream = paged_stream(fake_api, auth=ApiKeyAuth(from_env("ITEMS_KEY"), query="api_key"))
    with pytest.raises(SourceError) as raised:
        read_all(stream)
    message = str(raised.value)
    assert "HTTP 401" in message and "check the API key in ITEMS_KEY" in message and "not retried" in message
    assert "api_key=***" in message and "invalid key ***" in message
    assert KEY not in message
    assert fake_api.count("/items") == 1  # a 4xx is not retried


@pytest.mark.parametrize("key", ["q8Zk+T3xY/bW9pQ=", "key with spaces&more"], ids=["base64", "spaces"])
def test_a_refused_key_that_url_encoding_changes_never_shows_in_any_form(fake_api, monkeypatch, key):
    # The key reaches the message inside the request's URL, percent-encoded: that form is masked too.
    from urllib.parse import quote, quote_plus

    monkeypatch.setenv("ITEMS_ENC_KEY", key)
    fake_api.route("/items", lambda r: Reply({"error": "unauthorized"}, status=401))
    stream = paged_stream(fake_api, auth=ApiKeyAuth(from_env("ITEMS_ENC_KEY"), query="key"))
    with pytest.raises(SourceError) as raised:
        read_all(stream)
    message = str(raised.value)
    assert "HTTP 401" in message and "key=***" in message, message
    for form in (key, quote(key, safe=""), quote_plus(key), quote(key)):
        assert form not in message, message


def test_a_missing_secret_fails_the_stream_when_used_not_the_import(fake_api, monkeypatch):
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    stream = paged_stream(fake_api, auth=BearerAuth(from_env("NOT_SET_ANYWHERE")))  # declaring is fine
    with pytest.raises(MissingSecretError, match="NOT_SET_ANYWHERE is not set"):
        read_all(stream)


class TokenServer:
    """An OAuth2 token endpoint plus an API that accepts only live tokens."""

    def __init__(self, fake_api, expires_in=3600, revoke_on_request=None, refuse_all=False):
        self.api = fake_api
        self.revoke_on_request, self.refuse_all = revoke_on_request, refuse_all
        self.counter = itertools.count(1)
        self.live: set[str] = set()
        self.grants: list[dict[str, str]] = []
        self.expires_in = expires_in
        fake_api.route("/oauth/token", self.token, method="POST")
        fake_api.route("/items", self.items)

    def token(self, request):
        expected = "Basic " + base64.b64encode(b"client-1:" + KEY.encode()).decode()
        if request.headers.get("Authorization") != expected:
            return Reply({"error": "invalid_client"}, status=401)
        self.grants.append(request.form())
        token = f"access-{next(self.counter)}-{'x' * 20}"
        self.live.add(token)
        return {"access_token": token, "token_type": "bearer", "expires_in": self.expires_in}

    def items(self, request):
        if self.api.count("/items") == self.revoke_on_request:
            self.live.clear()  # the provider revoked the token between pages
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if self.refuse_all:
            return Reply({"error": "insufficient scope"}, status=401)
        if token not in self.live:
            return Reply({"error": "token expired"}, status=401)
        return paged(request)


def oauth(fake_api, secret=KEY, **options):
    return OAuth2ClientCredentials(f"{fake_api.url}/oauth/token", client_id="client-1", client_secret=secret,
                                   scope="read", **options)


def test_oauth2_fetches_one_token_for_the_whole_stream(fake_api):
    server = TokenServer(fake_api)
    auth = oauth(fake_api)
    assert ids(read_all(paged_stream(fake_api, auth=auth))) == ids(ITEMS)
    assert auth.fetches == 1
    assert server.grants == [{"grant_type": "client_credentials", "scope": "read"}]


def test_oauth2_refreshes_on_expiry(fake_api):
    # Tokens live 1 s and are refreshed 60 s before expiry: every request needs a fresh one.
    server = TokenServer(fake_api, expires_in=1)
    auth = oauth(fake_api)
    assert ids(read_all(paged_stream(fake_api, auth=auth))) == ids(ITEMS)
    assert auth.fetches == fake_api.count("/items") == 4  # 3 full pages and the empty one
    assert len(server.live) == 4


def test_oauth2_refreshes_once_on_401_and_carries_on(fake_api):
    TokenServer(fake_api, revoke_on_request=2)
    auth = oauth(fake_api)
    assert ids(read_all(paged_stream(fake_api, auth=auth))) == ids(ITEMS)
    assert auth.fetches == 2


def test_oauth2_a_second_401_after_refresh_fails_clearly(fake_api):
    TokenServer(fake_api, refuse_all=True)
    auth = oauth(fake_api)
    with pytest.raises(SourceError) as raised:
        read_all(paged_stream(fake_api, auth=auth))
    assert "HTTP 401" in str(raised.value) and "client id and secret" in str(raised.value)
    assert auth.fetches == 2  # the first token, and exactly one refresh


def test_oauth2_bad_client_secret_names_the_token_endpoint_not_the_secret(fake_api):
    TokenServer(fake_api)
    wrong = "wrong-secret-value-123"
    with pytest.raises(AuthError) as raised:
        read_all(paged_stream(fake_api, auth=oauth(fake_api, secret=wrong)))
    message = str(raised.value)
    assert "/oauth/token answered HTTP 401" in message and "invalid_client" in message
    assert wrong not in message


def test_oauth2_token_request_is_retried_with_the_streams_client_settings(fake_api):
    # The token endpoint first fails (503 with Retry-After), then answers slower than the
    # stream's timeout: both are retried, and the timeout that fires is the stream's (0.3 s).
    answers = iter([Reply({"error": "down"}, status=503, headers={"Retry-After": "0"}), Reply({}, delay=1.0)])
    # Routed before the token server's own route, which answers once these run out.
    fake_api.route("/oauth/token", lambda request: next(answers, None) or server.token(request), method="POST")
    server = TokenServer(fake_api)
    stream = paged_stream(fake_api, auth=oauth(fake_api), timeout=0.3)
    assert ids(read_all(stream)) == ids(ITEMS)
    assert fake_api.count("/oauth/token") == 3
    assert stream.fault_report() == {"retries": {"5xx": 1, "timeout": 1}}


def test_oauth2_token_request_goes_through_the_streams_proxy(fake_api):
    from tests.fixtures.fault_proxy import FaultProxy

    TokenServer(fake_api)
    with FaultProxy(fake_api.url, rate=0.0) as proxy:
        stream = paged_stream(fake_api, auth=oauth(fake_api), proxy=proxy.url)
        assert ids(read_all(stream)) == ids(ITEMS)
    assert proxy.paths[0] == f"{fake_api.url}/oauth/token"
    assert len(proxy.paths) == fake_api.count("/items") + 1  # every request, the token's included
