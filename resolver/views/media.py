"""Media endpoints: the Insights player's provider (/p), grants (/m) and the bare drilldown link (/d)."""

from __future__ import annotations

import posixpath
import time
from collections.abc import Callable

from flask import Blueprint, Response, g, redirect, render_template_string, request
from flask.typing import ResponseReturnValue

from ..access.flex_auth import basic_token
from ..access.grants import check_revocation, issue_grant
from ..access.limits import auth_attempt, count_use, limit_media
from ..access.signing import Grant
from ..errors import NotFound, ResolverError, Unauthenticated, error_response, wants_html
from ..services import ctx
from ..sources import upstream_url
from ..streaming.upstream import Transfer

bp = Blueprint("media", __name__)


@bp.get("/p/<link_token>")
def provider(link_token: str) -> ResponseReturnValue:
    """Flex Insights' url_provider: the Basic-auth token in, a grant URL the player refreshes by itself out."""
    with auth_attempt(via="provider"):
        token = basic_token(request.headers.get("Authorization"))
        issued = issue_grant(token, link_token, via="provider")
    # The player refreshes a URL carrying X-Amz-Expires at 90% of its life and after a playback error.
    return {"media_url": f"{issued.url}?X-Amz-Expires={issued.lifetime}"}


@bp.route("/m/<grant_token>", methods=["GET", "HEAD"])
def grant(grant_token: str) -> ResponseReturnValue:
    c = ctx()
    transfer = Transfer()
    g_: Grant | None = None
    audit = _grant_auditor(request.method, request.remote_addr)
    try:
        limit_media()  # before the signature check: grant guessing is counted too
        g_ = c.signer.load_grant(grant_token, now=time.time())
        source = c.settings.sources.get(g_.source)
        if source is None:
            raise NotFound()
        check_revocation(link_id=g_.link, task=g_.task, identity=g_.identity, issued_at=g_.issued_at)
        url = upstream_url(source, g_.key, channels=g_.channels)
        if source.mode == "redirect":
            count_use(g_, source)
            transfer.status = 302
            audit("redirected", "", g_, transfer)
            return redirect(url, code=302)
        filename = posixpath.basename(g_.key) + source.suffix
        resp = c.upstream.response(source, url, method=request.method, client_headers=request.headers,
                                   filename=filename, transfer=transfer)
    except ResolverError as e:
        transfer.status = e.status
        audit("refused", e.code, g_, transfer)
        raise
    # A stream is audited when it ends (complete or aborted), after the request context is gone.
    resp.call_on_close(lambda: audit("served", "", g_, transfer))
    return resp


def _grant_auditor(method: str, client: str | None) -> Callable[[str, str, Grant | None, Transfer], None]:
    """Bind what the audit record needs from the request now, so it can be written after the stream."""
    log, request_id = ctx().audit, g.get("request_id")

    def record(outcome: str, reason: str, grant: Grant | None, transfer: Transfer) -> None:
        log.record(
            "grant",
            outcome=outcome,
            reason=reason,
            request_id=request_id,
            identity=grant.identity if grant else None,
            worker_sid=grant.worker if grant else None,
            source=grant.source if grant else None,
            key=grant.key if grant else None,
            task_sid=grant.task if grant else None,
            link_id=grant.link if grant else None,
            grant_id=grant.nonce if grant else None,
            method=method,
            status=transfer.status,
            bytes=transfer.bytes,
            range=transfer.range,
            complete=transfer.complete,
            duration_ms=transfer.duration_ms,
            client=client,
        )

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
