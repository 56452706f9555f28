"""Twilio's `X-Twilio-Signature` for form-encoded webhooks, checked without the Twilio SDK.

Twilio signs the full URL it called followed by every POST parameter, sorted by name (and, for a repeated
name, by value), each written as name + value with no separators; the HMAC-SHA1 of that string keyed with
the account's auth token, base64-encoded, is the header. We rebuild the URL from RESOLVER_PUBLIC_URL, never
from the Host header a caller controls. Twilio's own validators accept the URL with or without its port (a
proxy may add or drop one), so we do too; every comparison is constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

DEFAULT_PORTS = {"https": 443, "http": 80}


def compute_signature(auth_token: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    """The signature Twilio sends for a POST of `params` (name, value pairs) to `url`."""
    payload = url + "".join(name + value for name, value in sorted(params))
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def _port_variants(url: str) -> list[str]:
    """The URL as given, plus the same URL without its port, or with the default port when it has none."""
    parts = urlsplit(url)
    default = DEFAULT_PORTS.get(parts.scheme)
    if not parts.hostname or default is None:
        return [url]
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    netloc = f"{host}:{default}" if parts.port is None else host
    return [url, urlunsplit(parts._replace(netloc=netloc))]


def is_valid(auth_token: str, url: str, params: Iterable[tuple[str, str]], signature: str | None) -> bool:
    """True when `signature` is Twilio's signature of this request; False for a missing or wrong one."""
    if not auth_token or not signature:
        return False
    pairs = list(params)
    given = signature.encode()
    results = [hmac.compare_digest(compute_signature(auth_token, u, pairs).encode(), given)
               for u in _port_variants(url)]
    return any(results)
