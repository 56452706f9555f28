"""Media endpoints: the Insights player's provider (/p), grants (/m) and the bare drilldown link (/d)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from flask import Blueprint, Response, g, redirect, render_template_string, request
from flask.typing import ResponseReturnValue

from ..access.flex_auth import basic_token
from ..access.grants import grant_fields
from ..access.signing import Grant
from ..audit.log import AuditLog
from ..errors import ResolverError, Unauthenticated, error_response, wants_html
from ..services import ctx
from ..streaming import relay
from ..streaming.upstream import Transfer

bp = Blueprint("media", __name__)


@bp.get("/p/<link_token>")
def provider(link_token: str) -> ResponseReturnValue:
    """Flex Insights' url_provider: the Basic-auth token in, a grant URL the player refreshes by itself out."""
    token = basic_token(request.headers.get("Authorization"))
    issued = ctx().gate.issue_grant(token, link_token, via="provider", client=request.remote_addr)
    # The player refreshes a URL carrying X-Amz-Expires at 90% of its life (Insights player 2.3.3; README).
    return {"media_url": f"{issued.url}?X-Amz-Expires={issued.lifetime}"}


@bp.route("/m/<grant_token>", methods=["GET", "HEAD"])
def grant(grant_token: str) -> ResponseReturnValue:
    c = ctx()
    transfer, opened, held = Transfer(), None, None
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
        # Bounded per grant and per identity; re-checked for revocation while it runs (access/streams.py).
        held = c.gate.hold_stream(opened)
        # Twilio Voice Recording Encryption: decrypted here; plain recordings of the same source as they are
        asked: dict[str, Any] = {
            "method": request.method, "client_headers": request.headers, "filename": opened.filename,
            "transfer": transfer, "client": relay.client_of(request.environ),
            "watch": c.gate.watch_stream(opened, held)}
        if opened.source.private_keys:
            resp = c.recordings.response(opened.source, opened.grant, opened.url, **asked)
        else:
            resp = c.upstream.response(opened.source, opened.url, **asked)
    except ResolverError as e:
        if held is not None:
            held.release()
        transfer.status = e.status
        audit("refused", e.code, opened.grant if opened else None, transfer)
        raise
    except BaseException:
        if held is not None:
            held.release()
        raise
    # A stream is audited before its first byte leaves (started: who, what, which range), and again when it
    # ends (served: bytes, completeness and why it stopped short), after the request context is gone. A crash
    # leaves the first.
    audit("started", "", opened.grant, transfer)
    if resp.is_streamed:  # the body gives its slots back when it ends (StreamWatch.ended), or here on close
        resp.call_on_close(held.release)
    else:  # HEAD, 304: the upstream is already closed
        held.release()
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
    """A drilldown link opened in a browser tab (Flex opens `Referenced` entries with window.open).

    Always the 401 answer: the link is never checked here and no media is served. A browser gets the 401 page
    with the drilldown script, which asks the tab that opened it (Flex, where the handler holds the user's
    token) for a grant by postMessage, only to the exact RESOLVER_CORS_ORIGINS; with no opener, or none that
    answers, the page stays this 401 page. See README, "Opened by Flex in a new tab"."""
    err = Unauthenticated(
        "This media link only works from Twilio Flex. Open the conversation in Flex Insights and play it "
        "from there.",
        code="open_in_flex",
    )
    if not wants_html():
        return error_response(err)
    g.error_code = err.code  # audited as the refusal it is; the page itself never saw a token
    origins = sorted(ctx().settings.cors_origins)
    # tojson escapes <, >, & and ' for HTML, so the config cannot end its <script> element
    body = render_template_string(DRILLDOWN_PAGE, config={"origins": origins}, message=err.message, code=err.code)
    return Response(body, status=401, mimetype="text/html", headers={"Cache-Control": "no-store"})


# The player page's markup with the 401 text in it; player.js (drilldown mode) does the rest. Relative URLs:
# /d/<link> and /static/ share RESOLVER_PUBLIC_URL's path, whatever prefix it has.
DRILLDOWN_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>Open this recording from Flex</title>
<link rel="stylesheet" href="../static/player.css">
<script type="application/json" id="fmr-drilldown">{{ config|tojson }}</script>
<script type="module" src="../static/player.js"></script>
</head>
<body>
<main>
  <h1 id="title">Open this recording from Flex</h1>
  <p id="status" role="status">{{ message }}</p>
  <div id="stage"></div>
  <p id="code"><code>401 {{ code }}</code></p>
</main>
</body>
</html>
"""
