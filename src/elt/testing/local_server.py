"""A threaded HTTP server on 127.0.0.1 in the background: the one start/stop that test servers share."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LocalServer:
    """Serves ``handler`` on 127.0.0.1 (``port`` 0: a free one) in a daemon thread until :meth:`stop`."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], port: int = 0, name: str = "local-server") -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.server.daemon_threads = True
        # A short poll keeps stop() quick; serve_forever checks for shutdown at this interval.
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=name, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)
