"""Who is asking: Flex tokens validated by Twilio, then checked against our account and roles.

Twilio is the only judge of a Flex token (`POST {TWILIO_IAM_URL}/v1/Accounts/{AC}/Tokens/validate`). Any
doubt fails closed: a slow or broken IAM is 503, never a grant. Positive answers are cached in the shared
store under a hash of the token (never the token) for a short time that ends before the token does.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime

import requests

from .config import Settings
from .errors import Forbidden, Unauthenticated, Unavailable
from .store import Store, StoreError

log = logging.getLogger(__name__)

MAX_TOKEN_LENGTH = 8192
TOKEN_CHARS = re.compile(r"[A-Za-z0-9._~+/=-]+")
WORKER_SID = re.compile(r"WK[0-9a-f]{32}")
CACHE_CONTEXT = b"flex-media-resolver/validation-cache/v1"


@dataclass(frozen=True)
class FlexUser:
    identity: str
    worker_sid: str
    roles: tuple[str, ...]
    expires_at: float
    account_sid: str = ""


def bearer_token(header: str | None) -> str:
    """The token from `Authorization: Bearer <token>`."""
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "bearer":
        raise Unauthenticated()
    return _checked(token.strip())


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
    if not isinstance(value, str):
        raise ValueError("no expiration")
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


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

    def user(self, token: str) -> FlexUser:
        """Validate the token (cached) and check account, worker and role; raise 401/403/503."""
        user = self.validate(token)
        self.authorize(user)
        return user

    def validate(self, token: str) -> FlexUser:
        cache_key = "tok:" + self._mac(token.encode())
        cached = self._cached(cache_key)
        self.on_cache(cached is not None)
        if cached is not None:
            return cached
        user = self._ask_twilio(token)
        ttl = min(self.settings.validation_cache_ttl, user.expires_at - self.clock())
        if ttl > 1:
            try:
                payload = json.dumps(asdict(user)).encode()
                self.store.put(cache_key, self._mac(cache_key.encode() + payload).encode() + b"." + payload, ttl)
            except StoreError:
                log.warning("validation cache unavailable; continuing without it")
        return user

    def authorize(self, user: FlexUser) -> None:
        if user.account_sid and user.account_sid != self.settings.account_sid:
            raise Forbidden("This Flex user belongs to another account.", code="wrong_account")
        if not WORKER_SID.fullmatch(user.worker_sid):
            raise Forbidden("Only Flex users with a worker may open media.", code="no_worker")
        if not self.settings.allowed_roles.intersection(user.roles):
            raise Forbidden("Your Flex role is not allowed to open media.", code="role_not_allowed")

    def _cached(self, key: str) -> FlexUser | None:
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
        if resp.status_code == 400:
            raise Unauthenticated()
        if resp.status_code != 200:
            # 401/403/404 here mean our own credentials or account SID are wrong: fail closed, tell operators.
            log.error("Twilio token validation answered HTTP %d; check TWILIO_* settings", resp.status_code)
            raise Unavailable()
        try:
            answer = resp.json()
            valid = answer.get("valid") is True
            if not valid:
                raise Unauthenticated()
            roles = answer.get("roles") or []
            user = FlexUser(
                identity=str(answer.get("identity") or ""),
                worker_sid=str(answer.get("worker_sid") or ""),
                roles=tuple(r for r in roles if isinstance(r, str)),
                expires_at=_expiry(answer.get("expiration")),
                account_sid=str(answer.get("account_sid") or ""),
            )
        except (ValueError, AttributeError, TypeError) as e:
            log.error("Twilio token validation answered something unreadable")
            raise Unavailable() from e
        if not user.identity or user.expires_at <= self.clock():
            raise Unauthenticated()
        return user
