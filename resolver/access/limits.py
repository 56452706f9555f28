"""Rate and use limits, counted in the shared store so every worker and instance sees one count.

Our own fixed-window limiter over `store.incr` (Flask-Limiter's storages do not include SQLite). Windows
are aligned to the clock, so Retry-After needs no extra round trip; the price is that a client may squeeze
up to twice the limit into the two seconds around a window boundary. Store failures propagate as
`StoreError` (503): limits fail closed like revocations.

Blocks. With a high limit a process reserves a block of the window's count in one store increment and
spends it locally (`Reserved`), so such a budget costs one write per block rather than one per request. It
stays strict: every unit is counted in the store before it is spent, so no more than the limit passes across
all workers and instances. The price runs the other way: units a process reserved and did not spend before
the window ended were refused to the others. Per process and budget at most one block is being reserved at a
time (a request arriving meanwhile counts its own unit alone) and one is held, so at most `block_size - 1`
units are left unspent per process: under 1/BLOCK_SHARE of the count. Below 2 x BLOCK_SHARE per window (the
30/minute identity default among them) every request is counted alone, exactly as without blocks.

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
BLOCK_SHARE = 256  # a block is at most 1/BLOCK_SHARE of a window's count (so below 2 x 256, one unit at a time)
BLOCK_MAX = 64  # and never more than this many units
RESERVED_KEYS = 4096  # budget windows a process holds blocks for at once; past it, requests count one by one


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


@dataclass
class _Block:
    units: int = 0  # reserved in the store, not yet spent by this process
    ends: float = 0.0  # when the window (and so the block) ends
    reserving: bool = False  # a reservation of this key is in flight


class Reserved:
    """The units this process reserved in the store and has not spent yet, per budget window (`hit`).

    A forked child starts with none (its parent's units are the parent's to spend); a lock keeps a unit from
    being spent twice by two threads, and no yield happens inside it (gevent)."""

    def __init__(self) -> None:
        self._blocks: dict[str, _Block] = {}
        self._first_end = math.inf  # the earliest `ends` held: no window can be dropped before it
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def _mine(self) -> dict[str, _Block]:
        if self._pid != os.getpid():
            self._blocks, self._first_end, self._pid = {}, math.inf, os.getpid()
        return self._blocks

    def spend(self, key: str) -> bool:
        """Spend one reserved unit of `key`, if this process holds one."""
        with self._lock:
            block = self._mine().get(key)
            if block is None or block.units <= 0:
                return False
            block.units -= 1
            return True

    def begin(self, key: str, now: float, ends: float) -> bool:
        """Whether the caller may reserve a block of `key` now: not while another reservation of it is in flight
        or units of it are held (a thread's reservation may land between another's `spend` and `begin`), nor
        while RESERVED_KEYS windows that have not ended are held; the caller then counts one unit alone.
        A True must be followed by `end`."""
        with self._lock:
            blocks = self._mine()
            block = blocks.get(key)
            if block is None:
                if len(blocks) >= RESERVED_KEYS:
                    if now < self._first_end:  # nothing has ended yet: no scan (a flood of budgets lands here)
                        return False
                    self._blocks = blocks = {k: b for k, b in blocks.items() if b.ends > now or b.reserving}
                    self._first_end = min((b.ends for b in blocks.values()), default=math.inf)
                    if len(blocks) >= RESERVED_KEYS:
                        return False
                block = blocks[key] = _Block(ends=ends)
                self._first_end = min(self._first_end, ends)
            if block.reserving or block.units > 0:
                return False
            block.reserving = True
            return True

    def end(self, key: str, units: int) -> None:
        """The reservation `begin` allowed is over: keep the `units` it got beyond the one its caller spends."""
        with self._lock:
            block = self._mine().get(key)
            if block is not None:  # None only in a child forked while the reservation was in flight
                block.units += units
                block.reserving = False


def block_size(rate: Rate) -> int:
    """How many units one store increment reserves for a budget of `rate` (1: no reservation ahead)."""
    return max(1, min(BLOCK_MAX, rate.count // BLOCK_SHARE))


def hit(store: Store, budget: str, who: str, rate: Rate, *, now: float, reserved: Reserved | None = None) -> None:
    """Count one request; raise RateLimited (429) once the window holds more than `rate.count`.

    With `reserved`, a unit this process reserved earlier in the window is spent without asking the store;
    otherwise a block is reserved (`block_size`), of which only the units still under the limit count."""
    key, left = _window(budget, who, rate, now)
    block = block_size(rate) if reserved is not None else 1
    if reserved is not None and block > 1:
        if reserved.spend(key):
            return
        if not reserved.begin(key, now, now + left):
            block = 1
    granted = 0
    try:
        granted = min(block, rate.count - (store.incr(key, ttl=left + 1, by=block) - block))
    finally:
        if reserved is not None and block > 1:
            reserved.end(key, max(0, granted - 1))
    if granted <= 0:
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

def limit_identity(store: Store, rate: str, identity: str, reserved: Reserved | None = None) -> None:
    """RESOLVER_RESOLVE_LIMIT per Flex identity, one budget for resolve and /p together."""
    hit(store, "identity", identity, Rate.parse(rate), now=clock(), reserved=reserved)


def limit_media(store: Store, rate: str, client: str | None, reserved: Reserved | None = None) -> None:
    """RESOLVER_MEDIA_LIMIT per client address on /m, for grants whose signature holds."""
    hit(store, "media", client_key(client), Rate.parse(rate), now=clock(), reserved=reserved)


def limit_bad_grant(store: Store, rate: str, client: str | None, reserved: Reserved | None = None) -> None:
    """Junk grants (bad signature, expired, malformed) have a budget of their own, the same size as /m's, so a
    flood of them from one address cannot lock a valid grant out of streaming from that address."""
    hit(store, "badgrant", client_key(client), Rate.parse(rate), now=clock(), reserved=reserved)


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
