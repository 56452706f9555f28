"""gunicorn settings for the Procfile (`gunicorn --config python:resolver.ops.gunicorn_config ...`).

gevent workers hold thousands of long media streams each without a thread per stream, and their
heartbeat does not depend on requests, so a long recording is never killed by `timeout` (unlike `sync`).
The access log names the route template, never the path: paths hold links and grants.
"""

from gevent import monkey

# Before anything imports ssl or socket (the hooks below import resolver, and with it urllib3): otherwise the
# workers' TLS stays blocking and one slow HTTPS upstream would stall every stream on that worker.
monkey.patch_all()

import os  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

from resolver.ops import balance, listeners  # noqa: E402

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '8000')}"  # noqa: S104 - a web dyno
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# One listening socket per worker only where no queued connection is lost when a worker exits (ops/listeners.py).
reuse_port = listeners.per_worker(workers)
# gevent's worker; on one shared socket, one that spreads new connections over the workers (ops/balance.py).
_BALANCED = balance.wanted(workers, reuse_port)
worker_class = "resolver.ops.balance.Worker" if _BALANCED else "gevent"
worker_connections = int(os.environ.get("RESOLVER_WORKER_CONNECTIONS", "1000"))
timeout = 30
graceful_timeout = 30
keepalive = 5
# gunicorn 25+ opens a control socket at one per-user path (~/.gunicorn/gunicorn.ctl): a second instance on
# the machine would take over the first one's. Nothing here uses gunicornc, so no instance opens one.
control_socket_disable = True
accesslog = "-"
access_log_format = (
    '%(h)s "%(m)s %({resolver.route}e)s" %(s)s %(B)s %(M)sms rid=%({x-request-id}o)s'
)
# Headers are not a place for secrets either: never log them.
limit_request_field_size = 16384
# gunicorn's error log would print "Error handling request /m/<grant>": this logger blanks tokens.
logger_class = "resolver.ops.logs.GunicornLogger"

# Prometheus counters summed over all workers (resolver/metrics.py). Set here, before any worker imports
# prometheus_client; an operator-set directory is used as given and emptied at start.
_OWN_METRICS_DIR = workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _OWN_METRICS_DIR:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="resolver-metrics-")


def on_starting(server: object) -> None:
    """Refuse to start on a bad configuration or store with one clear line, before any worker boots."""
    from resolver.config import from_env
    from resolver.errors import ConfigError
    from resolver.store import StoreError, open_store

    try:
        settings = from_env()
    except ConfigError as e:
        sys.exit(f"resolver: configuration error: {e}")
    try:
        # Create a new SQLite store's schema here, once, before the workers fork and open it together.
        open_store(settings.store_url).close()
    except (StoreError, OSError) as e:
        sys.exit(f"resolver: RESOLVER_STORE cannot be opened: {e}")
    if _BALANCED:
        balance.start()
    metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if metrics_dir and os.path.isdir(metrics_dir):
        for name in os.listdir(metrics_dir):
            if name.endswith(".db"):
                os.unlink(os.path.join(metrics_dir, name))


def post_worker_init(worker: object) -> None:
    """The app is loaded: what exists now lives as long as the worker, so the cyclic GC stops traversing it
    (gc.freeze). Its full collections then walk only what requests made: GC time over 1,500 stream starts and
    their resolves went from 238 to 92 ms (bench, one worker)."""
    import gc

    gc.collect()
    gc.freeze()


def pre_fork(server: object, worker: object) -> None:
    balance.claim(worker)


def child_exit(server: object, worker: object) -> None:
    balance.release(worker)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[attr-defined]


def on_exit(server: object) -> None:
    if _OWN_METRICS_DIR:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
