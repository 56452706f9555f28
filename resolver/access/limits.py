"""Rate and use limits, counted in the shared store so every worker and instance sees one count.

Our own fixed-window limiter over `store.incr` (Flask-Limiter's storages do not include SQLite). Windows
are aligned to the clock, so Retry-After needs no extra round trip; the price is that a client may squeeze
up to twice the limit into the two seconds around a window boundary. Store failures propagate as
`StoreError` (503): limits fail closed like revocations.

Three budgets (policy in LIMITS below):
* per Flex identity on resolve and /p, counted after Twilio validated the token;
* per client address on resolve and /p for *failed* authentications, checked before Twilio is asked, so a
  stream of invalid tokens cannot hammer Twilio's IAM while a contact center behind one NAT address is not
  throttled by its colleagues' successful resolves;
* per client address on /m (a player makes many Range requests).
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache

from flask import request

from ..errors import RateLimited, Unauthenticated, UsedUp
from ..services import ctx
from ..sources import Source
from ..store import Store
from .signing import CLOCK_SKEW, Grant

clock: Callable[[], float] = time.time  # tests freeze it inside one window
PERIODS = {"second": 1, "minute": 60, "hour": 3600}
IPV6_PREFIX = 64  # one IPv6 subscriber usually holds a whole /64: count it as one address


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


def hit(store: Store, budget: str, who: str, rate: Rate, *, now: float) -> None:
    """Count one request; raise RateLimited (429) once the window holds more than `rate.count`."""
    key, left = _window(budget, who, rate, now)
    if store.incr(key, ttl=left + 1) > rate.count:
        raise RateLimited(math.ceil(left))


def peek(store: Store, budget: str, who: str, rate: Rate, *, now: float) -> None:
    """Raise RateLimited when the window is already full, without counting this request."""
    key, left = _window(budget, who, rate, now)
    raw = store.get(key)
    if raw is not None and int(raw) >= rate.count:
        raise RateLimited(math.ceil(left))


def count(store: Store, budget: str, who: str, rate: Rate, *, now: float) -> None:
    key, left = _window(budget, who, rate, now)
    store.incr(key, ttl=left + 1)


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


# ---- the policy, applied to the current request -------------------------------------------------------

def limit_identity(identity: str) -> None:
    """RESOLVER_RESOLVE_LIMIT per Flex identity, one budget for resolve and /p together."""
    c = ctx()
    hit(c.store, "identity", identity, Rate.parse(c.settings.resolve_limit), now=clock())


def limit_media() -> None:
    """RESOLVER_MEDIA_LIMIT per client address on /m."""
    c = ctx()
    hit(c.store, "media", client_key(request.remote_addr), Rate.parse(c.settings.media_limit), now=clock())


@contextmanager
def auth_attempt(via: str) -> Iterator[None]:
    """Refuse (429) an address that failed authentication RESOLVER_RESOLVE_LIMIT times in the window,
    before its token reaches Twilio; count a 401 raised inside the block against that address."""
    c = ctx()
    rate, who = Rate.parse(c.settings.resolve_limit), client_key(request.remote_addr)
    try:
        peek(c.store, "authfail", who, rate, now=clock())
    except RateLimited:
        c.audit.record("resolve", outcome="denied", reason="rate_limited", via=via,
                       client=request.remote_addr)
        raise
    try:
        yield
    except Unauthenticated:
        count(c.store, "authfail", who, rate, now=clock())
        raise


def count_use(grant: Grant, source: Source) -> None:
    """A redirect source's `max_uses`: each grant (its nonce, within its link) opens at most that often."""
    if source.max_uses is None:
        return
    ttl = grant.expires_at - clock() + CLOCK_SKEW
    key = "use:" + hashlib.sha256(repr(grant).encode()).hexdigest()[:32]  # the whole grant, nonce included
    if ctx().store.incr(key, ttl=max(1.0, ttl)) > source.max_uses:
        raise UsedUp()
