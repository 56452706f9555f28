"""The body of a stream, once its headers and first bytes are out: upstream socket to client socket.

Under gunicorn's gevent worker the client socket is `environ["gunicorn.socket"]`, and the object counting the
response for the access log (`%(B)s` is its `sent`) is the one whose `start_response` the app was called with.
`capture_server_response` records it in the environ; `client_of` hands it to the view. Then `send_rest` reads
the rest of the body into one reused 1 MiB buffer (`readinto1`: whatever has arrived, up to 1 MiB, after what
http.client already buffered) and writes it with `send` calls (each waits at most the client socket's
timeout, an idle timeout), counting the bytes itself and stopping exactly at the length the upstream promised.
Over TLS each read returns one record (16 KiB at most) whatever the buffer size, so after the first read the
buffer is filled, without waiting, from records that have already arrived (`pending()` bytes and whatever is
in the kernel), and only then written.

What stays the caller's: the header phase, the first chunk (read before answering, so a stall or a break is
still a 504/502), the size limit, the audit record. Anything the fast path cannot vouch for (a chunked or
close-delimited upstream, a server other than gunicorn, a client the server frames itself) takes the
ordinary WSGI loop instead.
"""

from __future__ import annotations

import io
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

try:
    from gunicorn.http.wsgi import Response as GunicornResponse
except ImportError:  # not under gunicorn: the WSGI loop only
    GunicornResponse = None

BUF = 1 << 20
START_BUF = 64 << 10
ENVIRON_KEY = "resolver.server_response"
# readinto1 leaves http.client's read buffer empty only when asked for more than twice its size: only then
# may the TLS fill read the socket directly without skipping bytes that buffer holds.
_DIRECT_FILL_MIN = 2 * io.DEFAULT_BUFFER_SIZE + 1
_NOT_YET = (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError, InterruptedError)
WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Any]


class ShortBody(Exception):
    """The upstream closed before it sent the length it promised."""


class ClientStalled(Exception):
    """The client accepted no bytes for the client socket's timeout (policy.CLIENT_SEND_IDLE_TIMEOUT)."""


class ClientGone(Exception):
    """Writing to the client failed: `error` is the socket's own error, to be raised where the server sees it."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass
class Client:
    """The client connection and the server's count of the response bytes it sent (the access log's)."""

    sock: Any
    server_response: Any

    def ready_for(self, length: int, already: int) -> bool:
        """Headers sent, unframed (no chunking), expecting exactly `length` bytes of which `already` are out."""
        r = self.server_response
        return (r.headers_sent and not r.chunked and r.response_length == length and r.sent == already
                and r.sock is self.sock)


def capture_server_response(wsgi_app: WsgiApp) -> WsgiApp:
    """Outermost WSGI wrapper: note gunicorn's response object, which `start_response` is bound to."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        owner = getattr(start_response, "__self__", None)
        if GunicornResponse is not None and type(owner) is GunicornResponse and (
                owner.sock is environ.get("gunicorn.socket")):
            environ[ENVIRON_KEY] = owner
        return wsgi_app(environ, start_response)

    return app


def client_of(environ: dict[str, Any]) -> Client | None:
    owner = environ.get(ENVIRON_KEY)
    return Client(owner.sock, owner) if owner is not None else None


def upstream_reader(up_raw: Any) -> tuple[Any, Any] | None:
    """(http.client's buffered reader, the socket under it) of a urllib3 response, or None if not found."""
    fp = getattr(getattr(up_raw, "_fp", None), "fp", None)
    sock = getattr(getattr(fp, "raw", None), "_sock", None)
    if fp is None or sock is None or not hasattr(fp, "readinto1"):
        return None
    return fp, sock


def send_rest(up_raw: Any, client: Client, remaining: int, progress: Callable[[int], None]) -> None:
    """Relay exactly `remaining` more body bytes; `progress(n)` after each write with the bytes it wrote.

    Raises ShortBody or the upstream's OSError when the upstream fails (the caller cuts the stream),
    ClientGone when the client does, ClientStalled when a send waited the client socket's whole timeout
    without the client taking a byte, and whatever `progress` raises; returns only once every promised byte
    was written."""
    reader = upstream_reader(up_raw)
    if reader is None:
        raise RuntimeError("send_rest needs a urllib3 response over http.client")
    fp, up_sock = reader
    tls = hasattr(up_sock, "pending")  # stdlib's or gevent's SSLSocket
    # A slow upstream never fills more than a small buffer, so it gets no more; a read that fills it grows it
    # once to 1 MiB. 300 listeners then hold 300 x 64 KiB, not 300 x 1 MiB (bytearray zeroes every page).
    buf = bytearray(min(START_BUF, remaining))
    view = memoryview(buf)
    out, counted = client.sock, client.server_response
    while remaining > 0:
        want = min(len(buf), remaining)
        n = fp.readinto1(view[:want])  # waits, at most the read timeout, for the first bytes
        if not n:
            raise ShortBody(f"{remaining} promised bytes never came")
        if tls and n < want and want >= _DIRECT_FILL_MIN:
            n += _fill_arrived(up_sock, view[n:want])
        try:
            _send_all(out, view[:n])
        except TimeoutError:
            raise ClientStalled() from None
        except OSError as e:
            raise ClientGone(e) from None
        counted.sent += n
        remaining -= n
        progress(n)
        if n == len(buf) < BUF and remaining > 0:
            buf = bytearray(min(BUF, remaining))
            view = memoryview(buf)


def _send_all(sock: Any, view: memoryview) -> None:
    """sendall as a loop of sends: the socket's timeout then bounds each wait for the client to take *any*
    bytes (an idle timeout), where gevent's sendall would apply it to the whole buffer."""
    sent = 0
    while sent < len(view):
        sent += sock.send(view[sent:])


def _fill_arrived(sock: Any, view: memoryview) -> int:
    """Read, without waiting, the TLS records already at hand; their bytes, 0 if none."""
    got = 0
    timeout = sock.gettimeout()
    sock.settimeout(0.0)
    try:
        while got < len(view):
            n = sock.recv_into(view[got:])
            if not n:  # EOF: the next blocking read reports it
                break
            got += n
    except _NOT_YET:
        pass
    finally:
        sock.settimeout(timeout)
    return got
