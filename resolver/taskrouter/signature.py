"""Twilio's webhook signatures for form-encoded webhooks, checked without the Twilio SDK.

Twilio signs the full URL it called followed by every POST parameter, sorted by name (and, for a repeated
name, by value), each written as name + value with no separators, and sends the base64 HMAC of that string
in `X-Twilio-Signature`. Two ways to key it:
* the account's auth token, HMAC-SHA1 (the classic signature, no other header);
* a shared key ("Sign webhooks with shared keys"): the request then carries
  `X-Twilio-Webhooks-Signature-Settings: key=<key id>,algorithm=<HMAC_SHA256 or HMAC_SHA1>`, and the HMAC is
  keyed with that key's secret. A header naming an unknown key or algorithm, or one we cannot parse, fails:
  it never falls back to the auth token.
We rebuild the URL from RESOLVER_PUBLIC_URL, never from the Host header a caller controls. Like Twilio's own
validators we accept the URL with or without its port (a proxy may add or drop one) and read a parameter
repeated with the same value once; every comparison is constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Iterable, Mapping
from urllib.parse import urlsplit, urlunsplit

DEFAULT_PORTS = {"https": 443, "http": 80}
SETTINGS_HEADER = "X-Twilio-Webhooks-Signature-Settings"
ALGORITHMS: dict[str, Callable] = {"HMAC_SHA1": hashlib.sha1, "HMAC_SHA256": hashlib.sha256}


def compute_signature(secret: str, url: str, params: Iterable[tuple[str, str]], algorithm: str = "HMAC_SHA1") -> str:
    """The signature Twilio sends for a POST of `params` (name, value pairs) to `url`."""
    payload = url + "".join(name + value for name, value in sorted(set(params)))
    digest = hmac.new(secret.encode(), payload.encode(), ALGORITHMS[algorithm]).digest()
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


def is_valid(secret: str | None, url: str, params: Iterable[tuple[str, str]], signature: str | None,
             algorithm: str = "HMAC_SHA1") -> bool:
    """True when `signature` is Twilio's signature of this request; False for a missing or wrong one."""
    if not secret or not signature or algorithm not in ALGORITHMS:
        return False
    pairs = list(params)
    given = signature.encode()
    results = [hmac.compare_digest(compute_signature(secret, u, pairs, algorithm).encode(), given)
               for u in _port_variants(url)]
    return any(results)


def parse_settings(header: str) -> tuple[str, str] | None:
    """(key id, algorithm) from `key=<id>,algorithm=<alg>`; None when either is missing or repeated."""
    found: dict[str, str] = {}
    for part in header.split(","):
        name, sep, value = part.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not value or name in found:
            return None
        found[name] = value
    if set(found) != {"key", "algorithm"}:
        return None
    return found["key"], found["algorithm"].upper()


def check_request(*, auth_token: str | None, shared_keys: Mapping[str, str], url: str,
                  params: Iterable[tuple[str, str]], signature: str | None, settings_header: str | None) -> bool:
    """Whether a webhook request is signed by Twilio, with the shared key its settings header names or,
    without that header, with the account's auth token (HMAC-SHA1)."""
    if settings_header is None:
        return is_valid(auth_token, url, params, signature)
    parsed = parse_settings(settings_header)
    if parsed is None:
        return False
    key_id, algorithm = parsed
    return is_valid(shared_keys.get(key_id), url, params, signature, algorithm)
