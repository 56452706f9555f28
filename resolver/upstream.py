"""Fetch media from a credentialed upstream and stream it to the client in constant memory.

Only the headers listed in `policy` cross in either direction; the body is passed through byte for byte
(no decompression). A stall between upstream reads ends the stream (the read timeout is an idle timeout,
not a cap on the whole transfer), and a truncated body aborts the client connection instead of looking
complete. Closing the client response closes the upstream response at once.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from urllib.parse import quote

import requests
from flask import Response
from requests.adapters import HTTPAdapter

from . import policy
from .config import Settings
from .errors import NotFound, RangeNotSatisfiable, UpstreamFailed, UpstreamTimeout
from .sources import Source

log = logging.getLogger(__name__)

CHUNK = 256 * 1024
SAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]")


@dataclass
class Transfer:
    """What one grant request moved, for the audit record."""

    status: int = 0
    bytes: int = 0
    range: str = ""
    complete: bool = False
    started: float = field(default_factory=time.monotonic)

    @property
    def duration_ms(self) -> int:
        return int((time.monotonic() - self.started) * 1000)


def new_session(pool_size: int = 64) -> requests.Session:
    """One session per app: no proxies or .netrc from the environment, no automatic retries."""
    session = requests.Session()
    session.trust_env = False
    adapter = HTTPAdapter(pool_connections=16, pool_maxsize=pool_size, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def content_disposition(filename: str, inline: bool) -> str:
    """RFC 6266: a plain ASCII fallback plus the exact UTF-8 name, so no quote, ';' or CRLF can break out."""
    fallback = SAFE_FILENAME.sub("_", filename)[:100] or "media"
    kind = "inline" if inline else "attachment"
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename[:200], safe='')}"


def served_content_type(source: Source, upstream_type: str | None) -> tuple[str, bool]:
    """The type we serve and whether it may be shown inline; anything unexpected becomes a download."""
    base = (upstream_type or "").split(";")[0].strip().lower()
    allowed = source.content_types or policy.DEFAULT_CONTENT_TYPES
    if base and base in allowed:
        return (upstream_type or base).strip(), True
    return policy.FALLBACK_CONTENT_TYPE, False


def _auth(source: Source) -> tuple[dict[str, str], tuple[str, str] | None]:
    if source.auth is None:
        return {}, None
    if source.auth[0] == "bearer":
        return {"Authorization": f"Bearer {source.auth[1]}"}, None
    return {}, (source.auth[1], source.auth[2])


class Upstream:
    def __init__(self, settings: Settings, session: requests.Session) -> None:
        self.settings = settings
        self.session = session

    def open(self, source: Source, url: str, client_headers: Mapping[str, str]) -> requests.Response:
        headers = {h: client_headers[h] for h in policy.REQUEST_HEADERS_TO_UPSTREAM if h in client_headers}
        headers.update(policy.UPSTREAM_REQUEST_DEFAULTS)
        auth_headers, basic = _auth(source)
        headers.update(auth_headers)
        try:
            resp = self.session.get(
                url,
                headers=headers,
                auth=basic,
                stream=True,
                allow_redirects=False,
                timeout=(self.settings.connect_timeout, self.settings.read_timeout),
            )
        except requests.Timeout as e:
            raise UpstreamTimeout() from e
        except requests.RequestException as e:
            log.warning("upstream %s unreachable: %s", source.name, type(e).__name__)
            raise UpstreamFailed() from e
        if resp.status_code in (200, 206, 304):
            return resp
        resp.close()
        if resp.status_code == 416:
            raise RangeNotSatisfiable()
        if resp.status_code in (404, 410):
            raise NotFound("The media is no longer at its store.", code="media_gone")
        log.warning("upstream %s answered HTTP %d", source.name, resp.status_code)
        raise UpstreamFailed()

    def response(
        self, source: Source, url: str, *, method: str, client_headers: Mapping[str, str], filename: str,
        transfer: Transfer,
    ) -> Response:
        up = self.open(source, url, client_headers)
        transfer.status = up.status_code
        transfer.range = client_headers.get("Range", "")[:100]
        headers = {h: up.headers[h] for h in policy.RESPONSE_HEADERS_FROM_UPSTREAM if h in up.headers}
        content_type, inline = served_content_type(source, up.headers.get("Content-Type"))
        headers["Content-Disposition"] = content_disposition(filename, inline)
        if method == "HEAD" or up.status_code == 304:
            up.close()
            transfer.complete = True
            return Response(status=up.status_code, headers=headers, content_type=content_type)
        body = self._body(up, transfer)
        # Not direct_passthrough: werkzeug then wraps the body so close() reaches us (and call_on_close runs)
        # when the stream ends or the client goes away.
        resp = Response(body, status=up.status_code, headers=headers, content_type=content_type)
        resp.call_on_close(up.close)
        return resp

    def _body(self, up: requests.Response, transfer: Transfer) -> Iterator[bytes]:
        try:
            # read1, not stream(): stream(CHUNK) waits until CHUNK bytes have arrived, so a slow upstream's
            # first bytes reached the listener only after 256 KiB (4 s at 64 KiB/s). read1 passes on whatever
            # has arrived, up to CHUNK; a body cut short still raises (urllib3 enforces Content-Length).
            while chunk := up.raw.read1(CHUNK, decode_content=False):
                transfer.bytes += len(chunk)
                yield chunk
            transfer.complete = True
        finally:
            up.close()
