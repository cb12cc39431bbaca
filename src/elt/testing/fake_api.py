"""A small JSON API on 127.0.0.1 for testing REST extractors against real HTTP.

Routes are plain functions from a :class:`Request` to a :class:`Reply` (or to
a dict/list, sent as JSON with status 200). Replies can also misbehave the
way real APIs do: drop the connection half-way through the body, answer
late, or send a body that is not JSON::

    api = FakeApi()

    @api.route("/customers")
    def customers(request):
        page = int(request.params.get("page", 1))
        return {"data": CUSTOMERS[(page - 1) * 10: page * 10]}

    with api:                       # started on a free port, stopped on exit
        Customers.base_url = api.url
        ...

Every request is recorded in :attr:`FakeApi.requests` so tests can assert
what was asked for.
"""

from __future__ import annotations

import re
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

import httpx
import orjson

from elt.testing.local_server import LocalServer


@dataclass
class Request:
    """One request as the fake API received it."""

    method: str
    path: str
    params: dict[str, str]
    headers: httpx.Headers  # case-insensitive, like HTTP
    path_params: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def form(self) -> dict[str, str]:
        """The body as an HTML form (OAuth2 token requests)."""
        return dict(urllib.parse.parse_qsl(self.body.decode("utf-8", "replace")))


@dataclass
class Reply:
    """What the fake API answers. ``json`` is serialised unless ``body`` is given.

    ``drop_after`` sends that many bytes of the body (with the full
    Content-Length announced) and closes the connection; ``delay`` waits before
    answering (for timeouts).
    """

    json: Any = None
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    drop_after: int | None = None
    delay: float = 0.0

    def content(self) -> bytes:
        return self.body if self.body is not None else orjson.dumps(self.json)


Handler = Callable[[Request], "Reply | dict[str, Any] | list[Any]"]


class FakeApi:
    """A threaded HTTP/1.1 server with JSON routes, bound to 127.0.0.1 only."""

    def __init__(self, port: int = 0) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self._lock = threading.Lock()
        self.requests: list[Request] = []
        self._server: LocalServer | None = None
        self._port = port

    def route(self, path: str, handler: Handler | None = None, *, method: str = "GET") -> Any:
        """Register ``handler`` for ``path`` (``{name}`` segments become ``request.path_params``)."""
        pattern = re.compile("^" + re.sub(r"\\{(\w+)\\}", r"(?P<\1>[^/]+)", re.escape(path)) + "$")

        def register(fn: Handler) -> Handler:
            self._routes.append((method.upper(), pattern, fn))
            return fn

        return register(handler) if handler is not None else register

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeApi is not started")
        port = self._server.port
        return f"http://127.0.0.1:{port}"

    def start(self) -> FakeApi:
        api = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real APIs and httpx's pool expect
            # Headers and body go out in two writes; with Nagle on, each keep-alive
            # response would wait ~40 ms for the client's delayed ACK.
            disable_nagle_algorithm = True

            def do_GET(self) -> None:
                api._serve(self)

            do_POST = do_GET

            def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read api.requests
                return

        self._server = LocalServer(_Handler, self._port, "fake-api")
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> FakeApi:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def count(self, path: str) -> int:
        """How many requests reached ``path``."""
        with self._lock:
            return sum(1 for r in self.requests if r.path == path)

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        split = urllib.parse.urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        request = Request(
            method=handler.command, path=split.path, params=dict(urllib.parse.parse_qsl(split.query)),
            headers=httpx.Headers(list(handler.headers.items())), body=handler.rfile.read(length) if length else b"",
        )
        with self._lock:
            self.requests.append(request)
        reply = self._dispatch(request)
        if reply.delay:
            time.sleep(reply.delay)
        content = reply.content()
        handler.send_response(reply.status)
        headers = {"Content-Type": "application/json", **reply.headers, "Content-Length": str(len(content))}
        for name, value in headers.items():
            handler.send_header(name, value)
        if reply.drop_after is not None:
            handler.send_header("Connection", "close")
        handler.end_headers()
        if reply.drop_after is not None:
            handler.wfile.write(content[: reply.drop_after])
            handler.wfile.flush()
            handler.close_connection = True
            return
        handler.wfile.write(content)

    def _dispatch(self, request: Request) -> Reply:
        for method, pattern, fn in self._routes:
            match = pattern.match(request.path)
            if match and method == request.method:
                request.path_params = match.groupdict()
                try:
                    result = fn(request)
                except Exception as exc:  # a bug in a route is a 500, visible in the test's failure
                    return Reply({"error": f"{type(exc).__name__}: {exc}"}, status=500)
                return result if isinstance(result, Reply) else Reply(result)
        return Reply({"error": f"no route for {request.method} {request.path}"}, status=404)
