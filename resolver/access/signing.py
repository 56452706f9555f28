"""Links and grants: signed, never encrypted, each kind under its own salt.

* A **link** (`/d/<link>`, `/p/<link>`) names one media entry (source, key, task). It is deterministic, so
  the same entry always gets the same link, and it carries no authority: it only says what to fetch once a
  Flex user has been verified.
* A **grant** (`/m/<grant>`) is what a verified user gets: bound to one link, one user and a short life
  that never outlives the user's Flex token.

Both use itsdangerous with HMAC-SHA256 and a key list (oldest first; the newest signs, all verify). The
payload is readable by anyone who holds the URL, so it holds identifiers only: no upstream URL, no PHI.
"""

from __future__ import annotations

import functools
import hashlib
import re
import secrets
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadData, URLSafeSerializer
from itsdangerous import Signer as ItsSigner
from itsdangerous.encoding import base64_decode, base64_encode, want_bytes
from itsdangerous.serializer import Serializer

from ..errors import BadGrant, NotFound

LINK_SALT = "flex-media-resolver/link/v1"
GRANT_SALT = "flex-media-resolver/grant/v1"
MAX_TOKEN_LENGTH = 4096
LINKS_KEPT = 4096  # verified links a signer remembers (the most recently used)
CLOCK_SKEW = 5  # seconds another instance's clock may run ahead of ours
_ZLIB_WBITS, _ZLIB_MEMLEVEL = 10, 4  # a 1 KiB window and a hash table to suit it (see _GrantSerializer.dump_payload)
_ZLIB_HEADER = b"\x78\x9c"  # zlib.compress's own: deflate, 32 KiB window, default level ("eJ" in base64)
# `[.]payload.signature` in the URL-safe base64 alphabet; an HMAC-SHA256 signature is 43 characters.
TOKEN_SHAPE = re.compile(r"\.?[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{43}")


