"""Ending a stream that has started, on our side: a client that takes no bytes, access that ended.

`SendTimeout` gives the client socket the send idle timeout (policy.CLIENT_SEND_IDLE_TIMEOUT) for one body,
and caps what the kernel queues for it (policy.CLIENT_UNSENT_MOST);
a `Watch` (the access layer's, access/streams.py) is told of every chunk and may answer a reason to cut;
`StreamCut` is how the body ends then. The body loops (upstream.py, encrypted.py) audit the reason.
"""

from __future__ import annotations

import errno
import socket
import time
from typing import Any, Protocol

from .. import policy


class StreamCut(ConnectionResetError):
    """We end a stream that has started (`reason`: client_stalled, revoked, store_unavailable).

    A ConnectionResetError, so gunicorn drops the connection as quietly as when a client resets it: no
    traceback for a decision the audit record and our own log line already explain."""

    def __init__(self, reason: str) -> None:
        super().__init__(errno.ECONNRESET, f"stream cut: {reason}")
        self.reason = reason


class Watch(Protocol):
    """Told of each chunk a stream sends; answers a reason to cut the stream now, or None. `ended()` when the
    body is over, however it ended (the upstream is closed by then)."""

    def tick(self, sent: int) -> str | None: ...

    def ended(self) -> None: ...


def watched(watch: Watch | None, sent: int) -> None:
    """Raise StreamCut when the watch says the stream must end."""
    if watch is not None and (reason := watch.tick(sent)) is not None:
        raise StreamCut(reason)


class SendTimeout:
    """The client socket's timeout set to policy.CLIENT_SEND_IDLE_TIMEOUT for a body, and given back after
    (gunicorn keeps the connection for the next request), and its unsent bytes capped (`limit_unsent`).
    `stalled()` tells, when the server closes the body, whether the last chunk handed to it had been waiting
    that long: its write timed out."""

    def __init__(self, sock: Any) -> None:
        self.sock, self.limit, self.since = sock, policy.CLIENT_SEND_IDLE_TIMEOUT, 0.0
        self.before: float | None = None
        if sock is not None:
            self.before = sock.gettimeout()
            sock.settimeout(self.limit)
            limit_unsent(sock)

    def before_yield(self) -> None:
        self.since = time.monotonic()

    def stalled(self) -> bool:
        return self.sock is not None and self.since > 0 and time.monotonic() - self.since >= self.limit * 0.95

    def restore(self) -> None:
        if self.sock is not None:
            try:
                self.sock.settimeout(self.before)
            except OSError:  # already closed
                pass


_NOTSENT_LOWAT = getattr(socket, "TCP_NOTSENT_LOWAT", None)  # Linux and macOS


def limit_unsent(sock: Any) -> None:
    """At most policy.CLIENT_UNSENT_MOST bytes queued beyond those in flight on a TCP client socket: a write
    past that waits (and lets the worker serve others) instead of the kernel taking megabytes for one slow
    client. It stays set for the connection's next requests, which it does not slow. Anything else (a Unix
    socket, a platform without the option) is left as it is."""
    if _NOTSENT_LOWAT is None:
        return
    try:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, _NOTSENT_LOWAT, policy.CLIENT_UNSENT_MOST)
    except (OSError, AttributeError):  # closed already, or not a socket we can tune
        pass
