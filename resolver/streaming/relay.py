"""The body of a stream, once its headers and first bytes are out: upstream socket to client socket.

Under gunicorn's gevent worker the client socket is `environ["gunicorn.socket"]`, and the object counting the
response for the access log (`%(B)s` is its `sent`) is the one whose `start_response` the app was called with.
`capture_server_response` records it in the environ; `client_of` hands it to the view. Then `send_rest` fills one
reused buffer (see BUF) with what has arrived and writes it, counting the bytes itself and stopping exactly at the
length the upstream promised. Its cost is the syscalls and the Python between them, so the body loop calls the
sockets gevent wraps (gevent keeps them non-blocking) and OpenSSL's own read directly: a read of what has arrived
never waits, and only when nothing has does one read go through the socket itself, which waits (gevent's wait) at
most the read timeout, an idle timeout. Over TLS each read returns one record (16 KiB at most) whatever the buffer
size, so the buffer is filled record by record from what has arrived before it is written. Writes are tried on the
wrapped socket first; one the kernel cannot take now goes through gevent's `send`, which waits at most the client
socket's timeout (the send idle timeout) for the client to take any.

Nothing is spliced (`os.splice` through a pipe, the pages never copied into the worker): it saves CPU against a
sendfile upstream (0.34 against 0.43 s/GiB), but the client then copies pages no cache has seen, and in
interleaved A/B runs it was the slower path on the wall clock: 1.02x-1.14x nginx `proxy_pass` against
0.93x-1.05x for this loop from nginx's sendfile (1.09x against 0.94x-0.95x without sendfile), 1.41x against
0.97x from a sender that copies (README, The body path). The buffer loop needs no pipe, so no per-user pipe
budget caps how many streams are fast.

What stays the caller's: the header phase, the first chunk (read before answering, so a stall or a break is still a
504/502), the size limit, the audit record. Anything the fast path cannot vouch for (a chunked or close-delimited
upstream, a server other than gunicorn, a client the server frames itself) takes the ordinary WSGI loop instead.
"""

from __future__ import annotations

import io
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

try:
    from gunicorn.http.wsgi import Response as GunicornResponse
except ImportError:  # not under gunicorn: the WSGI loop only
    GunicornResponse = None
try:
    from gevent.socket import socket as GeventSocket
except ImportError:  # no gevent: every socket is used through its own methods
    GeventSocket = None

