"""Serving Twilio-encrypted recordings as plaintext, for a `twilio-recording` source with `private_keys`, or an
`s3` source with `private_keys` (Twilio's external storage: the ciphertext is the bucket's object, fetched with
signed S3 GETs, while the encryption details still come from Twilio's recording resource).

Per grant, the recording resource is read once (`.../Recordings/{RE}.json`) and its `encryption_details` kept
in the shared store for the grant's life, sealed with AES-GCM under a key derived from the newest signing key
(whoever can read or write the store learns nothing and can plant nothing); the content key itself is never
stored: it is unwrapped in memory for each request. A recording without `encryption_details` is streamed as
it is by `Upstream`.

The player sees an ordinary recording: lengths and ranges in plaintext terms (media minus the 16-byte tag),
HEAD, 304 and 416 as for a plain one, and a seek fetches only the blocks it needs. A whole-file response is
checked against the tag before its last piece is sent; if the tag fails, the connection is cut (short body),
the transfer is audited `complete: false` with reason `tag_mismatch`, and operators get a log line; the failure
is remembered (`FailedChecks`), and until a whole download of it verifies, ranges of that recording (which no tag
can check) are refused with `502 recording_integrity_failed` instead of being served unchecked.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import logging
import os
import time
from collections.abc import Iterator, Mapping

import requests
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from flask import Response
from urllib3.exceptions import HTTPError as Urllib3Error

from .. import policy
from ..access.signing import Grant
from ..config import Settings
from ..errors import RangeNotSatisfiable, RecordingEncryptionInvalid, RecordingIntegrityFailed, UpstreamFailed
from ..sources import Source, recording_resource_url
from ..store import Store, StoreError
from . import decrypt, relay
from .cuts import SendTimeout, StreamCut, Watch, watched
from .http_range import ByteRange, Unsatisfiable, content_range, entity_length, parse_range
from .upstream import Reads, StreamAborted, Transfer, Upstream, _arrived, content_disposition, forwarded_headers

log = logging.getLogger("resolver.encrypted")

SEAL_CONTEXT = b"flex-media-resolver/recording-details/v1"
FAILED_CONTEXT = b"flex-media-resolver/recording-integrity/v1"
FAILED_FOR = 7 * 24 * 3600.0  # how long a failed tag check refuses that recording's ranges
MAX_RESOURCE_BYTES = 64 * 1024  # a recording resource is about 1 KiB
_PLAIN = {"encrypted": False}


class DetailsCache:
    """`encryption_details` per grant in the shared store, sealed (AES-GCM, the store key as associated data)."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.store = store
        secret = hmac.new(settings.secret_keys[-1].encode(), SEAL_CONTEXT, hashlib.sha256).digest()
        self._name_key = hmac.new(secret, b"name", hashlib.sha256).digest()
        self._aead = AESGCM(hmac.new(secret, b"seal", hashlib.sha256).digest())

    def __repr__(self) -> str:
        return "<DetailsCache>"

    def name(self, grant: Grant) -> str:
        ident = f"{grant.nonce}|{grant.source}|{grant.key}|{grant.issued_at}".encode()
        return "encd:" + hmac.new(self._name_key, ident, hashlib.sha256).hexdigest()[:40]

    def get(self, grant: Grant) -> dict | None:
        name = self.name(grant)
        try:
            raw = self.store.get(name)
        except StoreError:
            return None
        if raw is None or len(raw) < 13:
            return None
        try:
            return json.loads(self._aead.decrypt(raw[:12], raw[12:], name.encode()))
        except (InvalidTag, ValueError):
            log.warning("a cached recording resource failed its seal; reading it again from Twilio")
            return None

    def put(self, grant: Grant, value: dict) -> None:
        ttl = grant.expires_at - time.time()
        if ttl < 1:
            return
        name, nonce = self.name(grant), os.urandom(12)
        try:
            self.store.put(name, nonce + self._aead.encrypt(nonce, json.dumps(value).encode(), name.encode()), ttl)
        except StoreError:
            log.warning("recording resource cache unavailable; continuing without it")


