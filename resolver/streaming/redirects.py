"""Where an upstream redirect may lead: the rules for each hop, decided with the parser that fetches.

The first hop is the operator's `base_url`, trusted as configured (a loopback store in tests, a private
one in some deployments). A hop that stays on that exact origin is as trusted and may carry the source's
credentials. Any other hop must be https, to a host in the source's `redirect_hosts` (and Twilio's media
hosts for recordings), carries no credentials, and is fetched by the guarded session, which checks the
address it connects to. The URL we fetch is rebuilt from the very components we checked (ASVS 13.1.1).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from urllib.parse import urljoin

from urllib3.util import Url, parse_url

from .. import policy
from ..errors import UpstreamFailed
from ..sources import LOOPBACK_HOSTS, Source

log = logging.getLogger("resolver.redirects")  # the name in log lines, as before the move

DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_LOCATION = 4096
# Printable ASCII without space or backslash: anything else in a Location is a trick, not a URL.
_LOCATION = re.compile(r"[\x21-\x5b\x5d-\x7e]+")


@dataclass(frozen=True)
class Hop:
    url: str
    trusted: bool  # on the base_url's own origin: plain session, credentials allowed


def origin(url: str) -> tuple[str, str, int]:
    parts = parse_url(url)
    scheme = (parts.scheme or "").lower()
    return scheme, (parts.host or "").lower(), parts.port or DEFAULT_PORTS.get(scheme, 0)


def allowed_hosts(source: Source) -> tuple[str, ...]:
    extra = policy.TWILIO_MEDIA_HOSTS if source.kind == "twilio-recording" else ()
    return tuple(h.lower() for h in (*source.redirect_hosts, *extra))


def first_hop(url: str) -> Hop:
    return Hop(url=url, trusted=True)


def refuse(source: Source, why: str) -> UpstreamFailed:
    log.warning("upstream %s: redirect refused: %s", source.name, why)
    return UpstreamFailed("The media store redirected somewhere it may not.", code="upstream_redirect_refused")


def next_hop(source: Source, current: Hop, location: str | None) -> Hop:
    """The hop a redirect asks for, or UpstreamFailed when any rule says no."""
    if not location or len(location) > MAX_LOCATION or not _LOCATION.fullmatch(location):
        raise refuse(source, "missing or malformed Location")
    try:
        parts = parse_url(urljoin(current.url, location))
    except ValueError as e:
        raise refuse(source, "unparsable Location") from e
    scheme, host = (parts.scheme or "").lower(), (parts.host or "").lower()
    if scheme not in DEFAULT_PORTS or not host:
        raise refuse(source, f"scheme {scheme[:10]!r} or no host")
    if parts.auth:
        raise refuse(source, "credentials in the URL")
    port = parts.port or DEFAULT_PORTS[scheme]
    url = Url(scheme=scheme, host=host, port=parts.port, path=parts.path or "/", query=parts.query).url
    base = origin(source.base_url)
    if (scheme, host, port) == base and (scheme == "https" or base[1] in LOOPBACK_HOSTS):
        return Hop(url=url, trusted=True)
    if scheme != "https":
        raise refuse(source, "not https")
    name = host if port == 443 else f"{host}:{port}"
    if name not in allowed_hosts(source):
        raise refuse(source, f"host {name[:100]!r} is not in redirect_hosts")
    return Hop(url=url, trusted=False)
