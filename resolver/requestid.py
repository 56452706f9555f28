"""One id per request, on the response (`X-Request-Id`), in every log line and every audit record.

A client (or the proxy in front) may send its own id so traces join up, but only one that matches a
strict pattern: anything else is replaced, so the header cannot smuggle text into logs. The id lives in
a context variable as well as in `flask.g`, because a media stream and its audit record outlive the
request context (each gevent greenlet and each thread has its own context).
"""

from __future__ import annotations

import re
import secrets
from contextvars import ContextVar

from flask import Flask, Response, g, request

HEADER = "X-Request-Id"
PATTERN = re.compile(r"[A-Za-z0-9-]{8,64}")
_current: ContextVar[str | None] = ContextVar("resolver_request_id", default=None)


def current() -> str | None:
    """The id of the request being handled or streamed, if any."""
    return _current.get()


def accept_or_new(given: str | None) -> str:
    return given if given and PATTERN.fullmatch(given) else secrets.token_hex(8)


def init_app(app: Flask) -> None:
    """Register first, so the id exists before any other hook can log or refuse."""

    def start() -> None:
        g.request_id = accept_or_new(request.headers.get(HEADER))
        _current.set(g.request_id)
        if request.url_rule is not None:
            # gunicorn's access log prints this instead of the path, which may hold a link or a grant
            request.environ["resolver.route"] = request.url_rule.rule

    def finish(resp: Response) -> Response:
        resp.headers[HEADER] = g.get("request_id") or accept_or_new(None)
        resp.call_on_close(lambda: _current.set(None))  # after the stream (and its audit record) ended
        return resp

    app.before_request_funcs.setdefault(None, []).insert(0, start)
    app.after_request(finish)

