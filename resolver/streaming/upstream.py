"""Fetch media from a credentialed upstream and stream it to the client in constant memory.

Only the headers listed in `policy` cross in either direction, each checked against its pattern; the body is
passed through byte for byte (no decompression). A client's seek becomes one Range on the upstream, so only
the asked bytes travel, and a 206 must describe exactly the range we asked for. Redirects are followed here,
hop by hop, under the rules of `redirects.py`. A stall between upstream reads ends the stream (the read
timeout is an idle timeout, not a cap on the whole transfer); a timeout before the first byte is a 504, after
it the client connection is aborted, and so is a truncated or oversized body, so it never looks complete.
Closing the client response closes the upstream response at once.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from urllib.parse import quote

import requests
from flask import Response
from requests.hooks import dispatch_hook
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import ProtocolError
from urllib3.exceptions import TimeoutError as Urllib3Timeout

from .. import policy
from ..config import Settings
from ..errors import NotFound, RangeNotSatisfiable, UpstreamFailed, UpstreamTimeout
from ..sources import Source
from . import redirects, relay, s3
from .cuts import SendTimeout, StreamCut, Watch, watched
from .guarded_http import blocked, new_guarded_session
from .http_range import ByteRange, Unsatisfiable, entity_length, parse_range, part_matches
from .pooling import PoolAdapter

log = logging.getLogger("resolver.upstream")  # the name in log lines, as before the move

CHUNK = policy.STREAM_CHUNK
SAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]")
_REQUEST_PATTERNS = {name: re.compile(p) for name, p in policy.REQUEST_HEADERS_TO_UPSTREAM.items()}
_RESPONSE_PATTERNS = {name: re.compile(p) for name, p in policy.RESPONSE_HEADERS_FROM_UPSTREAM.items()}
_CHARSET = re.compile(r"charset=\"?([A-Za-z0-9._-]{1,40})\"?", re.IGNORECASE)


@dataclass
class Transfer:
    """What one grant request moved, for the audit record."""

    status: int = 0
    bytes: int = 0
    range: str = ""
    complete: bool = False
    reason: str = ""  # why a stream that started did not complete, when we know (e.g. tag_mismatch)
    started: float = field(default_factory=time.monotonic)

    @property
    def duration_ms(self) -> int:
        return int((time.monotonic() - self.started) * 1000)


class StreamAborted(Exception):
    """The upstream failed after the response started: the client connection is cut, never completed."""


def new_session(pool_size: int = policy.UPSTREAM_POOL_SIZE) -> requests.Session:
    """One session per app: no proxies or .netrc from the environment, no automatic retries."""
    session = requests.Session()
    session.trust_env = False
    adapter = PoolAdapter(pool_connections=16, pool_maxsize=pool_size, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def content_disposition(filename: str, inline: bool) -> str:
    """RFC 6266: a plain ASCII fallback plus the exact UTF-8 name, so no quote, ';' or CRLF can break out."""
    filename = filename or "media"
    fallback = SAFE_FILENAME.sub("_", filename)[:100]
    kind = "inline" if inline else "attachment"
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename[:200], safe='')}"


def served_content_type(source: Source, upstream_type: str | None) -> tuple[str, bool]:
    """The type we serve and whether it may be shown inline; anything unexpected becomes a download."""
    base, _, params = (upstream_type or "").partition(";")
    base = base.strip().lower()
    allowed = source.content_types or policy.DEFAULT_CONTENT_TYPES
    if not base or base not in allowed:
        return policy.FALLBACK_CONTENT_TYPE, False
    charset = _CHARSET.search(params)
    return (f"{base}; charset={charset.group(1)}" if charset else base), True


def _auth(source: Source) -> tuple[dict[str, str], tuple[str, str] | None]:
    if source.auth is None:
        return {}, None
    if source.auth[0] == "bearer":
        return {"Authorization": f"Bearer {source.auth[1]}"}, None
    return {}, (source.auth[1], source.auth[2])


def _limit(settings: Settings, source: Source) -> int | None:
    limits = [n for n in (settings.max_media_bytes, source.max_bytes) if n]
    return min(limits) if limits else None


def forwarded_headers(client_headers: Mapping[str, str], asked: ByteRange | None) -> dict[str, str]:
    """The request headers an upstream sees: our defaults, the single range, valid conditionals."""
    headers = dict(policy.UPSTREAM_REQUEST_DEFAULTS)
    for name, pattern in _REQUEST_PATTERNS.items():
        value = client_headers.get(name)
        if value is not None and pattern.fullmatch(value) and (name != "If-Range" or asked is not None):
            headers[name] = value
    if asked is not None:
        headers["Range"] = asked.header
    return headers


def _arrived(up: requests.Response, reads: Reads | None = None) -> Iterator[bytes]:
    """The body as it arrives. Not raw.stream(CHUNK), which waits until CHUNK bytes are in: a slow upstream's
    first bytes would reach the listener only after 256 KiB (4 s at 64 KiB/s). read1 passes on whatever has
    arrived, up to CHUNK (or what `reads` allows); a body cut short still raises (urllib3 enforces
    Content-Length)."""
    while chunk := up.raw.read1(reads.size if reads is not None else CHUNK, decode_content=False):
        yield chunk


class Reads:
    """How much one read of a body that goes through the WSGI loop may take: CHUNK, and STREAM_FAST_CHUNK once
    the client has shown it is fast, by the relay's rule (relay.proved_fast)."""

    def __init__(self) -> None:
        self.size, self.started = CHUNK, relay._clock()

    def sent(self, total: int) -> None:
        """`total` bytes of the body have gone to the client."""
        if self.size == CHUNK and relay.proved_fast(total, self.started):
            self.size = policy.STREAM_FAST_CHUNK


