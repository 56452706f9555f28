"""The demo's stand-in for Flex: a page that looks like a Flex Insights conversation list.

Its clicks go through the real `/static/flex-drilldown.js`, loaded from the resolver, with a fake
`Actions`/`manager` whose token is the one the fake Twilio knows for the user picked in the page. It also
plays the external CRM that `redirect` grants land on, and a knowledge base that plain links open.
"""

from __future__ import annotations

from importlib import resources
from urllib.parse import urlsplit

from flask import Flask, Response, abort, render_template_string

PAGE = resources.files(__package__) / "page"
STATIC = {"demo.js": "text/javascript", "insights-player.js": "text/javascript", "demo.css": "text/css"}


def site_app(*, resolver_url: str, users: list[dict], conversations: list[dict], direct_link: str) -> Flask:
    """`users`: [{"name", "role", "token"}]; `conversations`: rows with their media entries."""
    app = Flask("demo_site")
    resolver_origin = "{0.scheme}://{0.netloc}".format(urlsplit(resolver_url))
    config = {"resolverUrl": resolver_url, "users": users, "conversations": conversations, "directLink": direct_link}
    csp = (
        f"default-src 'none'; script-src 'self' {resolver_origin}; connect-src {resolver_origin}; "
        f"media-src {resolver_origin}; "
        "style-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )

    @app.after_request
    def headers(resp: Response) -> Response:
        resp.headers["Content-Security-Policy"] = csp
        resp.headers["Cache-Control"] = "no-store"
        resp.headers["X-Content-Type-Options"] = "nosniff"
        return resp

    @app.get("/")
    def index() -> str:
        return render_template_string((PAGE / "index.html").read_text(), config=config)

    @app.get("/<name>")
    def static_file(name: str) -> Response:
        if name not in STATIC:
            abort(404)
        return Response((PAGE / name).read_text(), mimetype=STATIC[name])

    @app.get("/crm/tickets/<ticket>")
    def crm(ticket: str) -> str:
        """Where `redirect` grants land: the resolver checked the Flex user before sending them here."""
        return render_template_string((PAGE / "crm.html").read_text(), ticket=ticket)

    @app.get("/kb/<article>")
    def kb(article: str) -> str:
        """A plain link no resolver stands behind: its page must not claim anyone was checked."""
        return render_template_string((PAGE / "kb.html").read_text(), article=article)

    return app
