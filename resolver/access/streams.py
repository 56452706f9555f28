"""Streams while they run: a bounded number per grant and per identity, and access re-checked on the way.

Slots are leases in the shared store, not counters. `Store.take_slots` holds a stream's member in a group only
while the group has fewer live members than its bound (atomic across workers and instances, one round trip
whatever the bound), so a stream holds one slot of its grant's group and one of its identity's, renews them at
every re-check and drops them when it ends; a worker killed mid-stream leaves them to expire after the
lease's TTL. (A counter with `incr(by=-1)` does not
fit: its TTL runs from the first increment, so a long stream outlives it and its release then drives the
count below zero, which admits more streams than the bound.)

`StreamWatch` is what a running body is told of each chunk: every STREAM_RECHECK_SECONDS or
STREAM_RECHECK_BYTES (whichever first, never per chunk) it reads revocations from the store again and renews
the slots; a revocation answers `revoked`, a store that does not answer `store_unavailable` (fail closed),
and the body then cuts the stream.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Callable

from .. import policy
from ..errors import Revoked, TooManyStreams
from ..store import Store, StoreError
from .signing import Grant

log = logging.getLogger("resolver.streams")


def _digest(who: str) -> str:
    return hashlib.sha256(who.encode()).hexdigest()[:32]  # no identity or grant in a store key


class Held:
    """The stream slots one stream holds (one per budget): (group, bound) pairs and the stream's member id."""

    def __init__(self, store: Store, member: str, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.store, self.member, self.ttl, self.clock = store, member, ttl, clock
        self.groups: list[tuple[str, int]] = []
        self.renewed = clock()

    def renew(self) -> None:
        """Extend the leases once a third of their life has passed (not at every re-check: every write to the
        store is shared by all streams starting at that moment)."""
        if self.clock() - self.renewed < self.ttl / 3:
            return
        self.renewed = self.clock()
        self.store.take_slots(self.groups, self.member, self.ttl)  # held already: always room

    def release(self) -> None:
        """Give the slots back (idempotent); a store that does not answer leaves them to their TTL."""
        groups, self.groups = self.groups, []
        if not groups:
            return
        try:
            self.store.drop_slots([group for group, _ in groups], self.member)
        except StoreError:
            log.warning("stream slots could not be released; they expire in %.0f s", self.ttl)


def hold(store: Store, grant: Grant, ttl: float) -> Held:
    """One slot of the grant's and one of the identity's, or TooManyStreams (429) with nothing held."""
    held = Held(store, secrets.token_hex(8), ttl)
    budgets = {"grant": f"{grant.link}:{grant.nonce}", "identity": grant.identity}
    bounds = {"grant": policy.MAX_STREAMS_PER_GRANT, "identity": policy.MAX_STREAMS_PER_IDENTITY}
    groups = [(f"streams:{budget}:{_digest(who)}", bounds[budget]) for budget, who in budgets.items()]
    full = store.take_slots(groups, held.member, ttl)
    if full is not None:
        raise TooManyStreams(full.split(":")[1])
    held.groups = groups
    return held


class StreamWatch:
    """Re-checks a running stream's access on a time and byte cadence (see the module's docstring)."""

    def __init__(self, check: Callable[[], None], held: Held | None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.check, self.held, self.clock = check, held, clock
        self.bytes = 0
        self.due = clock() + policy.STREAM_RECHECK_SECONDS
        self.checks = 0

    def ended(self) -> None:
        """The body is over: its slots go back now (not only when the server closes the response)."""
        if self.held is not None:
            self.held.release()

    def tick(self, sent: int) -> str | None:
        self.bytes += sent
        now = self.clock()
        if self.bytes < policy.STREAM_RECHECK_BYTES and now < self.due:
            return None
        self.bytes, self.due = 0, now + policy.STREAM_RECHECK_SECONDS
        self.checks += 1
        try:
            self.check()
            if self.held is not None:
                self.held.renew()
        except Revoked:
            return "revoked"
        except StoreError:
            return "store_unavailable"
        return None
