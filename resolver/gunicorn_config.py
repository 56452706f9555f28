"""gunicorn settings for the Procfile (`gunicorn --config python:resolver.gunicorn_config ...`).

gevent workers hold thousands of long media streams each without a thread per stream, and their
heartbeat does not depend on requests, so a long recording is never killed by `timeout` (unlike `sync`).
The access log names the route template, never the path: paths hold links and grants.
"""

import os
import sys

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"  # noqa: S104 - a web dyno
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gevent"
worker_connections = int(os.environ.get("RESOLVER_WORKER_CONNECTIONS", "1000"))
timeout = 30
graceful_timeout = 30
keepalive = 5
accesslog = "-"
access_log_format = (
    '%(h)s "%(m)s %({resolver.route}e)s" %(s)s %(B)s %(M)sms rid=%({x-request-id}o)s'
)
# Headers are not a place for secrets either: never log them.
limit_request_field_size = 16384


def on_starting(server: object) -> None:
    """Refuse to start on a bad configuration with one clear line, before any worker boots."""
    from resolver.config import from_env
    from resolver.errors import ConfigError

    try:
        from_env()
    except ConfigError as e:
        sys.exit(f"resolver: configuration error: {e}")
