"""The API's own description, for client generators, reviewers and the schemathesis run in CI."""

from __future__ import annotations

from flask import Blueprint
from flask.typing import ResponseReturnValue

from ..services import ctx
from .openapi import document

bp = Blueprint("docs", __name__)


@bp.get("/api/v1/openapi.json")
def openapi() -> ResponseReturnValue:
    return document(ctx().settings.public_url)
