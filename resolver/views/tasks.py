"""Attach links to TaskRouter tasks: an API for back-end jobs and a hook for TaskRouter's event callbacks.

`POST /api/v1/tasks/<WT>/media` takes a service key (like /api/v1/links) and exists only when
RESOLVER_API_KEYS is set. `POST /hooks/taskrouter` takes the workspace's EventCallbackUrl requests, signed
by Twilio with a shared key (TWILIO_WEBHOOK_SHARED_KEYS) or the account's auth token; with neither there is
nothing to check the signature with, so the hook answers 404. On the events below it lists the task's call
recordings (and its transcript) through resolver links before the task completes and is deleted.

TaskRouter waits at most 15 seconds for the answer, so the hook never calls Twilio while the request is open:
after the signature and the event are checked it records `attach`/`accepted`, hands the attach to the app's
HookJobs (taskrouter/background.py: a greenlet under gunicorn's gevent worker, with bounded retries and a
bounded total time, one outcome record per event) and answers 204 at once.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, g, jsonify, request
from flask.typing import ResponseReturnValue

from ..access.links import MAX_ENTRIES, MediaSpec, check_task_sid
from ..errors import BadRequest, Forbidden, NotFound
from ..services import ctx
from ..taskrouter import Attacher, TwilioRest, attach_audited, check_workspace_sid
from ..taskrouter.signature import SETTINGS_HEADER, check_request
from .api import json_body
from .auth import require_service_key

log = logging.getLogger(__name__)
bp = Blueprint("tasks", __name__)
# Events on which the hook attaches: wrap-up comes before completion; completion is the last chance
# (Insights still takes media updates for a short while before TaskRouter deletes the task).
HOOK_EVENTS = frozenset({"task.wrapup", "reservation.wrapup", "task.completed"})


def _attacher() -> Attacher:
    c = ctx()
    return Attacher(c.settings, c.signer, TwilioRest(c.settings, c.http))


@bp.post("/api/v1/tasks/<task_sid>/media")
def attach_media(task_sid: str) -> ResponseReturnValue:
    require_service_key(ctx().settings.api_keys)
    check_task_sid(task_sid)
    body = json_body()
    workspace_sid = check_workspace_sid(body.get("workspace_sid"))
    media, keep_defaults = body.get("media", []), body.get("keep_defaults", False)
    if not isinstance(keep_defaults, bool):
        raise BadRequest("keep_defaults must be true or false.", code="bad_request")
    if not isinstance(media, list) or len(media) > MAX_ENTRIES or not (media or keep_defaults):
        raise BadRequest(f"media must be a list of up to {MAX_ENTRIES} entries (or set keep_defaults).",
                         code="bad_media")
    specs = [MediaSpec.parse({"type": "VoiceRecording", **raw} if isinstance(raw, dict) else raw) for raw in media]
    result = attach_audited(_attacher(), ctx().audit, workspace_sid, task_sid, specs, keep_defaults=keep_defaults)
    return jsonify(task_sid=task_sid, written=result.written, added=len(result.added), media=result.media)


def _signed_url() -> str:
    """The URL Twilio called, as configured on the workspace: our public URL, never the Host header."""
    query = request.query_string.decode("latin-1")
    return ctx().settings.public_url + request.path + (f"?{query}" if query else "")


@bp.post("/hooks/taskrouter")
def taskrouter_hook() -> ResponseReturnValue:
    settings = ctx().settings
    if not settings.auth_token and not settings.webhook_shared_keys:
        raise NotFound()  # nothing to check a signature with
    params = list(request.form.items(multi=True))
    if not check_request(auth_token=settings.auth_token, shared_keys=settings.webhook_shared_keys,
                         url=_signed_url(), params=params, signature=request.headers.get("X-Twilio-Signature"),
                         settings_header=request.headers.get(SETTINGS_HEADER)):
        log.warning("taskrouter hook: missing or invalid webhook signature")
        raise Forbidden("The request is not signed by Twilio for this account.", code="bad_signature")
    if request.mimetype != "application/x-www-form-urlencoded":
        raise BadRequest("TaskRouter event callbacks are form-encoded.", code="bad_request")
    event, task_sid = request.form.get("EventType", ""), request.form.get("TaskSid", "")
    if request.form.get("AccountSid") != settings.account_sid or event not in HOOK_EVENTS or not task_sid:
        return _no_content()
    workspace_sid = check_workspace_sid(request.form.get("WorkspaceSid"))
    check_task_sid(task_sid)
    # never Twilio while TaskRouter waits: the attach runs after this answer (its outcome is audited)
    ctx().hooks.submit(workspace_sid, task_sid, {"via": "hook", "request_id": g.get("request_id"),
                                                 "client": request.remote_addr})
    return _no_content()


def _no_content() -> Response:
    """What TaskRouter asks event callbacks to answer: 204 with a JSON content type."""
    return Response(status=204, content_type="application/json")
