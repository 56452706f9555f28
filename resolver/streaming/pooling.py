"""Upstream connection pools: a kept-alive connection is reused only when nothing unread is left on it.

urllib3 reuses a pooled connection unless polling its socket finds bytes waiting (or the close). Over TLS that poll
cannot see bytes OpenSSL has already decrypted: when a body's last record also carries bytes past its length (an
upstream answering more than it promised, or forging a second response), they wait in OpenSSL and would be read
as the next response. The HTTPS connection here counts them as unread, so the pool closes that connection instead.
"""

from __future__ import annotations

from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection
from urllib3.connection import HTTPSConnection as _HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool


class HTTPSConnection(_HTTPSConnection):
    @property
    def is_connected(self) -> bool:
        pending = getattr(self.sock, "pending", None)  # ssl.SSLSocket's: decrypted bytes not yet read
        return not (pending is not None and pending()) and super().is_connected


class PoolAdapter(HTTPAdapter):
    """A requests adapter whose pools make connections of the given classes (HTTPS: never reused with bytes
    OpenSSL holds)."""

    def __init__(self, http_cls: type[HTTPConnection] = HTTPConnection,
                 https_cls: type[HTTPSConnection] = HTTPSConnection, **kw: Any) -> None:
        self._classes = http_cls, https_cls
        super().__init__(**kw)

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        http_cls, https_cls = self._classes
        self.poolmanager.pool_classes_by_scheme = {
            "http": type("HTTPPool", (HTTPConnectionPool,), {"ConnectionCls": http_cls}),
            "https": type("HTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": https_cls}),
        }
