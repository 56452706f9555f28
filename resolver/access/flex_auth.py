"""Who is asking: Flex tokens validated by Twilio, then checked against our account and roles.

Twilio is the only judge of a Flex token (`POST {TWILIO_IAM_URL}/v1/Accounts/{AC}/Tokens/validate`). Any
doubt fails closed: a slow or broken IAM is 503, never a grant. Positive answers are cached in the shared
store under a hash of the token (never the token) for a short time that ends before the token does; each
process keeps what it read there for MEMO_SECONDS more at most, and the store's entry lives that much less,
so a verdict is never trusted longer than `validation_cache_ttl` after Twilio gave it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import re
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from datetime import datetime

import requests

from ..config import Settings
from ..errors import Forbidden, Unauthenticated, Unavailable
from ..store import Store, StoreError
from ..twilio_ids import WORKER_SID

log = logging.getLogger("resolver.flex_auth")  # the name in log lines, as before the move

MAX_TOKEN_LENGTH = 8192
TOKEN_CHARS = re.compile(r"[A-Za-z0-9._~+/=-]+")
CACHE_CONTEXT = b"flex-media-resolver/validation-cache/v1"
LEASE_POLL = 0.02  # seconds between looks at the cache while another request asks Twilio about the same token
DENIAL_TTL = 10.0  # seconds Twilio's "invalid" for a token is remembered (an invalid token never turns valid)
MEMO_SECONDS = 2.0  # a worker's own copy of a verdict it read from the store (a burst of resolves: one read)
MEMO_ENTRIES = 4096  # tokens a worker keeps at most (the oldest goes first)
_DENIAL = b"denied"
_DENIED = object()


@dataclass(frozen=True)
class FlexUser:
    identity: str  # IAM's `identity`: Twilio's escaped form (user_40example_2Ecom), as IAM sends it
    worker_sid: str
    roles: tuple[str, ...]
    expires_at: float
    account_sid: str = ""  # real IAM answers carry none; checked when present
    realm_user_id: str = ""  # the user as the identity provider names them (an SSO email, a login), if sent


def bearer(header: str | None) -> str | None:
    """The credential of `Authorization: Bearer <credential>` (the one parser of that header), else None."""
    scheme, _, credential = (header or "").partition(" ")
    return credential.strip() if scheme.lower() == "bearer" else None


def bearer_token(header: str | None) -> str:
    """The Flex token from `Authorization: Bearer <token>`."""
    token = bearer(header)
    if token is None:
        raise Unauthenticated()
    return _checked(token)


def basic_token(header: str | None) -> str:
    """The token from `Authorization: Basic base64("token:" + token)` (Flex Insights' url_provider call)."""
    scheme, _, encoded = (header or "").partition(" ")
    if scheme.lower() != "basic" or len(encoded) > 2 * MAX_TOKEN_LENGTH:
        raise Unauthenticated()
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError) as e:
        raise Unauthenticated() from e
    user, sep, token = decoded.partition(":")
    if user != "token" or not sep:
        raise Unauthenticated()
    return _checked(token)


def _checked(token: str) -> str:
    if not token or len(token) > MAX_TOKEN_LENGTH or not TOKEN_CHARS.fullmatch(token):
        raise Unauthenticated()
    return token


def _expiry(value: object) -> float:
    """IAM's `expiration`, which must name its zone: a naive time would be read in this machine's zone."""
    if not isinstance(value, str):
        raise ValueError("no expiration")
    when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if when.tzinfo is None:
        raise ValueError("expiration without a time zone")
    return when.timestamp()


def _strings(value: object, name: str) -> tuple[str, ...]:
    """A JSON list of strings (an object's keys, a bare string or numbers are not roles)."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{name} is not a list of strings")
    return tuple(value)


MAX_NAME = 256  # identity and realm_user_id: longer is not an identity IAM hands out
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _text(value: object, name: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{name} is not a string")
    return value


def _name(value: object, name: str) -> str:
    """identity / realm_user_id: a string without control characters (they would forge log lines)."""
    text = _text(value, name)
    if len(text) > MAX_NAME or _CONTROL.search(text) or text != text.strip():
        raise ValueError(f"{name} is not a plain name")
    return text


def _code(value: object) -> None:
    """A valid answer's `code` is 0 (or absent): `valid: true` with an error code is a contradiction."""
    if value is not None and not (type(value) is int and value == 0):
        raise ValueError("a valid answer with an error code")


