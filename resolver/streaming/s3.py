"""Requests to `s3` sources: signed by botocore (AWS Signature Version 4), never by hand.

Stream delivery signs each upstream GET for exactly the URL `sources.upstream_url` built and checked (the
key once-encoded under the bucket and prefix; S3's signer does not encode the path again), with exactly the
headers that will be sent, so the request goes on through the same streaming path as an http source.
Presign delivery signs the same URL in its query instead (`X-Amz-Expires` seconds), for a 302.

Credentials are the source's own (named environment variables, read at start-up) or AWS's standard chain
as botocore resolves it (environment, shared config and profile, container and instance roles); the chain's
credentials refresh themselves when temporary. No text from here ever holds a secret: log lines name the
source, the bucket and S3's public error code only.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Mapping

import botocore.session
from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, ReadOnlyCredentials
from botocore.exceptions import BotoCoreError

from ..errors import NotFound, UpstreamFailed
from ..sources import S3Location, Source

log = logging.getLogger("resolver.upstream")

MAX_PRESIGN = 7 * 24 * 3600  # SigV4's own limit for X-Amz-Expires
CHAIN_RETRY = 30.0  # seconds before asking AWS's chain again after it found nothing
MAX_ERROR_BODY = 8192
_CODE = re.compile(rb"<Code>([A-Za-z.]{1,64})</Code>")

# S3's public error codes, in words for operators (never with a key, a signature or a secret).
MEANING = {
    "SignatureDoesNotMatch": "the secret key does not match the access key id",
    "InvalidAccessKeyId": "the store does not know this access key id",
    "AccessDenied": "access denied (or the object is missing and the credentials may not list the bucket)",
    "ExpiredToken": "the session token has expired",
    "InvalidToken": "the session token is not valid",
    "TokenRefreshRequired": "the session token must be refreshed",
    "RequestTimeTooSkewed": "this machine's clock is too far from the store's",
    "NoSuchBucket": "the bucket does not exist",
    "PermanentRedirect": "the bucket is in another region (check region)",
    "AuthorizationHeaderMalformed": "the region does not match the bucket's (check region)",
    "AuthorizationQueryParametersError": "the region does not match the bucket's (check region)",
    "IllegalLocationConstraintException": "the bucket is in another region (check region)",
}


class NoCredentials(Exception):
    """Neither the source's variables nor AWS's chain gave credentials."""


class S3Signer:
    """Signs requests for s3 sources; one per app, sharing AWS's chain between sources."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._chain: Credentials | None = None
        self._chain_missed_at = float("-inf")

    def credentials(self, source: Source) -> ReadOnlyCredentials:
        """Frozen credentials for this request (a refreshing set refreshes itself here when due)."""
        keys = _location(source).keys
        if keys is not None:
            key_id, secret, token = keys
            return ReadOnlyCredentials(key_id, secret, token or None)
        with self._lock:
            if self._chain is None and time.monotonic() - self._chain_missed_at >= CHAIN_RETRY:
                try:
                    self._chain = botocore.session.Session().get_credentials()
                except BotoCoreError:
                    self._chain = None
                if self._chain is None:
                    self._chain_missed_at = time.monotonic()
            chain = self._chain
        if chain is None:
            raise NoCredentials()
        try:
            return chain.get_frozen_credentials()
        except BotoCoreError as e:  # a refresh that failed (role gone, metadata service down)
            raise NoCredentials() from e

    def signed_headers(self, source: Source, url: str, headers: Mapping[str, str]) -> dict[str, str]:
        """`headers` plus X-Amz-Date, X-Amz-Content-SHA256 (and a token) and the Authorization for a GET."""
        request = AWSRequest(method="GET", url=url, headers=dict(headers))
        S3SigV4Auth(self._usable(source), "s3", _location(source).region).add_auth(request)
        return dict(request.headers.items())

    def presign(self, source: Source, url: str, expires: int) -> str:
        """A presigned GET of `url`, valid for `expires` seconds from now (1 to 7 days, as SigV4 allows)."""
        expires = max(1, min(int(expires), MAX_PRESIGN))
        request = AWSRequest(method="GET", url=url)
        S3SigV4QueryAuth(self._usable(source), "s3", _location(source).region, expires=expires).add_auth(request)
        return str(request.url)

    def _usable(self, source: Source) -> ReadOnlyCredentials:
        try:
            return self.credentials(source)
        except NoCredentials:
            log.warning("upstream %s (s3 bucket %s): no AWS credentials: set the credentials of sources.%s "
                        "or provide AWS's standard chain (environment, profile, role)", source.name,
                        _bucket(source), source.name)
            raise UpstreamFailed() from None


def _location(source: Source) -> S3Location:
    if source.s3 is None:
        raise TypeError(f"source {source.name} is not an s3 source")
    return source.s3


def _bucket(source: Source) -> str:
    return source.s3.bucket if source.s3 else "?"


def error_code(body: bytes) -> str:
    """S3's error code from an XML error body ("" if none): a fixed public word, safe to log."""
    match = _CODE.search(body[:MAX_ERROR_BODY])
    return match.group(1).decode() if match else ""


def failure(source: Source, status: int, body: bytes) -> Exception:
    """The client's error for a refused S3 request, after one log line for operators. The body (XML that
    may echo the string to sign and the access key id) never goes further than `error_code`."""
    code = error_code(body)
    if status in (404, 410) and code in ("", "NoSuchKey"):
        return NotFound("The media is no longer at its store.", code="media_gone")
    meaning = MEANING.get(code, "")
    log.warning("upstream %s (s3 bucket %s) answered HTTP %d %s%s", source.name, _bucket(source), status,
                code or "without an error code", f": {meaning}" if meaning else "")
    return UpstreamFailed()
