"""CORS for the endpoints Flex calls from its own origin: exact origins only, never `*` or `null`.

A request that carries a foreign `Origin` is refused outright (403), not just left without CORS headers:
the token it carries is worth nothing to a page that cannot read the answer, but the answer should not be
computed for it either. The resolver's own origin counts for the media endpoint, because Chromium's media
document re-requests the grant from inside itself with `crossorigin`.
"""

from __future__ import annotations

from flask import Response, request

from .. import policy
from ..errors import Forbidden

# endpoint name -> (methods a preflight may allow, whether our own origin counts)
CORS_ENDPOINTS = {
    "api.resolve": ("POST", False),
    "media.provider": ("GET", False),
    "media.grant": ("GET, HEAD", True),
    "static": ("GET", True),
}


class OriginNotAllowed(Forbidden):
    code, message = "origin_not_allowed", "This origin may not call the resolver."


def _allowed(origin: str, own_origin: str, allowed: frozenset[str], self_ok: bool) -> bool:
    if origin in policy.NEVER_ALLOWED_ORIGINS:
        return False
    return origin in allowed or (self_ok and origin == own_origin)


def before(allowed: frozenset[str], own_origin: str) -> Response | None:
    """Refuse foreign origins; answer preflights. Returns a response to short-circuit, or None."""
    rule = CORS_ENDPOINTS.get(request.endpoint or "")
    origin = request.headers.get("Origin")
    if rule is None or origin is None:
        return None
    methods, self_ok = rule
    if not _allowed(origin, own_origin, allowed, self_ok):
        raise OriginNotAllowed()
    if request.method == "OPTIONS":
        resp = Response(status=204)
        resp.headers["Access-Control-Allow-Methods"] = methods
        resp.headers["Access-Control-Allow-Headers"] = policy.CORS_ALLOW_HEADERS
        resp.headers["Access-Control-Max-Age"] = policy.CORS_MAX_AGE
        return resp
    return None


def after(resp: Response, allowed: frozenset[str], own_origin: str) -> Response:
    """Add CORS headers for an allowed origin, on success and error answers alike."""
    rule = CORS_ENDPOINTS.get(request.endpoint or "")
    if rule is None:
        return resp
    resp.vary.add("Origin")
    origin = request.headers.get("Origin")
    if origin and _allowed(origin, own_origin, allowed, rule[1]):
        resp.headers["Access-Control-Allow-Origin"] = origin
        resp.headers["Access-Control-Expose-Headers"] = policy.CORS_EXPOSE_HEADERS
    return resp
