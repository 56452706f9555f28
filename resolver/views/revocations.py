"""The revocation API for operators' tooling, behind the same service keys as /api/v1/links."""

from __future__ import annotations

from flask import Blueprint, g, request
from flask.typing import ResponseReturnValue

from ..access import revocation
from ..services import ctx
from .api import json_body, require_service_key

bp = Blueprint("revocations", __name__)


@bp.post("/api/v1/revocations")
def revoke() -> ResponseReturnValue:
    """Body: exactly one of {"link": URL}, {"task_sid": "WT..."}, {"subject": identity} or
    {"all_before": ISO 8601 | "now"}; answers 201 {"revocation": {"kind", "value", "at"}}."""
    require_service_key()
    rev = revocation.parse(json_body(), ctx().signer)
    revocation.apply(rev, via="api", client=request.remote_addr, request_id=g.get("request_id"))
    return {"revocation": rev.describe()}, 201
