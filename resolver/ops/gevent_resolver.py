"""The workers' resolver: a numeric address is answered at once, a name as gevent's thread resolver answers it.

gevent sends every getaddrinfo to its thread pool, even "127.0.0.1", where the C call only parses the text: each
new upstream connection to an address then costs a thread handoff and a wakeup of the hub (about a tenth of a
stream start's CPU in the bench, whose upstreams are addresses). Asked with AI_NUMERICHOST | AI_NUMERICSERV,
getaddrinfo never touches DNS or /etc/services and returns at once, so it runs in the calling greenlet; anything
else fails that call (EAI_NONAME) and goes to the thread pool exactly as before.
"""

from __future__ import annotations

import _socket
from typing import Any

from gevent.resolver.thread import Resolver as ThreadResolver

NUMERIC_ONLY = _socket.AI_NUMERICHOST | _socket.AI_NUMERICSERV


class Resolver(ThreadResolver):
    def getaddrinfo(self, host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0,  # noqa: A002
                    flags: int = 0) -> list[tuple[Any, ...]]:
        try:
            return _socket.getaddrinfo(host, port, family, type, proto, flags | NUMERIC_ONLY)
        except _socket.gaierror:  # a name (or a service name): DNS, in the thread pool
            return super().getaddrinfo(host, port, family, type, proto, flags)
