"""Revocation before expiry: what an operator may revoke, parsed the same way for the CLI and the API.

A revocation is permanent and shared through the store: a revoked link, task or subject is refused on
every resolve and on every /m request of every instance (grants already handed out included), and
"all before" refuses every grant issued before a cut-off time (e.g. after a key or account compromise).
`Gate.check_revocation` (access/grants.py) reads them on each request; there is no local cache, so a revocation holds
everywhere as soon as the store has it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from ..audit.log import AuditLog
from ..errors import BadRequest, NotFound
from ..store import ALL_BEFORE, Store, StoreError
from ..timefmt import utc_z
from .links import check_task_sid, link_token_in
from .signing import CLOCK_SKEW, Signer

# request field (API body key, CLI option without dashes) -> store kind
FIELDS = {"link": "link", "task_sid": "task", "subject": "subject", "all_before": ALL_BEFORE}
MAX_SUBJECT = 256


@dataclass(frozen=True)
class Revocation:
    kind: str  # link, task, subject or ALL_BEFORE
    value: str  # link id, task SID, Flex identity, or the cut-off time (epoch seconds)
    at: float
    details: Mapping[str, str | None]  # what the audit record says about the target

    def describe(self) -> dict[str, str]:
        """The API's answer: kind, value and time (a cut-off as ISO 8601 too)."""
        value = iso(float(self.value)) if self.kind == ALL_BEFORE else self.value
        return {"kind": self.kind, "value": value, "at": iso(self.at)}


def iso(ts: float) -> str:
    return utc_z(ts)


def link_id(url: object, signer: Signer) -> tuple[str, dict[str, str | None]]:
    """The id of a /d/<link> or /p/<link> URL this resolver signed (any host: the signature decides)."""
    token = link_token_in(url, public_url=None)
    try:
        if token is None:
            raise NotFound()
        link = signer.load_link(token)
    except NotFound as e:
        raise BadRequest("link must be a /d/ or /p/ URL issued by this resolver.", code="bad_link") from e
    details = {"link_id": link.id, "source": link.source, "key": link.key, "task_sid": link.task or None}
    return link.id, details


def cutoff(text: object, now: float) -> float:
    """An ISO 8601 time with a zone (or `now`), not in the future: a future cut-off would refuse every new
    grant until then, which is an outage, not a revocation."""
    if text == "now":
        return now
    if not isinstance(text, str) or len(text) > 64:
        raise BadRequest("all_before must be an ISO 8601 time with a zone, e.g. 2026-01-31T12:00:00Z.",
                         code="bad_time")
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as e:
        raise BadRequest("all_before must be an ISO 8601 time with a zone, e.g. 2026-01-31T12:00:00Z.",
                         code="bad_time") from e
    if when.tzinfo is None:
        raise BadRequest("all_before needs a time zone (Z or +hh:mm).", code="bad_time")
    ts = when.timestamp()
    if ts > now + CLOCK_SKEW:
        raise BadRequest("all_before may not be in the future.", code="bad_time")
    return ts


def subject(value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_SUBJECT or not value.isprintable():
        raise BadRequest(f"subject must be a Flex identity of 1 to {MAX_SUBJECT} printable characters.",
                         code="bad_subject")
    return value


def parse(request: Mapping[str, object], signer: Signer, *, now: float | None = None) -> Revocation:
    """Exactly one of link, task_sid, subject, all_before -> a Revocation (400 for anything else)."""
    now = time.time() if now is None else now
    given = [name for name in FIELDS if request.get(name) is not None]
    if len(given) != 1 or set(request) - set(FIELDS):
        raise BadRequest("Give exactly one of link, task_sid, subject or all_before.", code="bad_revocation")
    name = given[0]
    raw = request[name]
    if name == "link":
        value, details = link_id(raw, signer)
    elif name == "task_sid":
        value, details = check_task_sid(raw), {"task_sid": str(raw)}
    elif name == "subject":
        value = subject(raw)
        details = {"identity": value}
    else:
        value = repr(cutoff(raw, now))
        details = {"before": iso(float(value))}
    return Revocation(kind=FIELDS[name], value=value, at=now, details=details)


def apply(rev: Revocation, store: Store, audit: AuditLog, *, via: str, **who: object) -> None:
    """Write the revocation to the shared store, then the audit record (raises StoreError if down)."""
    try:
        store.revoke(rev.kind, rev.value, rev.at)
    except StoreError:
        audit.record("revocation", outcome="failed", reason="store_unavailable", kind=rev.kind, via=via,
                     **rev.details, **who)
        raise
    audit.record("revocation", outcome="revoked", kind=rev.kind, via=via, **rev.details, **who)
