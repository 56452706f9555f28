"""Whether each gunicorn worker listens on its own SO_REUSEPORT socket (gunicorn >= 24 makes them) or all accept
on the master's one socket.

Own sockets let the kernel spread new connections evenly. On one shared socket a busy gevent worker, which polls
between its greenlets, takes most of a burst while the other idles: 300 simultaneous stream starts split up to
250/50, and the p99 first byte was 613 ms against 483 ms balanced (bench, nginx upstream, 2 workers). But a worker
that exits (a reload, a crash) takes the connections still queued on its socket with it: three reloads under load
reset 45 connections, none with the shared socket. So own sockets only where Linux hands a closing listener's
queue to a sibling instead (net.ipv4.tcp_migrate_req=1, Linux >= 5.14: no connection lost in the same test), and
never for a single worker, which would leave no listener while it restarts. Elsewhere the workers share the one
socket and spread a burst themselves (ops/balance.py).
"""

from __future__ import annotations

MIGRATE_SETTING = "/proc/sys/net/ipv4/tcp_migrate_req"


def per_worker(workers: int, migrate_setting: str = MIGRATE_SETTING) -> bool:
    if workers < 2:
        return False
    try:
        with open(migrate_setting) as f:
            return f.read().strip() == "1"
    except OSError:
        return False
