"""JSON API: health and metrics, link issuing for back-end jobs, and resolve for the Flex plugin."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request
from flask.typing import ResponseReturnValue

from ..access.flex_auth import bearer_token
from ..access.links import MAX_ENTRIES, MediaSpec, check_task_sid, issue_entries, link_token_in
from ..errors import BadRequest
from ..ops import metrics
from ..services import ctx
from .auth import require_metrics_token, require_service_key

bp = Blueprint("api", __name__)


def json_body() -> dict:
    """The request's JSON object (bounded by the endpoint's body limit); deep nesting is a 400, not a 500."""
    try:
        body = request.get_json(silent=True)
    except RecursionError:
        body = None
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.", code="bad_json")
    return body


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    return {"status": "ok"}


@bp.get("/metrics")
def metrics_page() -> Response:
    require_metrics_token(ctx().settings.metrics_token)
    body, content_type = metrics.exposition()
    return Response(body, mimetype=content_type)


@bp.post("/api/v1/links")
def links() -> ResponseReturnValue:
    c = ctx()
    require_service_key(c.settings.api_keys)
    body = json_body()
    task_sid = check_task_sid(body.get("task_sid"))
    media = body.get("media")
    if not isinstance(media, list) or not media or len(media) > MAX_ENTRIES:
        raise BadRequest(f"media must be a list of 1 to {MAX_ENTRIES} entries.", code="bad_media")
    specs = [MediaSpec.parse(raw) for raw in media]
    entries = issue_entries(specs, task_sid=task_sid, sources=c.settings.sources, signer=c.signer,
                            public_url=c.settings.public_url, audit=c.audit)
    return jsonify(media=entries)


@bp.post("/api/v1/resolve")
def resolve() -> ResponseReturnValue:
    c = ctx()
    token = bearer_token(request.headers.get("Authorization"))
    link_token = link_token_in(json_body().get("url"), public_url=c.settings.public_url, kinds=("d",))
    if link_token is None:
        raise BadRequest("url must be a drilldown link issued by this resolver.", code="bad_url")
    issued = c.gate.issue_grant(token, link_token, via="resolve", client=request.remote_addr)
    return {
        "url": issued.url,
        "expires_at": issued.expires_at,
        "mode": issued.source.mode,
        "type": issued.link.type,
        "title": issued.link.title,
    }
