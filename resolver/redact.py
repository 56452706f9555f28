"""Recognise and blank out bearer material in free text: Flex tokens, our links and grants, token paths.

Used by the audit writer (a field that looks like a token is dropped) and by the log formatters (a log
line, traceback included, never carries one). Linear time on hostile input: text is split on characters
that cannot be part of a token, never scanned by a backtracking pattern.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import Settings

REDACTED = "[redacted]"
MIN_SECRET_LENGTH = 8  # a shorter configured value would match ordinary text
NOT_TOKEN_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")
# Paths whose last segment is a link or a grant (docs/http-api.md), wherever they appear in a line.
MIN_SIGNATURE = 20  # base64url characters of a truncated HMAC at least
# What follows an authorization scheme is a credential, whatever it looks like.
AUTH_VALUE = re.compile(r"\b(Bearer|Basic) +([A-Za-z0-9._~+/=-]{8,})")
TOKEN_PATH = re.compile(r"(/[dpm]/)[^\s\"'?#<>]+")


def token_shaped(text: str) -> bool:
    """Whether the text holds a token we know: a JWT or JWE (Flex tokens: 3 or 5 dot-separated base64url
    parts, the first a JSON header) or one of our itsdangerous links and grants (base64 JSON payload, or
    `.` + zlib for compressed ones, then a signature). Known by what the parts decode to, not by a shape that
    real identities (`heyJude.lennon@example.com`) and keys (`calls/CA….RE…`) also have."""
    if "." not in text:  # every token we know has a dot; only an authorization value may not
        return ("Bearer" in text or "Basic" in text) and AUTH_VALUE.search(text) is not None
    return AUTH_VALUE.search(text) is not None or any(_run_is_token(run) for run in NOT_TOKEN_CHARS.split(text))


def _run_is_token(run: str) -> bool:
    parts = run.split(".")
    if len(parts) == 3 and parts[0] == "" and parts[1].startswith("eJ") and len(parts[2]) >= MIN_SIGNATURE:
        return True  # a compressed link or grant: "." + zlib payload ("eJ" is zlib's header) + signature
    if not all(parts) or not parts[0].startswith("eyJ"):
        return False
    if len(parts) in (3, 5):
        return True  # a JWT or JWE: its header is base64 JSON, "eyJ"; even a mangled one is not logged
    return len(parts) == 2 and len(parts[1]) >= MIN_SIGNATURE and _json_object(parts[0])  # a link or grant


def _json_object(part: str) -> bool:
    """Whether a base64url part decodes to a JSON object (a JWT header, a link or grant payload)."""
    try:
        raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        return isinstance(json.loads(raw), dict)
    except (ValueError, binascii.Error, RecursionError):
        return False


def redact(text: str) -> str:
    """The text with token paths and token-shaped runs replaced by [redacted]."""
    text = TOKEN_PATH.sub(lambda m: m.group(1) + REDACTED, text)
    text = AUTH_VALUE.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    if not token_shaped(text):
        return text
    pieces = re.split(r"([^A-Za-z0-9_.-]+)", text)  # keep the separators so the line stays readable
    return "".join(REDACTED if i % 2 == 0 and _run_is_token(p) else p for i, p in enumerate(pieces))


def searchable_secrets(values: Iterable[str]) -> tuple[str, ...]:
    """The configured secrets worth searching text for: each once, at least MIN_SECRET_LENGTH long, the
    longest first (so a secret containing another is blanked whole)."""
    return tuple(sorted({v for v in values if v and len(v) >= MIN_SECRET_LENGTH}, key=len, reverse=True))


def known_secrets(settings: Settings) -> list[str]:
    """Every configured secret value: what no log line or audit record may contain."""
    found = [*settings.secret_keys, *settings.api_keys, settings.twilio_auth[1]]
    found += [settings.auth_token or "", settings.metrics_token or ""]
    for source in settings.sources.values():
        found += list((source.auth or ())[1:])
        if source.s3 is not None and source.s3.keys is not None:
            found += list(source.s3.keys[1:])  # the secret access key and session token (not the key id)
    return [s for s in found if s]
