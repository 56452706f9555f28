"""A stand-in for a private media store (an S3-like bucket behind a bearer token) serving demo transcripts."""

from __future__ import annotations

import hmac
import io
from collections.abc import Mapping
from datetime import UTC, datetime

from flask import Flask, Response, abort, request, send_file


def storage_app(files: Mapping[str, tuple[bytes, str]], token: str) -> Flask:
    """Serve `files` ({"transcripts/x.json": (body, content type)}) to requests bearing `token` only."""
    app = Flask("fake_storage")
    expected = f"Bearer {token}"

    @app.get("/<path:name>")
    def get(name: str) -> Response:
        if not hmac.compare_digest(request.headers.get("Authorization", ""), expected):
            abort(401)
        if name not in files:
            abort(404)
        body, content_type = files[name]
        return send_file(io.BytesIO(body), mimetype=content_type, conditional=True, etag=f"{len(body)}",
                         last_modified=datetime(2026, 1, 1, tzinfo=UTC), max_age=None)

    return app
