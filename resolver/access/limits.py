"""Rate and use limits, counted in the shared store so every worker and instance sees one count.

Our own fixed-window limiter over `store.incr` (Flask-Limiter's storages do not include SQLite). Windows
are aligned to the clock, so Retry-After needs no extra round trip; the price is that a client may squeeze
up to twice the limit into the two seconds around a window boundary. Store failures propagate as
`StoreError` (503): limits fail closed like revocations.

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

def limit_identity(store: Store, rate: str, identity: str) -> None:
    """RESOLVER_RESOLVE_LIMIT per Flex identity, one budget for resolve and /p together."""
    hit(store, "identity", identity, Rate.parse(rate), now=clock())


def limit_media(store: Store, rate: str, client: str | None) -> None:
    """RESOLVER_MEDIA_LIMIT per client address on /m, for grants whose signature holds."""
    hit(store, "media", client_key(client), Rate.parse(rate), now=clock())


def limit_bad_grant(store: Store, rate: str, client: str | None) -> None:
    """Junk grants (bad signature, expired, malformed) have a budget of their own, the same size as /m's, so a
    flood of them from one address cannot lock a valid grant out of streaming from that address."""
    hit(store, "badgrant", client_key(client), Rate.parse(rate), now=clock())


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
