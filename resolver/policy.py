"""Security policy as data: what crosses the proxy in each direction and what every response carries.

A reviewer should be able to read this file alone and know what the resolver lets through.
"""

from __future__ import annotations

# Request headers a client may pass to an upstream (everything else, cookies and auth included, stays here).
REQUEST_HEADERS_TO_UPSTREAM = ("Range", "If-Range", "If-None-Match", "If-Modified-Since")

# Response headers an upstream may pass to the client. Content-Type is decided by CONTENT_TYPE policy.
RESPONSE_HEADERS_FROM_UPSTREAM = ("Content-Length", "Content-Range", "Accept-Ranges", "ETag", "Last-Modified")

# Media is passed through byte for byte: never let requests/urllib3 decompress it.
UPSTREAM_REQUEST_DEFAULTS = {"Accept-Encoding": "identity", "User-Agent": "flex-media-resolver"}

# Content types a stream may be served as, when its source does not list its own.
DEFAULT_CONTENT_TYPES = (
    "audio/mpeg",
    "audio/wav",
    "audio/x-wav",
    "audio/wave",
    "audio/ogg",
    "audio/webm",
    "audio/mp4",
    "video/mp4",
    "video/webm",
    "application/json",
    "text/plain",
    "application/pdf",
)
# Anything not allowed (HTML, SVG, scripts, unknown) is served as an opaque download, never rendered.
FALLBACK_CONTENT_TYPE = "application/octet-stream"

# Headers on every response. The media CSP allows only the document to load itself: Chromium's media
# document re-requests the URL from inside itself, so `media-src 'self'` is needed; no `sandbox`, which
# would make that request cross-origin from an opaque ("null") origin we never allow.
COMMON_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Strict-Transport-Security": "max-age=31536000; includeSubDomains",
    "X-Frame-Options": "DENY",
}
DEFAULT_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
MEDIA_CSP = (
    "default-src 'none'; media-src 'self'; img-src 'self'; style-src 'unsafe-inline'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
ERROR_PAGE_CSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'"
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; media-src 'self'; "
    "connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)

# CORS: exact origins from RESOLVER_CORS_ORIGINS; these never count as an origin.
NEVER_ALLOWED_ORIGINS = ("null", "*")
CORS_ALLOW_HEADERS = "Authorization, Content-Type, Range, If-Range, If-None-Match, If-Modified-Since"
CORS_EXPOSE_HEADERS = "Content-Length, Content-Range, Accept-Ranges, ETag, Last-Modified, X-Request-Id"
CORS_MAX_AGE = "600"
