"""The access decision: a Flex token and a link in, a short-lived grant out, every outcome audited.

Order matters: the user is checked with Twilio before the link is even read, so nobody without a valid
Flex session learns anything about a link.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from flask import g, request

from ..errors import NotFound, ResolverError, Revoked, Unauthenticated
from ..services import ctx
from ..sources import Source
from . import limits
from .flex_auth import FlexUser
from .signing import Grant, Link


@dataclass(frozen=True)
class Issued:
    link: Link
    source: Source
    grant: Grant
    url: str

    @property
    def expires_at(self) -> str:
        return datetime.fromtimestamp(self.grant.expires_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    @property
    def lifetime(self) -> int:
        return max(1, self.grant.expires_at - self.grant.issued_at)


def check_revocation(*, link_id: str, task: str, identity: str, issued_at: float) -> None:
    """403 when a revocation covers this link, task, user or issue time (shared by every instance).

    Read from the store on every call, never cached here, so a revocation holds everywhere at once; a
    store that does not answer raises StoreError (503 store_unavailable): no grant is issued or served."""
    kind = ctx().store.revoked({"link": link_id, "task": task, "subject": identity}, issued_at)
    if kind is not None:
        raise Revoked()


def issue_grant(token: str, link_token: str, *, via: str) -> Issued:
    c = ctx()
    user: FlexUser | None = None
    link: Link | None = None
    try:
        user = c.validator.validate(token)
        g.identity = user.identity
        limits.limit_identity(user.identity)  # counted for every attempt of a verified user
        c.validator.authorize(user)
        link = c.signer.load_link(link_token)
        source = c.settings.sources.get(link.source)
        if source is None:
            raise NotFound()
        now = time.time()
        check_revocation(link_id=link.id, task=link.task, identity=user.identity, issued_at=now)
        expires_at = int(min(now + c.settings.grant_ttl, user.expires_at))
        if expires_at - int(now) < 1:
            raise Unauthenticated("Your Flex session is about to expire; sign in again.", code="token_expiring")
        grant, grant_token = c.signer.sign_grant(
            link, identity=user.identity, worker=user.worker_sid, issued_at=int(now), expires_at=expires_at
        )
    except ResolverError as e:
        _audit_resolve(via, "denied", e.code, user, link)
        raise
    _audit_resolve(via, "allowed", "", user, link, grant=grant)
    return Issued(link=link, source=source, grant=grant, url=f"{c.settings.public_url}/m/{grant_token}")


def _audit_resolve(
    via: str, outcome: str, reason: str, user: FlexUser | None, link: Link | None, grant: Grant | None = None
) -> None:
    ctx().audit.record(
        "resolve",
        outcome=outcome,
        reason=reason,
        via=via,
        identity=user.identity if user else None,
        worker_sid=user.worker_sid if user else None,
        source=link.source if link else None,
        key=link.key if link else None,
        task_sid=link.task if link else None,
        link_id=link.id if link else None,
        grant_id=grant.nonce if grant else None,
        expires_at=grant.expires_at if grant else None,
        client=request.remote_addr,
    )