class FailedChecks:
    """Recordings whose whole-file tag check failed, in the shared store for FAILED_FOR seconds: a range of
    them cannot be checked, so none is served (`recording_integrity_failed`) until a whole download verifies
    again. Named by a keyed hash of (source, key) and sealed like the details, so the store can neither be
    read for which recordings failed nor given a mark that opens, by whoever cannot derive the key."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self.store = store
        secret = hmac.new(settings.secret_keys[-1].encode(), FAILED_CONTEXT, hashlib.sha256).digest()
        self._name_key = hmac.new(secret, b"name", hashlib.sha256).digest()
        self._aead = AESGCM(hmac.new(secret, b"seal", hashlib.sha256).digest())

    def __repr__(self) -> str:
        return "<FailedChecks>"

    def name(self, source: Source, key: str) -> str:
        return "encf:" + hmac.new(self._name_key, f"{source.name}|{key}".encode(), hashlib.sha256).hexdigest()[:40]

    def mark(self, source: Source, key: str) -> None:
        name, nonce = self.name(source, key), os.urandom(12)
        value = json.dumps({"failed_at": int(time.time())}).encode()
        try:
            self.store.put(name, nonce + self._aead.encrypt(nonce, value, name.encode()), FAILED_FOR)
        except StoreError:
            log.error("source %s: recording %s failed its integrity check but the store could not remember it; "
                      "its ranges stay servable", source.name, key)

    def failed(self, source: Source, key: str) -> bool:
        name = self.name(source, key)
        try:
            raw = self.store.get(name)
        except StoreError:
            log.warning("source %s: the store is unavailable; recording %s's integrity mark cannot be read",
                        source.name, key)
            return False
        if raw is None or len(raw) < 13:
            return False
        try:
            self._aead.decrypt(raw[:12], raw[12:], name.encode())
        except InvalidTag:
            log.warning("source %s: an integrity mark for recording %s failed its seal; ignored", source.name, key)
            return False
        return True

    def clear(self, source: Source, key: str) -> None:
        try:
            self.store.delete(self.name(source, key))
        except StoreError:
            pass


class EncryptedRecordings:
    def __init__(self, settings: Settings, upstream: Upstream, store: Store) -> None:
        self.upstream = upstream
        self.cache = DetailsCache(settings, store)
        self.failed = FailedChecks(settings, store)

    def details(self, source: Source, grant: Grant) -> decrypt.Details | None:
        """The recording's encryption details (None: a plain recording): cached for the grant, else read once."""
        cached = self.cache.get(grant)
        if cached is None:
            cached = self._read_resource(source, grant.key)
            self.cache.put(grant, cached)
        if cached.get("encrypted") is False:
            return None
        return decrypt.parse_details(cached)

    def _read_resource(self, source: Source, key: str) -> dict:
        api, url = recording_resource_url(source, key)
        headers = {**policy.UPSTREAM_REQUEST_DEFAULTS, "Accept": "application/json"}
        up = self.upstream.open(api, url, headers)
        try:
            if up.status_code != 200:
                log.warning("source %s: the recording resource answered HTTP %d", source.name, up.status_code)
                raise UpstreamFailed()
            body = up.raw.read(MAX_RESOURCE_BYTES + 1, decode_content=False)
        except (Urllib3Error, OSError, requests.RequestException) as e:
            log.warning("source %s: the recording resource could not be read: %s", source.name, type(e).__name__)
            raise UpstreamFailed() from None
        finally:
            up.close()
        try:
            resource = json.loads(body) if len(body) <= MAX_RESOURCE_BYTES else None
        except ValueError:
            resource = None
        if not isinstance(resource, dict):
            log.warning("source %s: the recording resource is not a JSON object", source.name)
            raise UpstreamFailed()
        found = resource.get("encryption_details")
        if found is None:
            return _PLAIN
        try:
            return decrypt.parse_details(found).to_json()  # type: ignore[union-attr]
        except RecordingEncryptionInvalid:
            log.warning("source %s: recording %s has encryption details that are not usable", source.name, key)
            raise

    def response(
        self, source: Source, grant: Grant, url: str, *, method: str, client_headers: Mapping[str, str],
        filename: str, transfer: Transfer, client: relay.Client | None = None, watch: Watch | None = None,
    ) -> Response:
        details = self.details(source, grant)
        if details is None:  # a plain recording on an encrypting source: served as it is
            return self.upstream.response(source, url, method=method, client_headers=client_headers,
                                          filename=filename, transfer=transfer, client=client, watch=watch)
        try:
            key = decrypt.unwrap(source, details)
        except UpstreamFailed as e:
            log.warning("source %s: recording %s (public key %s) cannot be decrypted: %s", source.name,
                        grant.key, details.public_key_sid, e.code)
            raise
        return self._decrypted(source, url, key, method=method, client_headers=client_headers,
                               filename=filename, transfer=transfer, recording=grant.key,
                               sending=(client.sock if client is not None else None, watch))

    def _decrypted(
        self, source: Source, url: str, key: decrypt.ContentKey, *, method: str, client_headers: Mapping[str, str],
        filename: str, transfer: Transfer, recording: str, sending: tuple[object, Watch | None] = (None, None),
    ) -> Response:
        transfer.range = client_headers.get("Range", "")[:100]
        try:
            asked = parse_range(client_headers.get("Range"))
        except Unsatisfiable:
            raise _plain_416(self.upstream._length(source, url)) from None
        fetch = decrypt.cipher_range(asked)
        try:
            up = self.upstream.open(source, url, forwarded_headers(client_headers, fetch))
        except RangeNotSatisfiable as e:
            total = _cipher_total(e)
            if fetch is None or fetch.start is not None or not total:
                raise _plain_416(total) from None
            # Our suffix (the client's plus tag and a block) is longer than the file, and some servers answer
            # that with 416 rather than the whole entity: ask from the start instead.
            fetch = ByteRange(start=0)
            up = self.upstream.open(source, url, forwarded_headers(client_headers, fetch))
        try:
            try:
                headers, content_type, inline = self.upstream._headers(source, up, fetch)
            except RangeNotSatisfiable as e:
                raise _plain_416(_cipher_total(e)) from None
            headers.pop("Content-Encoding", None)  # we asked for identity: the ciphertext is never encoded
            headers["Content-Disposition"] = content_disposition(filename, inline)
            if up.status_code == 304:
                for name in ("Content-Length", "Content-Range"):
                    headers.pop(name, None)
                up.close()
                transfer.status, transfer.complete = 304, True
                return Response(status=304, headers=headers, content_type=content_type)
            p = self._plan(up, asked)
            if not p.whole and method != "HEAD" and self.failed.failed(source, recording):
                # The tag failed on a whole download: an unchecked part of it is not served either.
                log.warning("source %s: recording %s failed its integrity check earlier; range %s refused",
                            source.name, recording, transfer.range or "(none)")
                raise RecordingIntegrityFailed()
            status = 200 if up.status_code == 200 else 206
            headers["Content-Length"] = str(p.size)
            if status == 206:
                headers["Content-Range"] = f"bytes {p.start}-{p.end}/{p.length}"
            else:
                headers.pop("Content-Range", None)
            headers["Accept-Ranges"] = "bytes"
            transfer.status = status
            if method == "HEAD":
                up.close()
                transfer.complete = True
                return Response(status=status, headers=headers, content_type=content_type)
            reads = Reads()
            arrived = _arrived(up, reads)
            chunks = itertools.chain([self.upstream._first(source, arrived)], arrived)
        except BaseException:
            up.close()
            raise
        body = self._body(source, up, chunks, key, p, transfer, recording, *sending, reads=reads)
        resp = Response(body, status=status, headers=headers, content_type=content_type)
        resp.call_on_close(up.close)
        return resp

    def _plan(self, up: requests.Response, asked: ByteRange | None) -> decrypt.Plan:
        if up.status_code == 200:
            length = up.headers.get("Content-Length", "")
            if not length.isdigit() or "Transfer-Encoding" in up.headers:
                raise RecordingEncryptionInvalid()  # no length: the tag cannot be told from the media
            fetched, total = None, int(length)
        else:
            part = content_range(up.headers.get("Content-Range"))
            if part is None or part[2] is None:
                raise RecordingEncryptionInvalid()
            fetched, total = (part[0], part[1]), part[2]
        try:
            return decrypt.plan(asked, fetched, total)
        except decrypt.PlainUnsatisfiable as e:
            raise _plain_416(e.length + decrypt.TAG) from None

    def _body(
        self, source: Source, up: requests.Response, chunks: Iterator[bytes], key: decrypt.ContentKey,
        p: decrypt.Plan, transfer: Transfer, recording: str, sock: object = None, watch: Watch | None = None,
        reads: Reads | None = None,
    ) -> Iterator[bytes]:
        pieces = decrypt.decrypted(chunks, key, p)
        if p.whole:
            pieces = decrypt.held_back(pieces)
        sent = 0
        sending = SendTimeout(sock)  # the WSGI loop's send idle timeout, as in upstream.py
        try:
            for piece in pieces:
                sent += len(piece)
                transfer.bytes = sent
                watched(watch, len(piece))
                sending.before_yield()
                yield piece
                if reads is not None:
                    reads.sent(sent)
            transfer.complete = sent == p.size
            if p.whole and transfer.complete:
                self.failed.clear(source, recording)  # verified whole: its ranges may be served again
        except GeneratorExit:
            if sending.stalled():
                transfer.reason = "client_stalled"
                log.warning("source %s: stream cut after %d bytes: client_stalled", source.name, sent)
            raise
        except StreamCut as e:
            transfer.reason = e.reason
            log.warning("source %s: stream cut after %d bytes: %s", source.name, sent, e.reason)
            raise
        except decrypt.TagMismatch:
            transfer.reason = "tag_mismatch"
            self.failed.mark(source, recording)
            log.error("source %s: recording %s failed its integrity check (GCM tag); the stream was cut off "
                      "after %d of %d bytes", source.name, recording, sent, p.size)
            raise StreamAborted("tag_mismatch") from None
        except (Urllib3Error, OSError) as e:
            transfer.reason = "upstream_aborted"
            log.warning("upstream %s: stream aborted after %d bytes: %s", source.name, sent, type(e).__name__)
            raise StreamAborted(type(e).__name__) from None
        finally:
            up.close()
            sending.restore()
            if watch is not None:
                watch.ended()


def _cipher_total(err: RangeNotSatisfiable) -> int | None:
    return entity_length(416, err.headers.get("Content-Range"), None)


def _plain_416(cipher_total: int | None) -> RangeNotSatisfiable:
    """416 with the plaintext length (ciphertext minus the tag)."""
    err = RangeNotSatisfiable()
    plain = None if cipher_total is None else max(0, cipher_total - decrypt.TAG)
    err.headers = {"Content-Range": f"bytes */{plain}"} if plain is not None else {}
    return err
