"""The Procfile's gunicorn settings plus one CA the upstream session trusts, for HTTPS upstreams whose
certificate is made at run time (the bench's, and the streaming tests').

Production has no such setting (the README's configuration lists none): its stores present publicly trusted
certificates. Here
`post_worker_init` points the app's session at `RESOLVER_BENCH_UPSTREAM_CA` once the worker has loaded the
app; everything else is `resolver.ops.gunicorn_config` itself (gevent patched first, same workers, same log).
Use it as `gunicorn --config python:bench.gunicorn_trust 'resolver:create_app()'`.
"""

from __future__ import annotations

import os
from typing import Any

from resolver.ops import gunicorn_config
from resolver.ops.gunicorn_config import *  # noqa: F403 - every setting and hook of the Procfile's config


def post_worker_init(worker: Any) -> None:
    gunicorn_config.post_worker_init(worker)
    ca = os.environ.get("RESOLVER_BENCH_UPSTREAM_CA")
    if ca:
        worker.wsgi.extensions["resolver"].http.verify = ca
