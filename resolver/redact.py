"""Recognise and blank out bearer material in free text: Flex tokens, links, grants, token paths.

Used by the audit writer (a field that looks like a token is dropped) and by the log formatters (a log
line, traceback included, never carries one). Linear time on hostile input: text is split on characters
that cannot be part of a token, never scanned by a backtracking pattern.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import Settings

REDACTED = "[redacted]"
NOT_TOKEN_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")
# Paths whose last segment is a link or a grant (SPEC.md endpoints), wherever they appear in a line.
TOKEN_PATH = re.compile(r"(/[dpm]/)[^\s\"'?#<>]+")


def token_shaped(text: str) -> bool:
    """JWTs (Flex tokens) and itsdangerous links/grants: dot-separated base64url runs, the payload usually
    base64 JSON ("eyJ", or "." + zlib for compressed payloads), the last part a long signature."""
    return any(_run_is_token(run) for run in NOT_TOKEN_CHARS.split(text))


def _run_is_token(run: str) -> bool:
    parts = [p for p in run.split(".") if p]
    if len(parts) < 2:
        return False
    return any("eyJ" in p for p in parts[:-1]) or (len(parts[-1]) >= 20 and max(map(len, parts[:-1])) >= 16)


def redact(text: str) -> str:
    """The text with token paths and token-shaped runs replaced by [redacted]."""
    text = TOKEN_PATH.sub(lambda m: m.group(1) + REDACTED, text)
    if not token_shaped(text):
        return text
    pieces = re.split(r"([^A-Za-z0-9_.-]+)", text)  # keep the separators so the line stays readable
    return "".join(REDACTED if i % 2 == 0 and _run_is_token(p) else p for i, p in enumerate(pieces))


def known_secrets(settings: Settings) -> list[str]:
    """Every configured secret value: what no log line or audit record may contain."""
    found = [*settings.secret_keys, *settings.api_keys, settings.twilio_auth[1]]
    found += [settings.auth_token or "", settings.metrics_token or ""]
    for source in settings.sources.values():
        found += list((source.auth or ())[1:])
        if source.s3 is not None and source.s3.keys is not None:
            found += list(source.s3.keys[1:])  # the secret access key and session token (not the key id)
    return [s for s in found if s]