class Upstream:
    def __init__(self, settings: Settings, session: requests.Session, hops: requests.Session | None = None) -> None:
        self.settings = settings
        self.session = session  # the operator's base_url hosts, as configured
        self.hops = hops or new_guarded_session()  # every other redirect hop: checked addresses only
        self.s3 = s3.S3Signer()  # s3 sources: SigV4 by botocore, AWS's credential chain shared

    def close(self) -> None:
        self.hops.close()

    def open(self, source: Source, url: str, headers: Mapping[str, str]) -> requests.Response:
        """GET the media, following at most MAX_REDIRECTS allowed hops; a passed status or an error."""
        hop = redirects.first_hop(url)
        for hops in range(policy.MAX_REDIRECTS + 1):
            resp = self._get(source, hop, headers)
            if resp.status_code not in policy.REDIRECT_STATUSES:
                return self._checked(source, resp)
            location = resp.headers.get("Location")
            resp.close()
            if source.s3 is not None:  # a signature is for one URL; S3 redirects only a wrong region
                raise redirects.refuse(source, f"the s3 store answered {resp.status_code} (check region)")
            if hops == policy.MAX_REDIRECTS:
                break
            hop = redirects.next_hop(source, hop, location)
        raise redirects.refuse(source, f"more than {policy.MAX_REDIRECTS} redirects")

    def _get(self, source: Source, hop: redirects.Hop, headers: Mapping[str, str]) -> requests.Response:
        """One request through the adapter itself: Session.send would read a redirect's whole body into
        memory (to prepare a next hop we do not want) and keep upstream cookies for other users."""
        session, basic, send = self.hops, None, dict(headers)
        if hop.trusted:  # credentials never leave the base_url's origin
            session = self.session
            if source.s3 is not None:  # signed for exactly this URL and these headers
                send = self.s3.signed_headers(source, hop.url, send)
            else:
                auth_headers, basic = _auth(source)
                send.update(auth_headers)
        try:
            prepared = requests.Request("GET", hop.url, headers=send, auth=basic).prepare()
            started = time.perf_counter()
            resp = self._send(session, prepared)
            # What Session.send would do: time to headers, then the session's response hooks (metrics).
            resp.elapsed = timedelta(seconds=time.perf_counter() - started)
            return dispatch_hook("response", session.hooks, resp)
        except requests.Timeout as e:
            log.warning("upstream %s timed out", source.name)
            raise UpstreamTimeout() from e
        except requests.RequestException as e:
            if blocked(e):
                raise redirects.refuse(source, "the host resolves to a non-public address") from e
            log.warning("upstream %s unreachable: %s", source.name, type(e).__name__)
            raise UpstreamFailed() from e

    def _send(self, session: requests.Session, prepared: requests.PreparedRequest) -> requests.Response:
        """The adapter's send, once more if the connection broke before any answer: a kept-alive connection
        the upstream closed just as we reused it (the race every keep-alive client has; a GET is safe to
        repeat, on another connection). Timeouts and refused connects are not repeated."""
        for attempt in (1, 2):
            try:
                return session.get_adapter(prepared.url).send(
                    prepared, stream=True, timeout=(self.settings.connect_timeout, self.settings.read_timeout),
                    verify=session.verify, proxies={})
            except requests.ConnectionError as e:
                if attempt == 2 or not (e.args and isinstance(e.args[0], ProtocolError)):
                    raise
        raise AssertionError("unreachable")

    def _checked(self, source: Source, resp: requests.Response) -> requests.Response:
        if resp.status_code in policy.PASSED_STATUSES:
            return resp
        if source.s3 is not None and resp.status_code != 416:  # S3's XML goes no further than its code
            body = _error_body(resp)
            resp.close()
            raise s3.failure(source, resp.status_code, body)
        resp.close()
        if resp.status_code == 416:
            raise _unsatisfiable(entity_length(416, resp.headers.get("Content-Range"), None))
        if resp.status_code in (404, 410):
            raise NotFound("The media is no longer at its store.", code="media_gone")
        log.warning("upstream %s answered HTTP %d", source.name, resp.status_code)
        raise UpstreamFailed()

    def response(
        self, source: Source, url: str, *, method: str, client_headers: Mapping[str, str], filename: str,
        transfer: Transfer, client: relay.Client | None = None, watch: Watch | None = None,
    ) -> Response:
        """The response for one grant request; `client` (under gunicorn) lets the body skip the WSGI loop and
        gives it the send idle timeout; `watch` re-checks access while the body runs."""
        transfer.range = client_headers.get("Range", "")[:100]
        try:
            asked = parse_range(client_headers.get("Range"))
        except Unsatisfiable:
            raise _unsatisfiable(self._length(source, url)) from None
        try:
            up = self.open(source, url, forwarded_headers(client_headers, asked))
        except RangeNotSatisfiable as e:
            if e.headers or asked is None:
                raise
            raise _unsatisfiable(self._length(source, url)) from None  # S3 says 416 without Content-Range
        try:
            headers, content_type, inline = self._headers(source, up, asked)
            transfer.status = up.status_code
            headers["Content-Disposition"] = content_disposition(filename, inline)
            if method == "HEAD" or up.status_code == 304:
                up.close()
                transfer.complete = True
                return Response(status=up.status_code, headers=headers, content_type=content_type)
            chunks = _arrived(up)
            first = self._first(source, chunks)
        except BaseException:
            up.close()
            raise
        limit = _limit(self.settings, source)
        promised = int(headers["Content-Length"]) if "Content-Length" in headers else None
        body = self._body(source, up, first, chunks, transfer, limit, client, promised, watch)
        # Not direct_passthrough: werkzeug then wraps the body so close() reaches us (and call_on_close runs)
        # when the stream ends or the client goes away.
        resp = Response(body, status=up.status_code, headers=headers, content_type=content_type)
        resp.call_on_close(up.close)
        return resp

    def _headers(
        self, source: Source, up: requests.Response, asked: ByteRange | None
    ) -> tuple[dict[str, str], str, bool]:
        """The response headers we pass on, after checking the upstream answered what was asked."""
        got = up.headers
        if up.status_code == 206 and (asked is None or not part_matches(
                asked, got.get("Content-Range"), got.get("Content-Length"))):
            log.warning("upstream %s sent a partial response that is not the range asked for", source.name)
            raise UpstreamFailed()
        total = entity_length(up.status_code, got.get("Content-Range"), got.get("Content-Length"))
        if up.status_code == 200 and asked is not None and asked.start is not None and total is not None and (
                asked.start >= total):
            raise _unsatisfiable(total)  # the upstream ignored a range that starts past the end
        limit = _limit(self.settings, source)
        if limit is not None and total is not None and total > limit:
            log.warning("upstream %s: media of %d bytes is over the %d-byte limit", source.name, total, limit)
            raise UpstreamFailed("The media is larger than this resolver may serve.", code="media_too_large")
        headers = {}
        for name, pattern in _RESPONSE_PATTERNS.items():
            value = got.get(name)
            if value is not None and pattern.fullmatch(value):
                headers[name] = value
        if "Transfer-Encoding" in got:  # a length beside chunking is a smuggling trick: trust the framing only
            headers.pop("Content-Length", None)
        content_type, inline = served_content_type(source, got.get("Content-Type"))
        return headers, content_type, inline

    def _first(self, source: Source, chunks: Iterator[bytes]) -> bytes:
        """Read the first chunk before answering, so an upstream that stalls or breaks now is a 504/502."""
        try:
            return next(chunks, b"")
        except (Urllib3Error, OSError) as e:
            if isinstance(e, Urllib3Timeout | TimeoutError):
                log.warning("upstream %s stalled before the first byte", source.name)
                raise UpstreamTimeout() from e
            log.warning("upstream %s failed before the first byte: %s", source.name, type(e).__name__)
            raise UpstreamFailed() from e

    def _body(
        self, source: Source, up: requests.Response, first: bytes, chunks: Iterator[bytes], transfer: Transfer,
        limit: int | None, client: relay.Client | None = None, promised: int | None = None,
        watch: Watch | None = None,
    ) -> Iterator[bytes]:
        """The body after the headers. With a `client` and a promised length it is relayed socket to socket
        once the first chunk is out (and the headers with it); otherwise, or if the server framed the response
        itself, it goes chunk by chunk through the WSGI server. Either way the client socket (when the server
        is gunicorn) has the send idle timeout, and `watch` is told of every chunk (and may cut the stream)."""
        sent = len(first)
        sending = SendTimeout(client.sock if client is not None else None)
        try:
            if limit is not None and sent > limit:
                raise StreamAborted("over the size limit")
            transfer.bytes = sent
            if first:
                sending.before_yield()
                yield first
            if client is not None and promised is not None and sent < promised and client.ready_for(promised,
                                                                                                    sent):

                def progress(n: int) -> None:
                    transfer.bytes += n
                    watched(watch, n)

                relay.send_rest(up.raw, client, promised - sent, progress)
                sent = transfer.bytes
                transfer.complete = True
                _keep_alive(up, promised, sent)
                return
            for chunk in chunks:
                sent += len(chunk)
                if limit is not None and sent > limit:
                    raise StreamAborted("over the size limit")
                transfer.bytes = sent
                watched(watch, len(chunk))  # before the chunk leaves: a revoked stream sends nothing more
                sending.before_yield()
                yield chunk
            transfer.complete = True
            _keep_alive(up, promised, sent)
        except GeneratorExit:  # the server closed the body: the client left, or a write to it timed out
            if sending.stalled():
                transfer.reason = "client_stalled"
                log.warning("upstream %s: stream cut after %d bytes: client_stalled", source.name, transfer.bytes)
            raise
        except StreamCut as e:
            transfer.reason = e.reason
            log.warning("upstream %s: stream cut after %d bytes: %s", source.name, transfer.bytes, e.reason)
            raise
        except relay.ClientStalled:
            transfer.reason = "client_stalled"
            log.warning("upstream %s: stream cut after %d bytes: client_stalled", source.name, transfer.bytes)
            raise StreamCut("client_stalled") from None
        except StreamAborted:
            log.warning("upstream %s: stream aborted after %d bytes: over the size limit", source.name, sent)
            raise StreamAborted("over the size limit") from None
        except relay.ClientGone as e:
            # Raised as the server's own write would have raised it: gunicorn then drops the connection
            # quietly (EPIPE, ECONNRESET), as when a client leaves during the WSGI loop.
            raise e.error from None
        except (Urllib3Error, OSError, relay.ShortBody) as e:
            sent = max(sent, transfer.bytes)
            log.warning("upstream %s: stream aborted after %d bytes: %s", source.name, sent, type(e).__name__)
            raise StreamAborted(type(e).__name__) from None
        finally:
            up.close()  # at once, whatever ended the stream
            sending.restore()
            if watch is not None:
                watch.ended()

    def _length(self, source: Source, url: str) -> int | None:
        """The entity's size, for the Content-Range of a 416: one byte asked of the upstream, then closed."""
        try:
            probe = self.open(source, url, {**policy.UPSTREAM_REQUEST_DEFAULTS, "Range": "bytes=0-0"})
        except RangeNotSatisfiable:
            return None  # even one byte is too many: an empty entity
        probe.close()
        return entity_length(probe.status_code, probe.headers.get("Content-Range"),
                             probe.headers.get("Content-Length"))


def _keep_alive(up: requests.Response, promised: int | None, sent: int) -> None:
    """Give the upstream connection back to its pool once exactly the promised body was read: it is then at
    a message boundary, so the next grant skips a TCP (and TLS) handshake. Anything else (no length, a short
    or long count) is closed as before. Bytes the upstream sent past its length are never read as the next
    response: the pool drops a connection with unread bytes, over TLS those OpenSSL holds too (pooling.py)."""
    if promised is None or sent != promised:
        return
    response = getattr(up.raw, "_fp", None)  # http.client's: closed, its socket kept (the relay read past it)
    if response is not None:
        response.close()
    up.raw.release_conn()


def _error_body(resp: requests.Response) -> bytes:
    """The start of an error body, for its error code only; nothing from it reaches the client."""
    try:
        return resp.raw.read(s3.MAX_ERROR_BODY, decode_content=False) or b""
    except (Urllib3Error, OSError):
        return b""


def _unsatisfiable(length: int | None) -> RangeNotSatisfiable:
    err = RangeNotSatisfiable()
    err.headers = {"Content-Range": f"bytes */{length}"} if length is not None else {}
    return err
