"""The audit trail's hooks into Flask: what every record gets, and a record for every refusal.

The views write the records that need their knowledge (who, which media, how many bytes). This module
makes sure nothing slips through: a request to an audited endpoint that ends in an error without the
view having written a record (an origin refused before the view ran, a rate limit, a wrong method) still
gets one, with the error code as its reason.
"""

from __future__ import annotations

from flask import Flask, Response, g, has_request_context, request

from .. import requestid
from .log import AuditLog

# endpoint -> (event, outcome, via) for a refusal the view did not record itself
AUDITED_ENDPOINTS = {
    "api.links": ("link", "refused", None),
    "api.resolve": ("resolve", "denied", "resolve"),
    "media.provider": ("resolve", "denied", "provider"),
    "media.grant": ("grant", "refused", None),
    "media.drilldown": ("drilldown", "refused", None),
    "tasks.attach_media": ("attach", "refused", None),
    "tasks.taskrouter_hook": ("attach", "refused", None),
    "revocations.revoke": ("revocation", "refused", "api"),
}


def defaults() -> dict[str, object]:
    """Every record carries the request id and, inside a request, the client address; it also notes
    that this request has been audited."""
    fields: dict[str, object] = {"request_id": requestid.current()}
    if has_request_context():
        g.audited = True
        fields["client"] = request.remote_addr
    return fields


def _reason(resp: Response) -> str:
    return g.get("error_code") or f"http_{resp.status_code}"


def init_app(app: Flask, audit: AuditLog) -> None:
    audit.defaults = defaults

    @app.after_request
    def _refusals(resp: Response) -> Response:
        rule = AUDITED_ENDPOINTS.get(request.endpoint or "")
        if rule and resp.status_code >= 400 and not g.get("audited"):
            event, outcome, via = rule
            audit.record(event, outcome=outcome, reason=_reason(resp), via=via, method=request.method,
                         status=resp.status_code)
        return resp
