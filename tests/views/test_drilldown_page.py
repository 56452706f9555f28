"""GET /d/<link>: always 401, never media; a browser gets the page whose script asks the Flex opener."""

from __future__ import annotations

import json
import re

from resolver import config, create_app
from resolver.policy import PAGE_CSP

ORIGINS = "https://flex.twilio.com,https://flex.example.org"


def make_client(env):  # type: ignore[no-untyped-def]
    app = create_app(config.from_env({**env, "RESOLVER_CORS_ORIGINS": ORIGINS}))
    return app, app.test_client()


def test_browser_gets_the_401_page_with_the_exact_allowed_origins(env):  # type: ignore[no-untyped-def]
    app, client = make_client(env)
    resp = client.get("/d/anything-at-all", headers={"Accept": "text/html"})
    assert resp.status_code == 401
    assert resp.headers["Content-Security-Policy"] == PAGE_CSP
    assert resp.headers["Cache-Control"] == "no-store"
    page = resp.get_data(as_text=True)
    assert "only works from Twilio Flex" in page and "open_in_flex" in page
    raw = re.search(r'<script type="application/json" id="fmr-drilldown">(.*?)</script>', page, re.S)
    assert raw and json.loads(raw.group(1)) == {"origins": ["https://flex.example.org", "https://flex.twilio.com"]}
    assert '<script type="module" src="../static/player.js"></script>' in page
    assert "<audio" not in page and "/m/" not in page
    app.extensions["resolver"].close()


def test_api_clients_get_the_json_401_and_no_link_is_checked(env):  # type: ignore[no-untyped-def]
    app, client = make_client(env)
    for token in ("not-a-link", "x" * 300):
        resp = client.get(f"/d/{token}", headers={"Accept": "application/json"})
        assert resp.status_code == 401
        assert resp.get_json() == {"error": {"code": "open_in_flex", "message": resp.get_json()["error"]["message"]}}
    app.extensions["resolver"].close()
