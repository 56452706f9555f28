"""The app factory: wires settings, signer, store, validator, upstream and audit together, nothing more."""

from __future__ import annotations

from pathlib import Path

from flask import Flask, Response, request
from werkzeug.middleware.proxy_fix import ProxyFix

from . import config, policy, redact, requestid
from .access.flex_auth import TokenValidator
from .access.grants import Gate
from .access.signing import Signer
from .audit import hooks as audit_web
from .audit.log import AuditLog
from .errors import PayloadTooLarge, register_errors
from .ops import logs, metrics
from .services import Context
from .store import Store, open_store
from .streaming.encrypted import EncryptedRecordings
from .streaming.relay import capture_server_response
from .streaming.upstream import Upstream, new_session
from .taskrouter.background import HookJobs, Spawn, attacher_factory
from .views import api, cors, docs, media, revocations, tasks


def static_folder() -> str:
    """static/ ships inside the package when installed, and sits beside it in a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "static", here.parent / "static"):
        if (candidate / "flex-drilldown.js").is_file() or candidate.is_dir():
            return str(candidate)
    return str(here / "static")


def create_app(settings: config.Settings | None = None, *, store: Store | None = None,
               hook_spawn: Spawn | None = None) -> Flask:
    """`hook_spawn` runs the TaskRouter hook's attaches (default: a greenlet under gevent, else a thread)."""
    app = Flask(__name__, static_folder=static_folder(), static_url_path="/static")
    settings = settings or config.from_env(instance_path=app.instance_path)
    secrets = redact.known_secrets(settings)
    logs.setup(secrets)
    requestid.init_app(app)
    http = new_session()
    store = store or open_store(settings.store_url)
    audit = AuditLog.open(settings.audit_log, secrets=secrets)
    signer, validator = Signer(settings.secret_keys), TokenValidator(settings, http, store)
    upstream = Upstream(settings, http)
    app.extensions["resolver"] = context = Context(
        settings=settings,
        signer=signer,
        store=store,
        http=http,
        validator=validator,
        upstream=upstream,
        audit=audit,
        gate=Gate(settings, signer, store, validator, audit),
        recordings=EncryptedRecordings(settings, upstream, store),
        hooks=HookJobs(audit, attacher_factory(settings, signer, http), spawn=hook_spawn),
    )
    if settings.trusted_proxies:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxies, x_proto=settings.trusted_proxies)
    # Outermost: it notes the server's response object for the streaming relay (streaming/relay.py).
    app.wsgi_app = capture_server_response(app.wsgi_app)  # type: ignore[method-assign]
    register_errors(app)
    audit_web.init_app(app, audit)
    metrics.instrument(context)
    app.register_blueprint(api.bp)
    app.register_blueprint(media.bp)
    app.register_blueprint(tasks.bp)
    app.register_blueprint(revocations.bp)
    app.register_blueprint(docs.bp)
    own_origin = settings.public_url.split("/", 3)[:3]
    _wire_request_hooks(app, settings, "/".join(own_origin))
    return app


def _csp(resp: Response) -> str:
    if resp.mimetype == "text/html":
        # the /d/ page runs our player script (same policy as the player page); other HTML is an error page
        return policy.PAGE_CSP if request.endpoint in ("static", "media.drilldown") else policy.ERROR_PAGE_CSP
    return policy.MEDIA_CSP if request.endpoint == "media.grant" else policy.DEFAULT_CSP


def _wire_request_hooks(app: Flask, settings: config.Settings, own_origin: str) -> None:
    @app.before_request
    def _start() -> Response | None:
        limit = policy.BODY_LIMITS.get(request.endpoint or "", policy.DEFAULT_BODY_LIMIT)
        if (request.content_length or 0) > limit:
            raise PayloadTooLarge()  # before anything reads the body
        request.max_content_length = limit  # a chunked body is cut (413) when reading passes the limit
        return cors.before(settings.cors_origins, own_origin)

    @app.after_request
    def _finish(resp: Response) -> Response:
        for name, value in policy.COMMON_HEADERS.items():
            resp.headers.setdefault(name, value)
        resp.headers.setdefault("Content-Security-Policy", _csp(resp))
        if request.endpoint != "static":
            resp.headers["Cache-Control"] = "no-store"
        return cors.after(resp, settings.cors_origins, own_origin)
