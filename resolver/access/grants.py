"""The access decisions: a Flex token and a link in, a short-lived grant out; a grant in, what to serve out.

`Gate` gets its services handed in once (the app wiring builds one); the views only translate HTTP, and the
CLI could call the same code. Order matters on the way in: the user is checked with Twilio before the link
is even read, so nobody without a valid Flex session learns anything about a link.
"""

from __future__ import annotations

import posixpath
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from .. import policy
from ..audit.log import AuditLog
from ..config import Settings
from ..errors import BadGrant, NotFound, ResolverError, Revoked, Unauthenticated
from ..sources import Source, upstream_url
from ..store import Store
from ..timefmt import utc_z
from . import limits, streams
from .flex_auth import FlexUser, TokenValidator
from .signing import Grant, Link, Signer


@dataclass(frozen=True)
class Issued:
    link: Link
    source: Source
    grant: Grant
    url: str

    @property
    def expires_at(self) -> str:
        return utc_z(self.grant.expires_at)

    @property
    def lifetime(self) -> int:
        return max(1, self.grant.expires_at - self.grant.issued_at)


@dataclass(frozen=True)
class Opened:
    """A grant that may be served now: redirect to `url`, or stream it from the source's upstream."""

    grant: Grant
    source: Source
    url: str

    @property
    def presigned(self) -> bool:
        """An s3 source with delivery = "presign": a 302 to a presigned URL for exactly this object."""
        return self.source.s3 is not None and self.source.s3.delivery == "presign"

    @property
    def redirect(self) -> bool:
        """A redirect source: a 302 to the allowlisted external URL."""
        return self.source.mode == "redirect" and not self.presigned

    @property
    def filename(self) -> str:
        return posixpath.basename(self.grant.key) + self.source.suffix


class Gate:
    def __init__(self, settings: Settings, signer: Signer, store: Store, validator: TokenValidator,
                 audit: AuditLog, clock: Callable[[], float] = time.time) -> None:
        self.settings, self.signer, self.store = settings, signer, store
        self.validator, self.audit, self.clock = validator, audit, clock
        self.reserved = limits.Reserved()  # this process's units of high limits, reserved ahead (limits.py)

    def check_revocation(self, *, link_id: str, task: str, identity: str, issued_at: float,
                         realm: str = "") -> None:
        """403 when a revocation covers this link, task, user or issue time (shared by every instance).

        Read from the store on every call, never cached here, so a revocation holds everywhere at once; a
        store that does not answer raises StoreError (503 store_unavailable): nothing is issued or served."""
        subjects = tuple(dict.fromkeys(s for s in (identity, realm) if s))  # a subject is either name
        if self.store.revoked({"link": link_id, "task": task, "subject": subjects}, issued_at) is not None:
            raise Revoked()

    def issue_grant(self, token: str, link_token: str, *, via: str, client: str | None) -> Issued:
        user: FlexUser | None = None
        link: Link | None = None
        try:
            guard = partial(limits.iam_attempt, self.store, self.settings.resolve_limit, client)
            user = self.validator.validate(token, guard=guard)
            # every verified attempt counts, allowed or not
            limits.limit_identity(self.store, self.settings.resolve_limit, user.identity, self.reserved)
            self.validator.authorize(user)
            link = self.signer.load_link(link_token)
            source = self.settings.sources.get(link.source)
            if source is None:
                raise NotFound()
            now = self.clock()
            self.check_revocation(link_id=link.id, task=link.task, identity=user.identity, issued_at=now,
                                  realm=user.realm_user_id)
            expires_at = int(min(now + self.settings.grant_ttl, user.expires_at))
            if expires_at - int(now) < 1:
                raise Unauthenticated("Your Flex session is about to expire; sign in again.", code="token_expiring")
            grant, grant_token = self.signer.sign_grant(
                link, identity=user.identity, worker=user.worker_sid, issued_at=int(now), expires_at=expires_at,
                realm=user.realm_user_id,
            )
        except ResolverError as e:
            self.audit.record("resolve", **resolve_fields(via, "denied", e.code, user, link, client=client))
            raise
        self.audit.record("resolve", **resolve_fields(via, "allowed", "", user, link, grant, client=client))
        return Issued(link=link, source=source, grant=grant, url=f"{self.settings.public_url}/m/{grant_token}")

    def open_grant(self, grant_token: str, *, client: str | None) -> Opened:
        """The serving decision for /m: limits, signature, source, revocation, upstream URL, max_uses.

        A grant whose signature holds is counted in the address's /m budget; one that does not (guessing,
        expired, truncated) in a budget of its own, so junk cannot lock a valid grant out."""
        try:
            grant = self.signer.load_grant(grant_token, now=self.clock())
        except BadGrant:
            limits.limit_bad_grant(self.store, self.settings.media_limit, client, self.reserved)
            raise
        limits.limit_media(self.store, self.settings.media_limit, client, self.reserved)
        source = self.settings.sources.get(grant.source)
        if source is None:
            raise NotFound()
        self.check_revocation(link_id=grant.link, task=grant.task, identity=grant.identity,
                              issued_at=grant.issued_at, realm=grant.realm)
        opened = Opened(grant=grant, source=source, url=upstream_url(source, grant.key, channels=grant.channels))
        if opened.redirect:
            limits.count_use(self.store, grant, source)
        return opened


    def hold_stream(self, opened: Opened) -> streams.Held:
        """A slot of the grant's and of the identity's concurrent streams (429 too_many_streams when full);
        the lease outlives the longest wait between two renewals (an upstream or a client idle timeout)."""
        ttl = max(policy.STREAM_SLOT_TTL, self.settings.read_timeout + policy.CLIENT_SEND_IDLE_TIMEOUT
                  + policy.STREAM_RECHECK_SECONDS + 5)
        return streams.hold(self.store, opened.grant, ttl)

    def watch_stream(self, opened: Opened, held: streams.Held | None) -> streams.StreamWatch:
        """What a running stream re-checks: revocation of its grant, and its slots' leases."""
        g = opened.grant
        return streams.StreamWatch(partial(self.check_revocation, link_id=g.link, task=g.task,
                                           identity=g.identity, issued_at=g.issued_at), held)


def resolve_fields(via: str, outcome: str, reason: str, user: FlexUser | None, link: Link | None,
                   grant: Grant | None = None, *, client: str | None) -> dict[str, object]:
    """The one builder of a `resolve` record's fields."""
    return {
        "outcome": outcome, "reason": reason, "via": via,
        "identity": user.identity if user else None,
        "realm_user_id": (user.realm_user_id or None) if user else None,
        "worker_sid": user.worker_sid if user else None,
        "source": link.source if link else None,
        "key": link.key if link else None,
        "task_sid": link.task if link else None,
        "link_id": link.id if link else None,
        "grant_id": grant.nonce if grant else None,
        "expires_at": grant.expires_at if grant else None,
        "client": client,
    }


def grant_fields(outcome: str, reason: str, grant: Grant | None, *, request_id: str | None,
                 **request: object) -> dict[str, object]:
    """The one builder of a `grant` record's fields: who and what from the grant, the rest as given (method,
    status, bytes, range, complete, duration_ms, client)."""
    return {
        "outcome": outcome, "reason": reason, "request_id": request_id,
        "identity": grant.identity if grant else None,
        "realm_user_id": (grant.realm or None) if grant else None,
        "worker_sid": grant.worker if grant else None,
        "source": grant.source if grant else None,
        "key": grant.key if grant else None,
        "task_sid": grant.task if grant else None,
        "link_id": grant.link if grant else None,
        "grant_id": grant.nonce if grant else None,
        **request,
    }