# The most one stream's buffer grows to: 4 MiB from a plain upstream (fewer, larger writes wake the client and
# the upstream less often, and on loopback or in a VM a cross-CPU wakeup costs more than copying a few hundred
# KiB: -0.03 s CPU/GiB against nginx's sendfile, A/B), 1 MiB over TLS (its cost is decryption, record by
# record; a bigger fill only delays the first write). It starts at 64 KiB and grows once, when a fill filled
# it, the client took the last write without waiting and the client is fast (GROW_AFTER): a slow upstream or a
# slow client keeps it small.
BUF = 4 << 20
TLS_BUF = 1 << 20
START_BUF = 64 << 10
# When a client is fast: it took GROW_AFTER bytes at GROW_RATE or more on average. A write that did not wait
# says nothing alone: the kernel grows a connection's send buffer to net.ipv4.tcp_wmem's most (4 MiB by
# default; on loopback 4.2 MiB went into a 64 KiB/s reader's connection before a send would block), and each
# time a slow reader has drained about a third of it, lets 1.4 MiB more through without a wait (loopback, a
# 1 MiB/s reader). Growing on such writes, 300 listeners reading at playback speed from a fast upstream held
# 4 MiB each; they now hold 64 KiB.
GROW_AFTER = 8 << 20
GROW_RATE = 8 << 20  # bytes a second
ENVIRON_KEY = "resolver.server_response"
# readinto1 leaves http.client's read buffer empty only when asked for more than twice its size: only then
# may the body be read from the socket directly without skipping bytes that buffer holds.
_DIRECT_FILL_MIN = 2 * io.DEFAULT_BUFFER_SIZE + 1
_clock = time.monotonic
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

    Raises ShortBody or the upstream's OSError when the upstream fails (the caller cuts the stream; a read
    timeout's worth of silence is a TimeoutError), ClientGone when the client does, ClientStalled when a send
    waited the client socket's whole timeout without the client taking a byte, and whatever `progress` raises;
    returns only once every promised byte was written."""
    reader = upstream_reader(up_raw)
    if reader is None:
        raise RuntimeError("send_rest needs a urllib3 response over http.client")
    fp, up_sock = reader
    # 300 slow listeners hold 300 x 64 KiB, not 300 x 4 MiB (bytearray zeroes every page): see GROW_AFTER.
    buf = bytearray(min(START_BUF, remaining))
    relayed, started = 0, _clock()
    view = memoryview(buf)
    send, counted = _sender(client.sock), client.server_response
    # http.client's reader first: it holds what came with the headers. Asked for more than twice its buffer it
    # hands all of that over and keeps nothing back, so from then on the socket is ours to read directly.
    n = fp.readinto1(view[:min(len(buf), remaining)])  # waits, at most the read timeout, for the first bytes
    direct = remaining >= _DIRECT_FILL_MIN
    most = TLS_BUF if hasattr(up_sock, "pending") else BUF  # stdlib's or gevent's SSLSocket
    idle = up_sock.gettimeout()
    if direct:
        arrived = _arrived_reader(up_sock)
        up_sock.settimeout(0.0)  # a read of what has arrived never waits; only _wait_read does
    try:
        while True:
            if not n:
                raise ShortBody(f"{remaining} promised bytes never came")
            try:
                waited = send(view[:n])
            except TimeoutError:
                raise ClientStalled() from None
            except OSError as e:
                raise ClientGone(e) from None
            counted.sent += n
            remaining -= n
            progress(n)
            if remaining == 0:
                return
            relayed += n
            if n == len(buf) < most and not waited and proved_fast(relayed, started):  # grow the buffer, once
                buf = bytearray(min(most, remaining))
                view = memoryview(buf)
            want = min(len(buf), remaining)
            if not direct:  # a rest too small to take over from http.client's reader, which waits
                n = fp.readinto1(view[:want])
                continue
            n = _fill(arrived, view[:want])
            if not n:  # nothing at hand: one read that waits for the upstream, then what came with it
                n = _wait_read(up_sock, view[:want], idle)
                if n:
                    n += _fill(arrived, view[n:want])
    finally:
        if direct:
            up_sock.settimeout(idle)


def proved_fast(sent: int, since: float) -> bool:
    """Whether a client that has taken `sent` bytes of a body begun at `since` (on _clock) is fast: GROW_AFTER
    bytes at GROW_RATE or more on average. The one rule for every body that sizes its reads by its client."""
    return sent >= GROW_AFTER and sent >= GROW_RATE * (_clock() - since)


def _arrived_reader(sock: Any) -> Callable[[int, memoryview], int]:
    """`read(nbytes, view)` of what has already arrived, which never waits while the socket's timeout is 0:
    OpenSSL's own read over TLS (one record a call, so it is called as it is, with no Python layer of ours),
    the socket gevent wraps under gevent, else the socket itself. It returns 0 when the upstream has closed and
    raises one of _NOT_YET when nothing is at hand."""
    sslobj = getattr(sock, "_sslobj", None)  # stdlib's and gevent's SSLSocket, bound to the non-blocking fd
    if sslobj is not None:
        return sslobj.read
    recv_into = (_gevent_inner(sock) or sock).recv_into
    return lambda nbytes, view: recv_into(view, nbytes)


def _fill(read: Callable[[int, memoryview], int], view: memoryview) -> int:
    """Fill `view` with what has already arrived; its bytes, 0 if none. An upstream that closed with nothing
    read here raises ShortBody; one that closes after some bytes is found closed by the next call."""
    got, size = 0, len(view)
    try:
        while got < size:
            n = read(size - got, view[got:])
            if not n:
                if not got:
                    raise ShortBody("the upstream closed before the length it promised")
                break
            got += n
    except _NOT_YET:
        pass
    return got


def _wait_read(sock: Any, view: memoryview, timeout: float | None) -> int:
    """One read through the socket itself: it waits (gevent's wait under gevent) at most `timeout` for the
    first bytes, then returns them, 0 if the upstream closed."""
    sock.settimeout(timeout)
    try:
        return sock.recv_into(view)
    finally:
        sock.settimeout(0.0)


def _sender(sock: Any) -> Callable[[memoryview], bool]:
    """Write all of a buffer as a loop of sends: the socket's timeout then bounds each wait for the client to
    take *any* bytes (an idle timeout), where gevent's sendall would apply it to the whole buffer. On gevent's
    plain socket (exactly that type: never a TLS socket, whose bytes must go through OpenSSL) each send is
    first tried on the socket it wraps; only one the kernel cannot take now goes through gevent's, which waits.
    It answers whether it had to wait for the client (always False when it cannot tell)."""
    inner = _gevent_inner(sock)
    raw = inner.send if inner is not None else None

    def send_all(view: memoryview) -> bool:
        sent, waited = 0, False
        while sent < len(view):
            if raw is not None:
                try:
                    sent += raw(view[sent:])
                    continue
                except BlockingIOError:
                    waited = True
            sent += sock.send(view[sent:])
        return waited

    return send_all


def _gevent_inner(sock: Any) -> Any:
    """The socket gevent's plain socket wraps (gevent keeps it non-blocking), or None for any other socket:
    exactly that type, so never a TLS socket, whose bytes must go through OpenSSL."""
    return sock._sock if GeventSocket is not None and type(sock) is GeventSocket else None
