"""Rate and use limits, counted in the shared store so every worker and instance sees one count.

Our own fixed-window limiter over `store.incr` (Flask-Limiter's storages do not include SQLite). Windows
are aligned to the clock, so Retry-After needs no extra round trip; the price is that a client may squeeze
up to twice the limit into the two seconds around a window boundary. Store failures propagate as
`StoreError` (503): limits fail closed like revocations.

Leases. A process may reserve a block of a window's count in one store write and spend it locally
(`Leases`), so a budget with a high limit costs one write per block rather than one per request. It stays
strict: every unit is counted in the store before it is spent, so no more than the limit pass across all
workers and instances. The price is the other way: units a process reserved but did not spend before the
window ended were refused to the others. A block is at most 1/LEASE_SHARE of the count (so at most that
share per process goes unspent), and 1 below LEASE_SHARE: the defaults (30/minute per identity) and every
small limit are counted one by one, exactly as without leases.

The budgets (policy in LIMITS below):
* per Flex identity on resolve and /p, counted after Twilio validated the token;
* per client address on resolve and /p for *failed* authentications, reserved atomically before Twilio is
  asked about a token nobody has validated yet, so a stream of invalid tokens cannot hammer Twilio's IAM,
  while a contact center behind one NAT address is not throttled by its colleagues' successful resolves;
* per client address on /m for grants whose signature holds (a player makes many Range requests), and a
  separate one of the same size for junk grants.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

from ..errors import RateLimited, Unauthenticated, UsedUp
from ..sources import Source
from ..store import Store
from .signing import CLOCK_SKEW, Grant

clock: Callable[[], float] = time.time  # tests freeze it inside one window
PERIODS = {"second": 1, "minute": 60, "hour": 3600}
IPV6_PREFIX = 64  # one IPv6 subscriber usually holds a whole /64: count it as one address
LEASE_SHARE = 256  # a lease is at most this fraction of a window's count (limits below it are never leased)
LEASE_MAX = 64  # and never more than this many units
LEASES_HELD = 4096  # windows a process keeps leases for before it drops them all (unspent units are lost)


@dataclass(frozen=True)
class Rate:
    count: int
    period: int

    @staticmethod
    @lru_cache(maxsize=16)
    def parse(text: str) -> Rate:
        """`N/second`, `N/minute` or `N/hour` (config.py has already checked the shape)."""
        count, _, unit = text.partition("/")
        return Rate(int(count), PERIODS[unit])


def _window(budget: str, who: str, rate: Rate, now: float) -> tuple[str, float]:
    """The counter key of the current window and the seconds left in it. `who` is hashed: no identity or
    address appears in a store key."""
    start = math.floor(now / rate.period) * rate.period
    digest = hashlib.sha256(who.encode()).hexdigest()[:32]
    return f"rl:{budget}:{digest}:{start}", start + rate.period - now


class Leases:
    """The units this process reserved in the store and has not spent yet, per window key.

    A forked child starts with none (its parent's units are the parent's to spend); a lock keeps a unit from
    being spent twice by two threads."""

    def __init__(self) -> None:
        self._left: dict[str, int] = {}
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def spend(self, key: str) -> bool:
        with self._lock:
            if self._pid != os.getpid():
                self._left, self._pid = {}, os.getpid()
            left = self._left.get(key, 0)
            if left <= 0:
                return False
            self._left[key] = left - 1
            return True

    def keep(self, key: str, units: int) -> None:
        with self._lock:
            if len(self._left) >= LEASES_HELD:
                self._left.clear()
            self._left[key] = self._left.get(key, 0) + units


def lease_size(rate: Rate) -> int:
    return max(1, min(LEASE_MAX, rate.count // LEASE_SHARE))


def hit(store: Store, budget: str, who: str, rate: Rate, *, now: float, leases: Leases | None = None) -> None:
    """Count one request; raise RateLimited (429) once the window holds more than `rate.count`.

    With `leases`, a unit this process reserved earlier in the window is spent without asking the store;
    otherwise a block is reserved (`lease_size`), of which only the units still under the limit count."""
    key, left = _window(budget, who, rate, now)
    if leases is not None and leases.spend(key):
        return
    block = lease_size(rate) if leases is not None else 1
    granted = min(block, rate.count - (store.incr(key, ttl=left + 1, by=block) - block))
    if granted <= 0:
        raise RateLimited(math.ceil(left))
    if granted > 1:
        assert leases is not None  # noqa: S101 - a block above 1 is only reserved for leases
        leases.keep(key, granted - 1)


def client_key(addr: str | None) -> str:
    """The address a limit is counted for: request.remote_addr as is (ProxyFix rewrites it only when
    RESOLVER_TRUSTED_PROXIES is set), an IPv6 address reduced to its /64."""
    try:
        ip = ipaddress.ip_address(addr or "")
    except ValueError:
        return addr or "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/{IPV6_PREFIX}", strict=False))
    return str(ip)


# ---- the policy: each budget, with the store and the client address handed in ---------------------------

def limit_identity(store: Store, rate: str, identity: str, leases: Leases | None = None) -> None:
    """RESOLVER_RESOLVE_LIMIT per Flex identity, one budget for resolve and /p together."""
    hit(store, "identity", identity, Rate.parse(rate), now=clock(), leases=leases)


def limit_media(store: Store, rate: str, client: str | None, leases: Leases | None = None) -> None:
    """RESOLVER_MEDIA_LIMIT per client address on /m, for grants whose signature holds."""
    hit(store, "media", client_key(client), Rate.parse(rate), now=clock(), leases=leases)


def limit_bad_grant(store: Store, rate: str, client: str | None, leases: Leases | None = None) -> None:
    """Junk grants (bad signature, expired, malformed) have a budget of their own, the same size as /m's, so a
    flood of them from one address cannot lock a valid grant out of streaming from that address."""
    hit(store, "badgrant", client_key(client), Rate.parse(rate), now=clock(), leases=leases)


@contextmanager
def iam_attempt(store: Store, rate: str, client: str | None) -> Iterator[None]:
    """Wrap one call to Twilio's IAM for a token nobody has validated yet: reserve one of the address's
    RESOLVER_RESOLVE_LIMIT failed-authentication slots first (an atomic increment, so concurrent bad tokens
    cannot overshoot: at most `limit` IAM calls per address per window), keep it when Twilio says the token
    is invalid, give it back otherwise. A full budget refuses (429) before Twilio is asked. Tokens that are
    already validated (the shared cache) never come here, so a flood cannot lock out a working user."""
    parsed = Rate.parse(rate)
    key, left = _window("authfail", client_key(client), parsed, clock())
    if store.incr(key, ttl=left + 1) > parsed.count:
        raise RateLimited(math.ceil(left))
    try:
        yield
    except Unauthenticated:
        raise
    except BaseException:
        store.incr(key, ttl=left + 1, by=-1)
        raise
    store.incr(key, ttl=left + 1, by=-1)


def count_use(store: Store, grant: Grant, source: Source) -> None:
    """A redirect source's `max_uses`: each grant (its nonce, within its link) opens at most that often."""
    if source.max_uses is None:
        return
    ttl = grant.expires_at - clock() + CLOCK_SKEW
    key = "use:" + hashlib.sha256(repr(grant).encode()).hexdigest()[:32]  # the whole grant, nonce included
    if store.incr(key, ttl=max(1.0, ttl)) > source.max_uses:
        raise UsedUp()
