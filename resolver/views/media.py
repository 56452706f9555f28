"""Media endpoints: the Insights player's provider (/p), grants (/m) and the bare drilldown link (/d)."""

from __future__ import annotations

import posixpath
import time
from collections.abc import Callable

from flask import Blueprint, g, redirect, request
from flask.typing import ResponseReturnValue

from ..access.flex_auth import basic_token
from ..access.grants import check_revocation, issue_grant
from ..access.limits import auth_attempt, count_use, limit_media
from ..access.signing import Grant
from ..errors import NotFound, ResolverError, Unauthenticated, error_response
from ..services import ctx
from ..sources import upstream_url
from ..streaming import relay
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
                                   filename=filename, transfer=transfer,
                                   client=relay.client_of(request.environ))
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
    """Someone opened a drilldown link outside Flex: explain, never serve (and never check the link)."""
    err = Unauthenticated(
        "This media link only works from Twilio Flex. Open the conversation in Flex Insights and play it "
        "from there.",
        code="open_in_flex",
    )
    return error_response(err, title="Open this recording from Flex")
