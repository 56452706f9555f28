"""One GET on a requests session's own pools, through urllib3 itself.

What `HTTPAdapter.send` does for a GET without a body, less what an upstream request here never needs: preparing
it (`Request.prepare` re-parses and re-quotes the URL, builds cookie and hook state) and building the response
(`build_response` fills a cookie jar from the headers). The adapter itself still picks the pool and sets up TLS
verification (`get_connection_with_tls_context`, `cert_verify`), so the session's `verify` means exactly what it
means to requests, and urllib3 still parses and encodes the URL (`parse_url`). Under a burst of 300 stream starts
the two skipped steps were about a tenth of each start's CPU (py-spy).

Errors are urllib3's own, as `HTTPAdapter.send` would have wrapped them: `timed_out` tells a timeout apart.
"""

from __future__ import annotations

from collections.abc import Mapping

import requests
from requests.structures import CaseInsensitiveDict
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, NewConnectionError, ReadTimeoutError
from urllib3.util import Timeout, make_headers, parse_url


def get(session: requests.Session, url: str, headers: Mapping[str, str], timeout: tuple[float, float],
        basic: tuple[str, str] | None = None) -> requests.Response:
    """GET `url` with `headers` (and HTTP Basic credentials) on the session's pools: the response with its body
    not read yet, never redirected or retried. Raises urllib3's errors (and ValueError for a header value
    http.client refuses)."""
    adapter = session.get_adapter(url)
    request = requests.PreparedRequest()
    request.method, request.url, request.headers = "GET", url, CaseInsensitiveDict(headers)
    if basic is not None:  # as requests encodes it (latin-1)
        request.headers["Authorization"] = make_headers(basic_auth=f"{basic[0]}:{basic[1]}")["authorization"]
    pool = adapter.get_connection_with_tls_context(request, session.verify, proxies={}, cert=None)
    adapter.cert_verify(pool, url, session.verify, None)
    raw = pool.urlopen(method="GET", url=parse_url(url).request_uri, body=None, headers=request.headers,
                       redirect=False, assert_same_host=False, preload_content=False, decode_content=False,
                       retries=adapter.max_retries, timeout=Timeout(connect=timeout[0], read=timeout[1]),
                       chunked=False)
    resp = requests.Response()
    resp.status_code, resp.reason, resp.raw = raw.status, raw.reason, raw
    resp.headers = CaseInsensitiveDict(raw.headers)
    resp.url, resp.request, resp.connection = url, request, adapter
    return resp


def timed_out(error: BaseException) -> bool:
    """A connect or read timeout (requests' Timeout), not a refused or failed connection."""
    reason = error.reason if isinstance(error, MaxRetryError) else error
    return isinstance(reason, ConnectTimeoutError | ReadTimeoutError) and not isinstance(reason, NewConnectionError)
