"""Outbound connection pools: a kept-alive connection is reused only when nothing unread is left on it, and
its TLS verifies with the CAs the environment names.

urllib3 reuses a pooled connection unless polling its socket finds bytes waiting (or the close). Over TLS that poll
cannot see bytes OpenSSL has already decrypted: when a body's last record also carries bytes past its length (an
upstream answering more than it promised, or forging a second response), they wait in OpenSSL and would be read
as the next response. The HTTPS connection here counts them as unread, so the pool closes that connection instead.

Which CAs outbound TLS trusts (Twilio, upstreams, redirect hops) is the environment's, read as Python's HTTP stack
reads it: `REQUESTS_CA_BUNDLE`, `CURL_CA_BUNDLE` (requests' own names), `SSL_CERT_FILE` and `SSL_CERT_DIR`
(OpenSSL's). With none set it is requests' bundle (certifi). With any set it is every CA they name, and only
those: a host's certificate must chain to one of them (several variables often name different bundles at
once, one the system's, one a private store's CA). A name that cannot be read is skipped with a warning.
Nothing here can turn verification off, and the sessions still take no proxy or .netrc from the environment.
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection
from urllib3.connection import HTTPSConnection as _HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util.ssl_ import create_urllib3_context

log = logging.getLogger("resolver.upstream")
CA_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR")


class HTTPSConnection(_HTTPSConnection):
    @property
    def is_connected(self) -> bool:
        pending = getattr(self.sock, "pending", None)  # ssl.SSLSocket's: decrypted bytes not yet read
        return not (pending is not None and pending()) and super().is_connected

    def connect(self) -> None:
        # urllib3 loads a connection's CA files, client certificate and hostname overrides into the context it
        # is given: into the environment's shared one (every pool of the process) they would widen what every
        # later connection trusts or sends. PoolAdapter never sets them beside it; this refuses if anything does.
        if self.ssl_context is not None and (self.ca_certs or self.ca_cert_dir or self.ca_cert_data
                                             or self.cert_file or self.assert_fingerprint
                                             or self.assert_hostname is not None):
            raise ssl.SSLError("per-connection trust settings beside the shared CA context: refused")
        super().connect()


class PoolAdapter(HTTPAdapter):
    """A requests adapter whose pools make connections of the given classes (HTTPS: never reused with bytes
    OpenSSL holds) and verify with the environment's CAs (`env_trust`)."""

    def __init__(self, http_cls: type[HTTPConnection] = HTTPConnection,
                 https_cls: type[HTTPSConnection] = HTTPSConnection, **kw: Any) -> None:
        self._classes = http_cls, https_cls
        self._trust = env_trust()
        super().__init__(**kw)

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        http_cls, https_cls = self._classes
        self.poolmanager.pool_classes_by_scheme = {
            "http": type("HTTPPool", (HTTPConnectionPool,), {"ConnectionCls": http_cls}),
            "https": type("HTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": https_cls}),
        }

    def build_connection_pool_key_attributes(self, request: Any, verify: Any,
                                             cert: Any = None) -> tuple[dict[str, Any], dict[str, Any]]:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        if verify is True and self._trust is not None:  # a path given for one session (tests) is its own
            pool_kwargs["ssl_context"] = self._trust
        return host_params, pool_kwargs

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        if not (verify is True and self._trust is not None and url.lower().startswith("https")):
            super().cert_verify(conn, url, verify, cert)
            return
        # The shared context carries the trust: the pool gets no CA file (requests' would set certifi's, which
        # a connection opened meanwhile by another thread would load into it) and no client certificate.
        if cert is not None:
            raise ValueError("client certificates are not used with the environment's CAs")
        conn.cert_reqs = "CERT_REQUIRED"
        conn.ca_certs = conn.ca_cert_dir = None


def env_trust(env: Mapping[str, str] = os.environ) -> ssl.SSLContext | None:
    """The context every outbound TLS connection verifies with, or None for requests' own bundle when the
    environment names no CA (see the module's docstring)."""
    return _trust(named_cas(env))


def named_cas(env: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """(variable, path) of each CA variable set, in CA_VARIABLES' order; a path named twice once, by its first.
    SSL_CERT_DIR may list several directories, as OpenSSL reads it (separated by os.pathsep)."""
    paths: dict[str, str] = {}
    for name in CA_VARIABLES:
        value = env.get(name, "").strip()
        for path in value.split(os.pathsep) if name == "SSL_CERT_DIR" else [value]:
            paths.setdefault(path.strip(), name)
    return tuple((name, path) for path, name in paths.items() if path)


def load_named(named: tuple[tuple[str, str], ...]) -> tuple[ssl.SSLContext, list[str]]:
    """A context trusting the CAs of every (variable, path) in `named` that can be read (urllib3's own
    settings, TLS 1.2 at least), and the variables whose path cannot be (`resolver check` reports them too)."""
    context = create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED)
    return context, [name for name, path in named if not _load_cas(context, path)]


def _load_cas(context: ssl.SSLContext, path: str) -> bool:
    """Add the CAs of a PEM file, or of a directory of hashed links, to `context`; False if it cannot be read."""
    try:
        if os.path.isdir(path):
            context.load_verify_locations(capath=path)
        else:
            context.load_verify_locations(cafile=path)
    except (OSError, ssl.SSLError):
        return False
    return True


@lru_cache(maxsize=8)
def _trust(named: tuple[tuple[str, str], ...]) -> ssl.SSLContext | None:
    """One context per distinct set of names in a process (loading a bundle takes milliseconds)."""
    if not named:
        return None
    context, unread = load_named(named)
    for name in unread:
        log.warning("%s names no readable CA bundle: skipped", name)
    return context
