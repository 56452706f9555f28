"""Twilio Voice Recording Encryption: unwrap a recording's content key, map plaintext ranges onto the
ciphertext, and decrypt a stream of ciphertext chunks in constant memory.

Twilio's format: media = AES-256-GCM(CEK, IV) ciphertext with the 16-byte tag appended; a 12-byte IV; the CEK
wrapped with RSAES-OAEP (SHA-256, MGF1-SHA-256). All cipher work is the `cryptography` package's (OpenSSL).

Seeking: with a 12-byte IV, GCM's first counter block is J0 = IV || 0x00000001 (used for the tag) and the
plaintext's block i is encrypted with the keystream of IV || (i + 2), big-endian 32 bits. So bytes from any
block on decrypt with AES-CTR started at that block's counter block, without the bytes before it. CTR alone
proves nothing about integrity: only a decryption from byte 0 through the tag (GCM) is checked (SECURITY.md).

Nothing here prints key material: `ContentKey` and `Details` hide their bytes from repr, and no exception
carries them.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from ..errors import RecordingEncryptionInvalid, RecordingKeyUnknown, RecordingUnwrapFailed
from ..sources import PUBLIC_KEY_SID, Source
from .http_range import ByteRange

TAG = 16  # GCM tag appended to the ciphertext
BLOCK = 16  # AES block
IV_BYTES = 12
CEK_BYTES = 32
# inc32 wraps the low 32 bits of the counter; CTR mode would carry into the IV. GCM itself stops far below.
MAX_BLOCKS = 2**32 - 2
OAEP = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
MAX_WRAPPED = 1024  # bytes of a wrapped CEK (an RSA-8192 block); more is not a key Twilio made


class TagMismatch(Exception):
    """A whole-file decryption whose GCM tag did not verify (or whose tag was missing)."""


@dataclass(frozen=True)
class Details:
    """A recording's `encryption_details` as Twilio gives them: the content key still wrapped."""

    public_key_sid: str
    encrypted_cek: bytes = field(repr=False)
    iv: bytes = field(repr=False)

    def to_json(self) -> dict[str, str]:
        return {"type": "rsa-aes", "public_key_sid": self.public_key_sid,
                "encrypted_cek": base64.b64encode(self.encrypted_cek).decode(),
                "iv": base64.b64encode(self.iv).decode()}


def parse_details(raw: object) -> Details | None:
    """None for a plain recording (no or null `encryption_details`); a RecordingEncryptionInvalid otherwise."""
    if raw is None:
        return None
    if not isinstance(raw, dict) or raw.get("type") != "rsa-aes":
        raise RecordingEncryptionInvalid()
    sid, cek, iv = raw.get("public_key_sid"), raw.get("encrypted_cek"), raw.get("iv")
    if not isinstance(sid, str) or not PUBLIC_KEY_SID.fullmatch(sid):
        raise RecordingEncryptionInvalid()
    if not isinstance(cek, str) or not isinstance(iv, str) or len(cek) > 2 * MAX_WRAPPED:
        raise RecordingEncryptionInvalid()
    try:
        wrapped, nonce = base64.b64decode(cek, validate=True), base64.b64decode(iv, validate=True)
    except (binascii.Error, ValueError):
        raise RecordingEncryptionInvalid() from None
    if len(nonce) != IV_BYTES or not wrapped:
        raise RecordingEncryptionInvalid()
    return Details(public_key_sid=sid, encrypted_cek=wrapped, iv=nonce)


class ContentKey:
    """An unwrapped content key with its IV. Lives only in memory for one request; never printed."""

    __slots__ = ("_cek", "_iv")

    def __init__(self, cek: bytes, iv: bytes) -> None:
        self._cek, self._iv = cek, iv

    def __repr__(self) -> str:
        return "<ContentKey [hidden]>"

    def whole(self):  # type: ignore[no-untyped-def]
        """A GCM decryptor for the file from byte 0; `finalize_with_tag` checks the tag."""
        return Cipher(algorithms.AES(self._cek), modes.GCM(self._iv)).decryptor()

    def from_block(self, block: int):  # type: ignore[no-untyped-def]
        """An AES-CTR decryptor for the plaintext from block `block` on (no integrity check)."""
        counter = self._iv + (block + 2).to_bytes(4, "big")
        return Cipher(algorithms.AES(self._cek), modes.CTR(counter)).decryptor()