class _Memo:
    """Verdicts this process read from the store, each for MEMO_SECONDS at most and never past its token.
    Keyed like the store (a keyed hash, never the token); only valid users, never a denial."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._entries: dict[str, tuple[FlexUser, float]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> FlexUser | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self._clock() < entry[1]:
            return entry[0]
        with self._lock:
            self._entries.pop(key, None)
        return None

    def put(self, key: str, user: FlexUser) -> None:
        until = min(self._clock() + MEMO_SECONDS, user.expires_at)
        with self._lock:
            if key not in self._entries and len(self._entries) >= MEMO_ENTRIES:
                self._entries.pop(next(iter(self._entries)))
            self._entries[key] = (user, until)


class TokenValidator:
    def __init__(
        self,
        settings: Settings,
        http: requests.Session,
        store: Store,
        clock: Callable[[], float] = time.time,
        on_cache: Callable[[bool], None] = lambda hit: None,
    ) -> None:
        self.settings = settings
        self.http = http
        self.store = store
        self.clock = clock
        self.on_cache = on_cache
        self.url = f"{settings.iam_url}/v1/Accounts/{settings.account_sid}/Tokens/validate"
        # Cache entries are keyed and sealed with a key derived from the newest signing key: whoever can write
        # to the store cannot plant a "valid" answer, and the store never holds a plain token hash.
        self._cache_secret = hmac.new(settings.secret_keys[-1].encode(), CACHE_CONTEXT, hashlib.sha256).digest()
        self._memo = _Memo(clock)

    def validate(self, token: str, guard: Callable[[], AbstractContextManager[None]] = nullcontext) -> FlexUser:
        """The user Twilio says this token belongs to: from the shared cache, or asked of Twilio once.

        Concurrent validations of one token are coalesced across greenlets, workers and instances by a lease
        in the store: the caller that takes it asks Twilio; the others wait for its answer (at most the IAM
        timeout), then fail closed with 503. Only Twilio's own verdicts are shared: a valid user (sealed, until
        shortly before the token expires) and an invalid token (sealed, briefly). A slow or failed call leaves
        nothing behind but a free lease, so it is never shared as a success. `guard` wraps the call to Twilio
        only (the failed-authentication budget): cached verdicts and waiters never reach it."""
        name = self._mac(token.encode())
        cache_key, lease_key = "tok:" + name, "tokl:" + name
        remembered = self._memo.get(cache_key)
        if remembered is not None:
            self.on_cache(True)
            return remembered
        deadline = time.monotonic() + self.settings.connect_timeout + self.settings.validation_timeout
        while True:
            leased = False
            cached = self._cached(cache_key)
            if cached is None and self._lease(lease_key):
                leased = True
                cached = self._cached(cache_key)  # the previous holder may have answered just before we took it
            if cached is not None:
                if leased:
                    self._release(lease_key)
                if cached is _DENIED:
                    raise Unauthenticated()
                self._memo.put(cache_key, cached)  # type: ignore[arg-type]
                self.on_cache(True)
                return cached  # type: ignore[return-value]
            if leased:
                self.on_cache(False)
                return self._validate_leased(token, cache_key, lease_key, guard)
            if time.monotonic() >= deadline:
                log.warning("token validation: another request's answer from Twilio did not arrive in time")
                raise Unavailable()
            time.sleep(LEASE_POLL)

    def _validate_leased(self, token: str, cache_key: str, lease_key: str,
                         guard: Callable[[], AbstractContextManager[None]]) -> FlexUser:
        """Ask Twilio while holding the lease; remember its verdict for the waiters, then free the lease."""
        try:
            with guard():
                user = self._ask_twilio(token)
        except Unauthenticated:
            self._remember(cache_key, _DENIAL, DENIAL_TTL)
            raise
        else:
            # The store keeps it MEMO_SECONDS less: a worker that reads it last keeps it to the full ttl.
            ttl = min(self.settings.validation_cache_ttl - MEMO_SECONDS, user.expires_at - self.clock())
            if ttl > 1:
                self._remember(cache_key, json.dumps(asdict(user)).encode(), ttl)
            return user
        finally:
            self._release(lease_key)  # after the verdict is stored, so a waiter finds it

    def authorize(self, user: FlexUser) -> None:
        if user.account_sid and user.account_sid != self.settings.account_sid:
            raise Forbidden("This Flex user belongs to another account.", code="wrong_account")
        if not WORKER_SID.fullmatch(user.worker_sid):
            raise Forbidden("Only Flex users with a worker may open media.", code="no_worker")
        if not self.settings.allowed_roles.intersection(user.roles):
            raise Forbidden("Your Flex role is not allowed to open media.", code="role_not_allowed")

    def _lease(self, key: str) -> bool:
        """Take the right to ask Twilio about this token; True also when the store cannot say (no coalescing
        then, as without a cache)."""
        lease_for = self.settings.connect_timeout + self.settings.validation_timeout + 1
        try:
            return self.store.get(key) is None and self.store.add(key, b"1", lease_for)
        except StoreError:
            return True

    def _release(self, key: str) -> None:
        try:
            self.store.delete(key)
        except StoreError:
            log.warning("validation lease could not be released; it expires by itself")

    def _remember(self, key: str, payload: bytes, ttl: float) -> None:
        """Seal and store a verdict of Twilio's: whoever can write to the store cannot forge one."""
        try:
            self.store.put(key, self._mac(key.encode() + payload).encode() + b"." + payload, ttl)
        except StoreError:
            log.warning("validation cache unavailable; continuing without it")

    def _cached(self, key: str) -> FlexUser | object | None:
        """A cached user, `_DENIED` for a token Twilio just called invalid, or None."""
        try:
            raw = self.store.get(key)
        except StoreError:
            return None
        if raw is None:
            return None
        mac, _, payload = raw.partition(b".")
        if not hmac.compare_digest(mac, self._mac(key.encode() + payload).encode()):
            log.warning("validation cache entry failed its seal; asking Twilio")
            return None
        if payload == _DENIAL:
            return _DENIED
        data = json.loads(payload)
        user = FlexUser(**{**data, "roles": tuple(data["roles"])})
        return user if user.expires_at > self.clock() else None

    def _mac(self, data: bytes) -> str:
        return hmac.new(self._cache_secret, data, hashlib.sha256).hexdigest()

    def _ask_twilio(self, token: str) -> FlexUser:
        try:
            resp = self.http.post(
                self.url,
                json={"token": token},
                auth=self.settings.twilio_auth,
                timeout=(self.settings.connect_timeout, self.settings.validation_timeout),
                allow_redirects=False,
            )
        except requests.RequestException as e:
            log.warning("Twilio token validation unreachable: %s", type(e).__name__)
            raise Unavailable() from e
        answer = _json_body(resp)
        # Twilio's verdict is the body: `valid: false` is 401 whatever the HTTP status (as Twilio's own
        # twilio-flex-token-validator reads it); 400 is IAM refusing the token itself.
        if resp.status_code == 400 or (isinstance(answer, dict) and answer.get("valid") is False):
            raise Unauthenticated()
        if resp.status_code != 200:
            # 401/403/404 here mean our own credentials or account SID are wrong: fail closed, tell operators.
            log.error("Twilio token validation answered HTTP %d; check TWILIO_* settings", resp.status_code)
            raise Unavailable()
        try:
            if not isinstance(answer, dict):
                raise ValueError("not an object")
            if answer.get("valid") is not True:  # only JSON true: "true", 1 or a non-empty list grant nothing
                raise Unauthenticated()
            _code(answer.get("code"))
            user = FlexUser(
                identity=_name(answer.get("identity"), "identity"),
                worker_sid=_text(answer.get("worker_sid"), "worker_sid"),
                roles=_strings(answer.get("roles"), "roles"),
                expires_at=_expiry(answer.get("expiration")),
                account_sid=_text(answer.get("account_sid"), "account_sid"),
                realm_user_id=_name(answer.get("realm_user_id"), "realm_user_id"),
            )
        except (ValueError, TypeError) as e:
            # Twilio said "valid" but not in a shape we can trust: fail closed (503), never a grant.
            log.error("Twilio token validation answered something unreadable")
            raise Unavailable() from e
        if not user.identity or user.expires_at <= self.clock():
            raise Unauthenticated()
        return user


def _json_body(resp: requests.Response) -> object:
    try:
        return resp.json()
    except ValueError:
        return None
