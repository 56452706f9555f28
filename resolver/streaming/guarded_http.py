"""An HTTP client for redirect hops that connects only to the public address it has just checked.

Checking a hostname and then letting the HTTP library resolve it again leaves a gap (DNS rebinding, and
`getaddrinfo` accepting `127.1` or `0x7f.1`). Here the connection itself resolves the host, refuses if ANY
address is blocked by `netguard.address_allowed`, and connects to exactly the checked address. TLS is then
set up by urllib3 as usual, so SNI, the Host header and certificate verification still use the hostname.

`resolve` and `dial` are seams for tests only: a test maps a hostname to a public address (which passes the
check) and dials a local server in its place. Production uses `socket.getaddrinfo` and dials what it checked.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import requests
from urllib3.connection import HTTPConnection
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.poolmanager import PoolManager
from urllib3.util.connection import allowed_gai_family

from .netguard import address_allowed
from .pooling import HTTPSConnection, PoolAdapter

Resolve = Callable[..., list[tuple[Any, ...]]]
Dial = Callable[[tuple[Any, ...]], tuple[Any, ...]]


class AddressBlocked(NewConnectionError):
    """The host resolved to an address we never connect to (private, loopback, metadata, ...)."""


def _identity(sockaddr: tuple[Any, ...]) -> tuple[Any, ...]:
    return sockaddr


def guarded_connection_classes(
    resolve: Resolve = socket.getaddrinfo, dial: Dial = _identity
) -> tuple[type[HTTPConnection], type[HTTPSConnection]]:
    """HTTP and HTTPS connection classes whose sockets only ever reach checked public addresses."""

    def new_conn(conn: HTTPConnection) -> socket.socket:
        host = conn._dns_host.strip("[]")
        try:
            infos = resolve(host, conn.port, allowed_gai_family(), socket.SOCK_STREAM)
        except socket.gaierror as e:
            raise NameResolutionError(conn.host, conn, e) from e
        if not infos or not all(address_allowed(info[4][0]) for info in infos):
            raise AddressBlocked(conn, "refused: the host resolves to a non-public address")
        err: OSError | None = None
        for _family, socktype, proto, _, sockaddr in infos:
            target = dial(sockaddr)
            sock = socket.socket(socket.AF_INET6 if ":" in target[0] else socket.AF_INET, socktype, proto)
            try:
                for opt in conn.socket_options or ():
                    sock.setsockopt(*opt)
                if isinstance(conn.timeout, int | float):
                    sock.settimeout(conn.timeout)
                sock.connect(target)
                return sock
            except TimeoutError as e:
                sock.close()
                raise ConnectTimeoutError(conn, f"Connection to {conn.host} timed out") from e
            except OSError as e:
                sock.close()
                err = e
        raise NewConnectionError(conn, f"Failed to establish a new connection: {err}")

    http_cls = type("GuardedHTTPConnection", (HTTPConnection,), {"_new_conn": new_conn})
    https_cls = type("GuardedHTTPSConnection", (HTTPSConnection,), {"_new_conn": new_conn})
    return http_cls, https_cls


class GuardedAdapter(PoolAdapter):
    """A requests adapter whose pools use the guarded connections and never a proxy."""

    def __init__(self, resolve: Resolve = socket.getaddrinfo, dial: Dial = _identity, **kw: Any) -> None:
        super().__init__(*guarded_connection_classes(resolve, dial), **kw)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> PoolManager:
        raise requests.exceptions.InvalidProxyURL("redirect hops never go through a proxy")


def new_guarded_session(
    pool_size: int = 64, resolve: Resolve = socket.getaddrinfo, dial: Dial = _identity
) -> requests.Session:
    """A session for redirect hops: guarded connections, no environment, no retries, no redirects."""
    session = requests.Session()
    session.trust_env = False
    adapter = GuardedAdapter(resolve, dial, pool_connections=16, pool_maxsize=pool_size, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def blocked(exc: BaseException) -> bool:
    """Whether a requests error comes from a refused address (requests wraps urllib3's reason twice)."""
    seen: set[int] = set()
    stack: list[object] = [exc]
    while stack:
        e = stack.pop()
        if id(e) in seen or not isinstance(e, BaseException):
            continue
        seen.add(id(e))
        if isinstance(e, AddressBlocked):
            return True
        stack.extend([*e.args, getattr(e, "reason", None), e.__cause__, e.__context__])
    return False