def unwrap(source: Source, details: Details) -> ContentKey:
    """The content key, unwrapped with the private key configured for the details' public key SID."""
    key = source.private_key(details.public_key_sid)
    if key is None:
        raise RecordingKeyUnknown()
    try:
        cek = key.decrypt(details.encrypted_cek, OAEP)
    except ValueError:  # OAEP decoding failed: another key, or a corrupt encrypted_cek (no detail is kept)
        raise RecordingUnwrapFailed() from None
    if len(cek) != CEK_BYTES:
        raise RecordingUnwrapFailed()
    return ContentKey(cek, details.iv)


def cipher_range(asked: ByteRange | None) -> ByteRange | None:
    """The ciphertext range to fetch for a plaintext range: from its block's start, with room for the tag.

    `a-b` asks 16 bytes more, so a range that reaches the end also brings the tag (and can be verified when it
    is the whole file); `-n` asks for n + tag + one block, enough to start at a block boundary."""
    if asked is None:
        return None
    if asked.start is None:
        assert asked.suffix is not None  # noqa: S101 - a suffix range always has its length
        return ByteRange(start=None, suffix=asked.suffix + TAG + BLOCK - 1)
    start = asked.start - asked.start % BLOCK
    return ByteRange(start=start, end=None if asked.end is None else asked.end + TAG)


@dataclass(frozen=True)
class Plan:
    """What one response serves: plaintext bytes start..end (inclusive) of `length`, from ciphertext that
    arrives from byte `fetched_from`; `whole` when it is the entire file, tag included, so GCM checks it."""

    start: int
    end: int
    length: int
    fetched_from: int
    whole: bool

    @property
    def size(self) -> int:
        return max(0, self.end - self.start + 1)


class PlainUnsatisfiable(Exception):
    """The plaintext range cannot be served; `length` is the plaintext length for `Content-Range: */length`."""

    def __init__(self, length: int) -> None:
        super().__init__(length)
        self.length = length


def plan(asked: ByteRange | None, fetched: tuple[int, int] | None, total: int) -> Plan:
    """Map the client's plaintext range onto what the upstream sent: `fetched` is (first, last) of a 206, None
    for a 200 (the whole ciphertext); `total` the ciphertext length, tag included."""
    length = total - TAG
    if length < 0 or length > MAX_BLOCKS * BLOCK:
        raise RecordingEncryptionInvalid()
    if fetched is None:
        return Plan(0, length - 1, length, 0, whole=True)
    first, last = fetched
    if asked is None or length == 0:
        raise PlainUnsatisfiable(length)
    if asked.start is None:
        assert asked.suffix is not None  # noqa: S101 - a suffix range always has its length
        start, end = max(0, length - asked.suffix), length - 1
    else:
        start = asked.start
        end = length - 1 if asked.end is None else min(asked.end, length - 1)
    if start >= length:
        raise PlainUnsatisfiable(length)
    end = min(end, last)
    if first > start - start % BLOCK or end < start:
        raise RecordingEncryptionInvalid()  # the upstream sent less than the blocks we need
    return Plan(start, end, length, first, whole=start == 0 and end == length - 1 and last == total - 1)


def decrypted(chunks: Iterator[bytes], key: ContentKey, p: Plan) -> Iterator[bytes]:
    """Plaintext for the plan from ciphertext chunks arriving from `p.fetched_from`, in constant memory.

    A whole file is decrypted with GCM and the tag checked after the last byte: TagMismatch is raised before
    the caller can send the final piece (see `held_back`). A part is decrypted with CTR from its block."""
    block_start = p.start - p.start % BLOCK
    dec = key.whole() if p.whole else key.from_block(block_start // BLOCK)
    stop = p.end + 1  # ciphertext position after the last plaintext byte served
    tag = bytearray()
    pos = p.fetched_from
    for chunk in chunks:
        view = memoryview(chunk)
        lo, hi = max(block_start - pos, 0), min(stop - pos, len(view))
        if hi > lo:
            out = dec.update(view[lo:hi])
            drop = max(p.start - (pos + lo), 0)
            yield out[drop:] if drop else out
        if p.whole and pos + len(view) > p.length:
            tag += view[max(p.length - pos, 0):]
        pos += len(view)
        if not p.whole and pos >= stop:
            return
    if not p.whole:
        return
    if len(tag) != TAG:
        raise TagMismatch("the tag is missing or too long")
    try:
        dec.finalize_with_tag(bytes(tag))
    except InvalidTag:
        raise TagMismatch("the tag does not verify") from None


def held_back(pieces: Iterator[bytes]) -> Iterator[bytes]:
    """Pass pieces on one behind, so the last non-empty one goes out only after the source is exhausted
    (for a whole file: after the tag verified). A tampered file then never reaches its Content-Length."""
    pending = b""
    for piece in pieces:
        if not piece:
            continue
        if pending:
            yield pending
        pending = piece
    if pending:
        yield pending
