"""Domain errors, each carrying its HTTP meaning, and the one place they become responses.

Every refusal the resolver makes is one of these classes. `register_errors` turns them into the JSON
shape of docs/http-api.md (or a small HTML page for a browser navigation). Messages are fixed sentences chosen
here, never text from an exception, a token or an upstream, so no secret can reach a body.
"""

from __future__ import annotations

import html
import logging

from flask import Flask, Response, g, has_request_context, jsonify, render_template_string, request
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class ConfigError(Exception):
    """A setting is missing or unsafe; start-up stops with this one line."""


class ResolverError(Exception):
    status = 500
    code = "internal_error"
    message = "The resolver failed; the incident was logged."
    headers: dict[str, str] = {}

    def __init__(self, message: str | None = None, *, code: str | None = None) -> None:
        super().__init__(message or self.message)
        if message:
            self.message = message
        if code:
            self.code = code


class BadRequest(ResolverError):
    status, code, message = 400, "bad_request", "The request is malformed."


class Unauthenticated(ResolverError):
    status, code, message = 401, "invalid_token", "A valid Flex session token is required."


class Forbidden(ResolverError):
    status, code, message = 403, "forbidden", "You are not allowed to open this media."


class BadGrant(Forbidden):
    code, message = "invalid_grant", "This media link is invalid or has expired; open it again from Flex."


class Revoked(Forbidden):
    code, message = "revoked", "Access to this media has been revoked."


class UsedUp(Forbidden):
    code, message = "grant_used_up", "This media link has been used up; open it again from Flex."


class PayloadTooLarge(ResolverError):
    status, code, message = 413, "body_too_large", "The request body is larger than this endpoint accepts."


class NotFound(ResolverError):
    status, code, message = 404, "not_found", "No such media link."


class MethodNotAllowed(ResolverError):
    status, code, message = 405, "method_not_allowed", "This method is not allowed here."


class RangeNotSatisfiable(ResolverError):
    status, code, message = 416, "range_not_satisfiable", "The requested range is not satisfiable."


class RateLimited(ResolverError):
    status, code, message = 429, "rate_limited", "Too many requests; try again shortly."

    def __init__(self, retry_after: int) -> None:
        super().__init__()
        self.headers = {"Retry-After": str(max(1, int(retry_after)))}


class TooManyStreams(ResolverError):
    """More streams open at once than policy.MAX_STREAMS_PER_GRANT or MAX_STREAMS_PER_IDENTITY allow."""

    status, code = 429, "too_many_streams"

    def __init__(self, budget: str) -> None:
        super().__init__(f"Too many streams of this {'media link' if budget == 'grant' else 'user'} are open at "
                         "once; close one and try again.")
        self.headers = {"Retry-After": "5"}


class UpstreamFailed(ResolverError):
    status, code, message = 502, "upstream_error", "The media store failed to deliver this media."


class RecordingKeyUnknown(UpstreamFailed):
    """An encrypted recording whose public key SID has no private key in this source's private_keys."""

    code, message = "recording_key_unknown", "This recording is encrypted with a key the resolver does not hold."


class RecordingUnwrapFailed(UpstreamFailed):
    """The private key named for the SID could not unwrap the content key (wrong key, corrupt encrypted_cek)."""

    code, message = "recording_unwrap_failed", "This recording's content key could not be unwrapped."


class RecordingIntegrityFailed(UpstreamFailed):
    """A range of a recording whose whole-file GCM tag check failed recently: a part cannot be checked."""

    code, message = ("recording_integrity_failed",
                     "This recording failed its integrity check; it is not served until it verifies.")


class RecordingEncryptionInvalid(UpstreamFailed):
    """Twilio's encryption details are malformed, of an unknown type, or do not fit the media."""

    code, message = "recording_encryption_invalid", "This recording's encryption details are not usable."


class Unavailable(ResolverError):
    status, code, message = 503, "validation_unavailable", "Twilio could not confirm your session; try again."


class StoreUnavailable(ResolverError):
    """Shared state (revocations, limits) cannot be read: fail closed rather than serve unchecked."""

    status, code, message = 503, "store_unavailable", "The resolver cannot check access right now; try again."


class UpstreamTimeout(ResolverError):
    status, code, message = 504, "upstream_timeout", "The media store did not answer in time."


_HTML_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{{ title }}</title>
<style>body{font:16px/1.5 system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;color:#222}
h1{font-size:1.4rem}code{color:#666}</style></head>
<body><h1>{{ title }}</h1><p>{{ message }}</p><p><code>{{ status }} {{ code }}</code></p></body></html>
"""


def wants_html() -> bool:
    """A browser navigation asks for HTML first; API clients and media elements do not."""
    best = request.accept_mimetypes.best_match(["application/json", "text/html"])
    return best == "text/html" and request.accept_mimetypes["text/html"] > request.accept_mimetypes[
        "application/json"
    ]


def error_response(err: ResolverError, title: str | None = None) -> Response:
    if has_request_context():
        g.error_code = err.code  # the audit reason for a refusal no view recorded (audit_web)
    if wants_html():
        body = render_template_string(
            _HTML_PAGE,
            title=title or err.message,
            message=err.message,
            status=err.status,
            code=err.code,
        )
        resp = Response(body, status=err.status, mimetype="text/html")
    else:
        resp = jsonify(error={"code": err.code, "message": err.message})
        resp.status_code = err.status
    resp.headers.update(err.headers)
    resp.headers["Cache-Control"] = "no-store"
    return resp


_HTTP_MAP = {400: BadRequest, 404: NotFound, 405: MethodNotAllowed, 413: PayloadTooLarge,
             416: RangeNotSatisfiable}


def register_errors(app: Flask) -> None:
    @app.errorhandler(ResolverError)
    def _domain(err: ResolverError) -> Response:
        return error_response(err)

    @app.errorhandler(HTTPException)
    def _http(err: HTTPException) -> Response:
        cls = _HTTP_MAP.get(err.code or 500)
        if cls is None:
            mapped = ResolverError(html.escape(err.name) + ".", code="http_error")
            mapped.status = err.code or 500
        else:
            mapped = cls()
        resp = error_response(mapped)
        if err.code == 405 and err.response is None:
            allow = getattr(err, "valid_methods", None)
            if allow:
                resp.headers["Allow"] = ", ".join(allow)
        return resp

    @app.errorhandler(Exception)
    def _unexpected(err: Exception) -> Response:
        # The traceback goes to the log (which never holds request URLs with tokens), never to the client.
        log.error("unhandled error: %s", type(err).__name__, exc_info=err)
        return error_response(ResolverError())
