"""Media endpoints: the Insights player's provider (/p), grants (/m) and the bare drilldown link (/d)."""

from __future__ import annotations

import time
from collections.abc import Callable

from flask import Blueprint, Response, g, redirect, request
from flask.typing import ResponseReturnValue

from ..access.flex_auth import basic_token
from ..access.grants import grant_fields
from ..access.signing import Grant
from ..audit.log import AuditLog
from ..errors import ResolverError, Unauthenticated, error_response
from ..services import ctx
from ..streaming import relay
from ..streaming.upstream import Transfer

bp = Blueprint("media", __name__)


@bp.get("/p/<link_token>")
def provider(link_token: str) -> ResponseReturnValue:
    """Flex Insights' url_provider: the Basic-auth token in, a grant URL the player refreshes by itself out."""
    token = basic_token(request.headers.get("Authorization"))
    issued = ctx().gate.issue_grant(token, link_token, via="provider", client=request.remote_addr)
    # The player refreshes a URL carrying X-Amz-Expires at 90% of its life and after a playback error.
    return {"media_url": f"{issued.url}?X-Amz-Expires={issued.lifetime}"}


@bp.route("/m/<grant_token>", methods=["GET", "HEAD"])
def grant(grant_token: str) -> ResponseReturnValue:
    c = ctx()
    transfer, opened = Transfer(), None
    audit = _grant_auditor(c.audit, request.method, request.remote_addr)
    try:
        opened = c.gate.open_grant(grant_token, client=request.remote_addr)
        if opened.presigned:
            # The presigned URL lives no longer than the grant (at least 1 s, the least SigV4 allows).
            location = c.upstream.s3.presign(opened.source, opened.url,
                                             expires=int(opened.grant.expires_at - time.time()))
            transfer.status = 302
            audit("redirected", "", opened.grant, transfer)
            return Response(status=302, headers={"Location": location})  # no body repeating the URL
        if opened.redirect:
            transfer.status = 302
            audit("redirected", "", opened.grant, transfer)
            return redirect(opened.url, code=302)
        # Twilio Voice Recording Encryption: decrypted here; plain recordings of the same source as they are
        asked = {"method": request.method, "client_headers": request.headers, "filename": opened.filename,
                 "transfer": transfer}
        if opened.source.private_keys:
            resp = c.recordings.response(opened.source, opened.grant, opened.url, **asked)
        else:
            resp = c.upstream.response(opened.source, opened.url, **asked, client=relay.client_of(request.environ))
    except ResolverError as e:
        transfer.status = e.status
        audit("refused", e.code, opened.grant if opened else None, transfer)
        raise
    # A stream is audited before its first byte leaves (started: who, what, which range), and again when it
    # ends (served: bytes, completeness and why it stopped short), after the request context is gone. A crash
    # leaves the first.
    audit("started", "", opened.grant, transfer)
    resp.call_on_close(lambda: audit("served", transfer.reason, opened.grant, transfer))
    return resp


def _grant_auditor(log: AuditLog, method: str,
                   client: str | None) -> Callable[[str, str, Grant | None, Transfer], None]:
    """Bind what the audit record needs from the request now, so it can be written after the stream."""
    request_id = g.get("request_id")

    def record(outcome: str, reason: str, grant: Grant | None, transfer: Transfer) -> None:
        log.record("grant", **grant_fields(outcome, reason, grant, request_id=request_id, method=method,
                                           status=transfer.status, bytes=transfer.bytes, range=transfer.range,
                                           complete=transfer.complete, duration_ms=transfer.duration_ms,
                                           client=client))

    return record


@bp.get("/d/<path:link_token>")
def drilldown(link_token: str) -> ResponseReturnValue:
    """Someone opened a drilldown link outside Flex: explain, never serve (and never check the link)."""
    err = Unauthenticated(
        "This media link only works from Twilio Flex. Open the conversation in Flex Insights and play it "
        "from there.",
        code="open_in_flex",
    )
    return error_response(err, title="Open this recording from Flex")
