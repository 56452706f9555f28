"""The peer: Debian's nginx as a `proxy_pass` reverse proxy to the bench upstreams, plain and HTTPS.

The bench writes the configuration into its temp dir and starts nginx in the foreground (`daemon off`), with
as many worker processes as the resolver has gunicorn workers, buffers in memory (1 MiB, never a temp
file), HTTP/1.1 and kept-alive connections to the upstream, and for HTTPS the upstream's certificate
verified against the bench's CA. Absent nginx, `start` returns None and the bench says so loudly.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

CONF = """\
worker_processes {workers};
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/nginx-body;
    proxy_temp_path {tmp}/nginx-proxy;
    fastcgi_temp_path {tmp}/nginx-fastcgi;
    uwsgi_temp_path {tmp}/nginx-uwsgi;
    scgi_temp_path {tmp}/nginx-scgi;
    sendfile on;
    tcp_nodelay on;
    upstream plain {{ server 127.0.0.1:{plain_port}; keepalive 16; }}
    upstream tls {{ server 127.0.0.1:{tls_port}; keepalive 16; }}
    server {{
        listen 127.0.0.1:{port};
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_buffering on;
        proxy_buffer_size 1m;
        proxy_buffers 8 1m;
        proxy_busy_buffers_size 2m;
        proxy_max_temp_file_size 0;
        location /tls/ {{
            proxy_pass https://tls/;
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate {ca};
            proxy_ssl_name 127.0.0.1;
            proxy_ssl_session_reuse on;
        }}
        location / {{ proxy_pass http://plain; }}
    }}
}}
"""


def find() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)


def start(tmp: Path, port: int, plain_port: int, tls_port: int, ca: str, workers: int) -> subprocess.Popen | None:
    exe = find()
    if exe is None:
        return None
    conf = tmp / "nginx.conf"
    conf.write_text(CONF.format(workers=workers, tmp=tmp, port=port, plain_port=plain_port, tls_port=tls_port,
                                ca=ca))
    proc = subprocess.Popen([exe, "-p", str(tmp), "-c", str(conf), "-e", str(tmp / "nginx-error.log")],
                            stdout=subprocess.DEVNULL, stderr=open(tmp / "nginx.log", "wb"),  # noqa: SIM115
                            start_new_session=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"nginx exited: see {tmp / 'nginx.log'} and {tmp / 'nginx-error.log'}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("nginx did not listen in time")
