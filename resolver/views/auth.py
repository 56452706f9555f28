"""Back-end credentials: service keys for the API and the metrics token, compared in constant time."""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from flask import request

from ..access.flex_auth import bearer
from ..errors import NotFound, Unauthenticated


def bearer_matches(keys: Iterable[str]) -> bool:
    """Whether the request's bearer credential equals one of `keys`; every key is compared, in constant time."""
    given = (bearer(request.headers.get("Authorization")) or "").encode()
    matches = [hmac.compare_digest(given, key.encode()) for key in keys]
    return bool(given) and any(matches)


def require_service_key(keys: Iterable[str]) -> None:
    """Back-end endpoints exist only when service keys are configured."""
    keys = tuple(keys)
    if not keys:
        raise NotFound()
    if not bearer_matches(keys):
        raise Unauthenticated("A valid service key is required.", code="invalid_service_key")


def require_metrics_token(token: str) -> None:
    """/metrics exists only when RESOLVER_METRICS_TOKEN is set."""
    if not token:
        raise NotFound()
    if not bearer_matches((token,)):
        err = Unauthenticated("A valid metrics token is required.", code="invalid_metrics_token")
        err.headers = {"WWW-Authenticate": 'Bearer realm="metrics"'}
        raise err
