"""The revocation API for operators' tooling, behind the same service keys as /api/v1/links."""

from __future__ import annotations

from flask import Blueprint, g, request
from flask.typing import ResponseReturnValue

from ..access import revocation
from ..services import ctx
from .api import json_body
from .auth import require_service_key

bp = Blueprint("revocations", __name__)


@bp.post("/api/v1/revocations")
def revoke() -> ResponseReturnValue:
    """Body: exactly one of {"link": URL}, {"task_sid": "WT..."}, {"subject": identity} or
    {"all_before": ISO 8601 | "now"}; answers 201 {"revocation": {"kind", "value", "at"}}."""
    c = ctx()
    require_service_key(c.settings.api_keys)
    rev = revocation.parse(json_body(), c.signer)
    revocation.apply(rev, c.store, c.audit, via="api", client=request.remote_addr, request_id=g.get("request_id"))
    return {"revocation": rev.describe()}, 201
