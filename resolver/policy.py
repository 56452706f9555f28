"""Security policy as data: what crosses the proxy in each direction and what every response carries.

A reviewer should be able to read this file alone and know what the resolver lets through.
"""

from __future__ import annotations

# Request headers a client may pass to an upstream (everything else, cookies and auth included, stays here).
# Range is forwarded only as one range rebuilt from its parsed numbers (http_range.py), If-Range only with it;
# each value must match its pattern or it is dropped.
REQUEST_HEADERS_TO_UPSTREAM = {
    "If-None-Match": r'(W/)?"[\x21\x23-\x7e]{0,200}"(\s*,\s*(W/)?"[\x21\x23-\x7e]{0,200}"){0,15}|\*',
    "If-Modified-Since": r"[A-Za-z0-9 ,:-]{1,64}",
    "If-Range": r'(W/)?"[\x21\x23-\x7e]{0,200}"|[A-Za-z0-9 ,:-]{1,64}',
}
# A Range header longer than this is not a single range: it is ignored and the whole entity served (200).
MAX_RANGE_HEADER = 100

# Response headers an upstream may pass to the client, each only if its value matches the pattern.
# Content-Type is decided by the content-type allowlist, Content-Disposition and caching by us.
RESPONSE_HEADERS_FROM_UPSTREAM = {
    "Content-Length": r"\d{1,18}",
    "Content-Range": r"bytes (\d{1,18}-\d{1,18}|\*)/(\d{1,18}|\*)",
    "Accept-Ranges": r"bytes|none",
    "ETag": r'(W/)?"[\x21\x23-\x7e]{0,200}"',
    "Last-Modified": r"[A-Za-z0-9 ,:-]{1,64}",
    "Content-Encoding": r"gzip|br|deflate|zstd",
}
# Upstream statuses passed on as they are; everything else becomes one of our errors.
PASSED_STATUSES = (200, 206, 304)
REDIRECT_STATUSES = (301, 302, 303, 307, 308)

# Redirects from an upstream are followed by our code, at most this many hops, https only, only to the
# source's redirect_hosts (plus TWILIO_MEDIA_HOSTS for twilio-recording), to public addresses only, and never
# with our credentials unless the hop stays on the base_url's own origin.
MAX_REDIRECTS = 3
# Where Twilio sends recording media: the API host itself and its media CDN (signed, short-lived URLs that
# need no credentials). A deployment that sees another host adds it with `redirect_hosts` in the TOML.
TWILIO_MEDIA_HOSTS = ("api.twilio.com", "media.twiliocdn.com")

# Streaming: read this much per upstream read (large, so the body loop costs almost nothing per byte).
STREAM_CHUNK = 256 * 1024
# An encrypted recording's reads once its client is fast (relay.GROW_AFTER at relay.GROW_RATE): fewer Python
# layers per byte decrypted. 512 MiB through a grant: 0.64-0.68 s/GiB of CPU and 1.32x the plain recording's
# time with 256 KiB reads, 0.40-0.44 s/GiB and 1.12x-1.16x with 1 MiB (bench measure 6, three runs). A slow
# client keeps STREAM_CHUNK, so 300 players at playback speed do not hold a megabyte or three each.
STREAM_FAST_CHUNK = 1024 * 1024
# Idle keep-alive connections kept per upstream host and worker: a stream that read exactly its promised
# length gives its connection back, so the next grant skips the TCP (and TLS) handshake. Sized for a few
# hundred concurrent listeners; more are still served, on connections closed after use.
UPSTREAM_POOL_SIZE = 256

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

