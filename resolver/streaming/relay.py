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

A plain upstream feeding a plain client faster than the start buffer (see START_BUF) is spliced instead: the
kernel moves the pages from the upstream socket through a pipe to the client socket, so neither copy into
Python's buffer nor out of it is made (about 40% less CPU against nginx's sendfile; see SPLICE_PIPE). Where
the kernel refuses the pipe (no `os.splice`, or the user's pipe budget spent by other streams) the buffer grows
instead. Counting, the exact stop, the timeouts and the errors are the same in both loops.

What stays the caller's: the header phase, the first chunk (read before answering, so a stall or a break is still a
504/502), the size limit, the audit record. Anything the fast path cannot vouch for (a chunked or close-delimited
upstream, a server other than gunicorn, a client the server frames itself) takes the ordinary WSGI loop instead.
"""

from __future__ import annotations

import fcntl
import io
import os
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

try:
    from gunicorn.http.wsgi import Response as GunicornResponse
except ImportError:  # not under gunicorn: the WSGI loop only
    GunicornResponse = None
try:
    from gevent.socket import socket as GeventSocket
    from gevent.socket import wait_read, wait_write
except ImportError:  # no gevent: every socket is used through its own methods, and nothing is spliced
    GeventSocket = None

# The most one stream's buffer grows to: 4 MiB from a plain upstream (fewer, larger writes wake the client and
# the upstream less often, and on loopback or in a VM a cross-CPU wakeup costs more than copying a few hundred
# KiB: -0.03 s CPU/GiB against nginx's sendfile, A/B), 1 MiB over TLS (its cost is decryption, record by
# record; a bigger fill only delays the first write). It starts at 64 KiB and grows once, when a fill filled
# it and the client took the last write without waiting: a slow upstream or a slow client keeps it small.
BUF = 4 << 20
TLS_BUF = 1 << 20
START_BUF = 64 << 10
# A spliced stream's pipe: what the kernel holds between the upstream and the client (pages, never in the
# worker's memory). 1 MiB is the most a pipe gets without CAP_SYS_RESOURCE (fs.pipe-max-size; a sandbox's root
# may lack it too, and then 4 MiB is EPERM); a user's pipes may hold 64 MiB in all (fs.pipe-user-pages-soft),
# so past about 64 fast streams at once the next ones take the buffer loop. In seven A/B pairs against nginx's
# sendfile (bench measure 1n.), resolver CPU went from a median 0.52 to 0.30 s/GiB and its time over the bare
# relay from 1.12x to 1.01x (README, The body path).
SPLICE_PIPE = 1 << 20
_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 0) | getattr(os, "SPLICE_F_NONBLOCK", 0)
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
ENVIRON_KEY = "resolver.server_response"
# readinto1 leaves http.client's read buffer empty only when asked for more than twice its size: only then
# may the body be read from the socket directly without skipping bytes that buffer holds.
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

    Raises ShortBody or the upstream's OSError when the upstream fails (the caller cuts the stream; a read
    timeout's worth of silence is a TimeoutError), ClientGone when the client does, ClientStalled when a send
    waited the client socket's whole timeout without the client taking a byte, and whatever `progress` raises;
    returns only once every promised byte was written."""
    reader = upstream_reader(up_raw)
    if reader is None:
        raise RuntimeError("send_rest needs a urllib3 response over http.client")
    fp, up_sock = reader
    # 300 slow listeners hold 300 x 64 KiB, not 300 x 4 MiB (bytearray zeroes every page): see BUF.
    buf = bytearray(min(START_BUF, remaining))
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
            if n == len(buf) < most and not waited:  # a fast stream: splice it, else grow the buffer
                if direct and _plain(up_sock) and (pipe := _splice_pipe(client.sock)) is not None:
                    remaining = _splice(pipe, up_sock.fileno(), client, remaining, progress, idle)
                    if remaining == 0:
                        return
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


def _splice_pipe(client_sock: Any) -> tuple[int, int] | None:
    """A non-blocking pipe of SPLICE_PIPE bytes for a plain gevent client socket, or None where there is none
    to splice into: any other client, no `os.splice`, or a pipe the kernel will not make that large."""
    if _gevent_inner(client_sock) is None or not hasattr(os, "splice"):
        return None
    try:
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:  # out of descriptors: the buffer loop needs none
        return None
    try:
        fcntl.fcntl(w, _F_SETPIPE_SZ, SPLICE_PIPE)
    except OSError:  # past fs.pipe-max-size or the user's pipe budget
        os.close(r)
        os.close(w)
        return None
    return r, w


def _splice(pipe: tuple[int, int], up_fd: int, client: Client, remaining: int,
            progress: Callable[[int], None], idle: float | None) -> int:
    """send_rest's loop, the pages moved by the kernel: upstream socket into the pipe (what has arrived, at most
    what is still promised; when nothing has and the pipe is empty, a wait of at most `idle`), pipe into the
    client socket (what it takes now; when it takes nothing, a wait of at most its timeout). Raises and counts
    as send_rest does (an upstream that closed early is ShortBody once what it sent is out), and closes the pipe.

    Returns the bytes still to send: 0, or, with the pipe empty, all that remain when the socket is readable yet
    nothing can be spliced from it (TCP urgent data stops a splice at its mark and poll still says readable):
    the buffer loop then reads past it, where splicing again would spin."""
    r, w = pipe
    held, ended, waited = 0, False, False  # bytes in the pipe; the upstream closed; a wait said readable
    try:
        out_fd, counted, stall = client.sock.fileno(), client.server_response, client.sock.gettimeout()
        while remaining:
            room = min(SPLICE_PIPE, remaining) - held
            if room and not ended:
                try:
                    n = os.splice(up_fd, w, room, flags=_SPLICE_FLAGS)
                except BlockingIOError:
                    n = -1
                if n > 0:
                    held, waited = held + n, False
                elif n == 0:
                    ended = True
                elif not held:
                    if waited:
                        return remaining
                    wait_read(up_fd, timeout=idle)  # socket.timeout (a TimeoutError) after `idle` of silence
                    waited = True
                    continue
            if not held:  # the upstream closed, and all it sent is out
                raise ShortBody(f"{remaining} promised bytes never came")
            try:
                m = os.splice(r, out_fd, held, flags=_SPLICE_FLAGS)
            except BlockingIOError:
                try:
                    wait_write(out_fd, timeout=stall)
                except TimeoutError:
                    raise ClientStalled() from None
                continue
            except OSError as e:
                raise ClientGone(e) from None
            held -= m
            remaining -= m
            counted.sent += m
            progress(m)
        return 0
    finally:
        os.close(r)
        os.close(w)


def _plain(sock: Any) -> bool:
    """A plain TCP socket (stdlib's or gevent's), whose bytes may be spliced: never a TLS one, of any kind."""
    return type(sock) is socket.socket or _gevent_inner(sock) is not None


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