@dataclass(frozen=True)
class Link:
    source: str
    key: str
    type: str
    title: str = ""
    task: str = ""
    channels: int | None = None

    @property
    def id(self) -> str:
        """A stable identifier of this entry, for revocation and audit (the key need not be logged)."""
        raw = "\0".join([self.source, self.key, self.type, self.task, str(self.channels)])
        return hashlib.sha256(raw.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class Grant:
    link: str  # Link.id
    source: str
    key: str
    task: str
    identity: str
    worker: str
    issued_at: int
    expires_at: int
    channels: int | None = None
    nonce: str = ""
    realm: str = ""  # the user's realm_user_id, when IAM sent one (revocable by either name)


def _payload(entry: Link | Grant) -> dict[str, object]:
    """The fields that are set (str and int values only: `vars`, not `asdict`, which deep-copies each)."""
    return {k: v for k, v in vars(entry).items() if v not in ("", None)}


class _KeptSigner(ItsSigner):
    """itsdangerous' Signer, with each key's derived key (an HMAC of the salt) computed once, not on every
    sign and every verify; the derivation, and so every token, is itsdangerous' own."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._derived: dict[bytes, bytes] = {}

    def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
        secret = self.secret_keys[-1] if secret_key is None else want_bytes(secret_key)
        derived = self._derived.get(secret)
        if derived is None:
            derived = self._derived[secret] = super().derive_key(secret)
        return derived


class _Serializer(URLSafeSerializer):
    """One signer per salt for the serializer's life (itsdangerous makes a new one for every dumps/loads)."""

    def make_signer(self, salt: str | bytes | None = None) -> ItsSigner:
        salt = self.salt if salt is None else want_bytes(salt)
        signers = self.__dict__.setdefault("_signers", {})
        signer = signers.get(salt)
        if signer is None:
            signer = signers[salt] = super().make_signer(salt)
        return signer


class _GrantSerializer(_Serializer):
    """Grants are signed on every resolve, so their payload is compressed more cheaply (links, signed once per
    media entry and kept in tasks, stay byte for byte itsdangerous' own)."""

    def dump_payload(self, obj: Any) -> bytes:
        """itsdangerous' payload (compact JSON, zlib-compressed behind a '.' when that is shorter, URL-safe
        base64), deflated with a 1 KiB window instead of zlib's default 32 KiB: a payload of a few hundred bytes
        comes out the same size, and zlib sets up and clears far less state per call (7 against 40 us in a loop;
        about 1.5% of a resolve's CPU in a worker, A/B). It is wrapped in the header zlib.compress writes (which
        declares the 32 KiB window; a stream made with a smaller one is valid under it) and its checksum, so the
        token is byte-compatible (any zlib reads it) and starts `.eJ` like every compressed token `redact` knows."""
        raw = Serializer.dump_payload(self, obj)
        deflate = zlib.compressobj(6, zlib.DEFLATED, -_ZLIB_WBITS, _ZLIB_MEMLEVEL)  # raw deflate: no header
        packed = _ZLIB_HEADER + deflate.compress(raw) + deflate.flush() + zlib.adler32(raw).to_bytes(4, "big")
        if len(packed) < len(raw) - 1:
            return b"." + base64_encode(packed)
        return base64_encode(raw)


def _serializer(keys: Sequence[str], salt: str, kind: type[_Serializer] = _Serializer) -> URLSafeSerializer:
    return kind(
        list(keys),
        salt=salt,
        signer=_KeptSigner,
        signer_kwargs={"digest_method": hashlib.sha256, "key_derivation": "hmac"},
    )


class Signer:
    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError("at least one signing key is required")
        self._links = _serializer(keys, LINK_SALT)
        self._grants = _serializer(keys, GRANT_SALT, _GrantSerializer)
        self._verified_link = functools.lru_cache(maxsize=LINKS_KEPT)(self._verify_link)

    def sign_link(self, link: Link) -> str:
        return self._links.dumps(_payload(link))

    def load_link(self, token: str) -> Link:
        """A link that does not verify is simply unknown (404), like a link to an unknown source.

        A link is a pure function of its token (and carries no authority), so links that verified are
        remembered (the LINKS_KEPT most recent): a report's links are resolved again and again. A token that
        does not verify raises, and lru_cache never remembers a call that raised."""
        return self._verified_link(token)

    def _verify_link(self, token: str) -> Link:
        try:
            return Link(**self._load(self._links, token))
        except (BadData, TypeError, ValueError) as e:
            raise NotFound() from e

    def sign_grant(
        self, link: Link, *, identity: str, worker: str, issued_at: int, expires_at: int, realm: str = ""
    ) -> tuple[Grant, str]:
        grant = Grant(
            link=link.id,
            source=link.source,
            key=link.key,
            task=link.task,
            identity=identity,
            worker=worker,
            issued_at=issued_at,
            expires_at=expires_at,
            channels=link.channels,
            nonce=secrets.token_urlsafe(6),
            realm=realm,
        )
        return grant, self._grants.dumps(_payload(grant))

    def load_grant(self, token: str, *, now: float) -> Grant:
        """Verify signature and life; any failure is the same 403 (no oracle for which part was wrong)."""
        try:
            grant = Grant(**self._load(self._grants, token))
        except (BadData, TypeError, ValueError) as e:
            raise BadGrant() from e
        if not (grant.issued_at - CLOCK_SKEW <= now < grant.expires_at):
            raise BadGrant()
        return grant

    @staticmethod
    def _load(serializer: URLSafeSerializer, token: str) -> dict:
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
            raise BadData("bad length")
        # itsdangerous decodes leniently (drops characters outside the alphabet, ignores the unused low bits
        # of the last character, accepts '=' padding), so one grant would have endless spellings. Only the
        # canonical spelling verifies: anything keyed on the token string (a log filter, a cache) holds.
        if not TOKEN_SHAPE.fullmatch(token) or base64_encode(base64_decode(token[-43:])).decode() != token[-43:]:
            raise BadData("not a canonical token")
        data = serializer.loads(token)
        if not isinstance(data, dict):
            raise BadData("not an object")
        return data
