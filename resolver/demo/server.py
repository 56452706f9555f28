"""Run a WSGI app on 127.0.0.1 in a background thread (the demo's and the tests' local servers)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server


class QuietHandler(WSGIRequestHandler):
    """No access log: request paths carry links and grants, which must not reach any log line."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


class ServerThread:
    def __init__(self, app: Callable, port: int = 0) -> None:
        self.server: BaseWSGIServer = make_server(
            "127.0.0.1", port, app, threaded=True, request_handler=QuietHandler
        )
        self.port = self.server.server_port
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> ServerThread:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
