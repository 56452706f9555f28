"""JSON API: health, link issuing for back-end jobs, and resolve for the Flex plugin."""

from __future__ import annotations

import hmac

from flask import Blueprint, jsonify, request
from flask.typing import ResponseReturnValue

from ..access.flex_auth import bearer_token
from ..access.grants import issue_grant
from ..access.limits import auth_attempt
from ..access.links import MediaSpec, check_task_sid, issue_entries
from ..errors import BadRequest, NotFound, Unauthenticated
from ..services import ctx

bp = Blueprint("api", __name__)
MAX_ENTRIES = 50


def json_body() -> dict:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.", code="bad_json")
    return body


def require_service_key() -> None:
    """Back-end endpoints exist only when service keys are configured, and compare keys in constant time."""
    keys = ctx().settings.api_keys
    if not keys:
        raise NotFound()
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    ok = scheme.lower() == "bearer" and any(hmac.compare_digest(given.encode(), k.encode()) for k in keys)
    if not ok:
        raise Unauthenticated("A valid service key is required.", code="invalid_service_key")


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    return {"status": "ok"}


@bp.post("/api/v1/links")
def links() -> ResponseReturnValue:
    require_service_key()
    body = json_body()
    task_sid = check_task_sid(body.get("task_sid"))
    media = body.get("media")
    if not isinstance(media, list) or not media or len(media) > MAX_ENTRIES:
        raise BadRequest(f"media must be a list of 1 to {MAX_ENTRIES} entries.", code="bad_media")
    c = ctx()
    specs = [MediaSpec.parse(raw) for raw in media]
    entries = issue_entries(specs, task_sid=task_sid, sources=c.settings.sources, signer=c.signer,
                            public_url=c.settings.public_url, audit=c.audit)
    return jsonify(media=entries)


def link_token_from(url: object) -> str:
    """The token of a drilldown link, which must be one of ours: `<RESOLVER_PUBLIC_URL>/d/<link>`."""
    prefix = ctx().settings.public_url + "/d/"
    if not isinstance(url, str) or not url.startswith(prefix) or len(url) > 4096:
        raise BadRequest("url must be a drilldown link issued by this resolver.", code="bad_url")
    token = url[len(prefix):]
    if not token or any(c in token for c in "/?#"):
        raise BadRequest("url must be a drilldown link issued by this resolver.", code="bad_url")
    return token


@bp.post("/api/v1/resolve")
def resolve() -> ResponseReturnValue:
    with auth_attempt(via="resolve"):
        token = bearer_token(request.headers.get("Authorization"))
        link_token = link_token_from(json_body().get("url"))
        issued = issue_grant(token, link_token, via="resolve")
    return {
        "url": issued.url,
        "expires_at": issued.expires_at,
        "mode": issued.source.mode,
        "type": issued.link.type,
        "title": issued.link.title,
    }