# SSRF: addresses the resolver never connects to after a redirect (checked on the resolved address, see
# netguard.py). Everything that is not plainly a public unicast address is here; Python's `is_global`
# misses multicast, NAT64 and 6to4, so the list is explicit.
BLOCKED_NETWORKS = (
    # IPv4
    "0.0.0.0/8",  # "this network", includes the unspecified 0.0.0.0
    "10.0.0.0/8",  # private
    "100.64.0.0/10",  # carrier-grade NAT (shared address space)
    "127.0.0.0/8",  # loopback
    "169.254.0.0/16",  # link-local, cloud metadata (169.254.169.254)
    "172.16.0.0/12",  # private
    "192.0.0.0/24",  # IETF protocol assignments
    "192.0.2.0/24",  # documentation TEST-NET-1
    "192.88.99.0/24",  # 6to4 relay anycast (deprecated)
    "192.168.0.0/16",  # private
    "198.18.0.0/15",  # benchmarking
    "198.51.100.0/24",  # documentation TEST-NET-2
    "203.0.113.0/24",  # documentation TEST-NET-3
    "224.0.0.0/4",  # multicast
    "240.0.0.0/4",  # reserved, includes broadcast 255.255.255.255
    # IPv6
    "::/128",  # unspecified
    "::1/128",  # loopback
    "::/96",  # IPv4-compatible (deprecated): ::a.b.c.d
    "::ffff:0:0/96",  # IPv4-mapped: ::ffff:a.b.c.d
    "::ffff:0:0:0/96",  # IPv4-translated (SIIT): ::ffff:0:a.b.c.d
    "64:ff9b::/96",  # NAT64 well-known prefix: 64:ff9b::a.b.c.d
    "64:ff9b:1::/48",  # NAT64 local-use prefix
    "100::/64",  # discard-only
    "2001::/23",  # IETF protocol assignments, includes Teredo 2001::/32, ORCHID, benchmarking
    "2001::/32",  # Teredo (listed on its own: it embeds IPv4)
    "2001:db8::/32",  # documentation
    "2002::/16",  # 6to4: 2002:aabb:ccdd::/48 embeds a.b.c.d
    "3fff::/20",  # documentation (RFC 9637)
    "5f00::/16",  # SRv6 SIDs (RFC 9602)
    "fc00::/7",  # unique local
    "fe80::/10",  # link-local
    "fec0::/10",  # site-local (deprecated)
    "ff00::/8",  # multicast
)

# Request bodies, per endpoint, in bytes: refused with 413 before anything reads them (a declared
# Content-Length over the limit), or cut at the limit while reading (chunked uploads). TaskRouter's event
# callback carries task and worker attributes (4096 characters each, form-encoded: up to 3x that).
BODY_LIMITS = {
    "api.resolve": 8 * 1024,
    "api.links": 64 * 1024,
    "revocations.revoke": 8 * 1024,
    "tasks.attach_media": 64 * 1024,
    "tasks.taskrouter_hook": 64 * 1024,
}
DEFAULT_BODY_LIMIT = 8 * 1024  # every other endpoint (GETs carry no body)

# Streams end when access ends (issue 16). A client that accepts no bytes for this many seconds (its socket
# stays unwritable) has its stream cut, audited `complete: false` with reason `client_stalled`, and the
# upstream connection closed at once. On the WSGI loop (chunked upstreams) the limit is per chunk written
# (gevent's sendall deadline), on the relay per send that makes no progress at all.
CLIENT_SEND_IDLE_TIMEOUT = 30.0
# Bytes a streamed body may have queued in the kernel for a client beyond what is in flight to it
# (TCP_NOTSENT_LOWAT, set on the client's TCP socket for every body). Without it a connection takes up to the
# send buffer's most (tcp_wmem, 4 MiB) before a write waits, and a gevent worker copies all of that for one
# stream before it serves anyone else: 300 players reading 64 KiB/s from a fast upstream waited 1.4-1.5 s
# (p99) for their first byte, 590-620 ms with this. Bytes in flight are not counted, so a fast client's
# throughput does not change (A/B on the nginx upstream: 0.94x nginx against 0.98x without, 12 fetches each).
CLIENT_UNSENT_MOST = 128 * 1024
# A running stream re-checks revocation (and renews its stream slots) at least this often, in seconds or in
# bytes relayed, whichever comes first: never per chunk, so the relay stays fast.
STREAM_RECHECK_SECONDS = 2.0
STREAM_RECHECK_BYTES = 8 * 1024 * 1024
# Concurrent streams (GET and HEAD on /m that reach the upstream), counted in the shared store across every
# worker and instance. A player opens one or two at a time per grant; these are ceilings against fan-out (a
# leaked grant URL, a runaway client), set high enough that a load test of hundreds of listeners sharing one
# grant or one identity still passes. Lower them where that cannot happen (e.g. 8 and 64).
MAX_STREAMS_PER_GRANT = 500
MAX_STREAMS_PER_IDENTITY = 1000
# A stream slot is a lease that expires unless renewed: a worker killed mid-stream frees its slots after at
# most this long (more when the upstream idle timeout is longer: a lease always outlives the longest wait
# between two renewals).
STREAM_SLOT_TTL = 60.0
