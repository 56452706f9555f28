"""Debian's nginx in two roles: the peer (`proxy_pass` to the bench upstreams) and a media upstream itself.

The peer: the bench writes the configuration into its temp dir and starts nginx in the foreground (`daemon
off`), with as many worker processes as the resolver has gunicorn workers, buffers in memory (1 MiB, never a
temp file), HTTP/1.1 and kept-alive connections to the upstream, and for HTTPS the upstream's certificate
verified against the bench's CA. It proxies `/` and `/tls/` to the Python upstream (bench.upstream), and, when
the nginx upstream runs, `/ngx/` and `/ngxtls/` to that.

The upstream (`start_upstream`): nginx serving real files from the temp dir with sendfile, plain and over
HTTPS (the bench's certificate), as a production object store or CDN would: the upstream the issue's own
benchmark uses, and a faster one than Python's, so more of each path's cost shows. Absent nginx, both
return None and the bench says so loudly.
"""

from __future__ import annotations

import os
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
{ngx_upstreams}
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
{ngx_locations}    }}
}}
"""

NGX_UPSTREAMS = """\
    upstream ngx {{ server 127.0.0.1:{plain_port}; keepalive 16; }}
    upstream ngxtls {{ server 127.0.0.1:{tls_port}; keepalive 16; }}
"""

NGX_LOCATIONS = """\
        location /ngx/ {{ proxy_pass http://ngx/; }}
        location /ngxtls/ {{
            proxy_pass https://ngxtls/;
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate {ca};
            proxy_ssl_name 127.0.0.1;
            proxy_ssl_session_reuse on;
        }}
"""

# Files as an object store serves them: sendfile from the page cache, keep-alive, Range (nginx's own).
UPSTREAM_CONF = """\
worker_processes 1;
daemon off;
{user}pid {tmp}/nginx-upstream.pid;
error_log {tmp}/nginx-upstream-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/nginx-upstream-body;
    proxy_temp_path {tmp}/nginx-upstream-proxy;
    fastcgi_temp_path {tmp}/nginx-upstream-fastcgi;
    uwsgi_temp_path {tmp}/nginx-upstream-uwsgi;
    scgi_temp_path {tmp}/nginx-upstream-scgi;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    types {{ audio/mpeg mp3; }}
    server {{
        listen 127.0.0.1:{plain_port};
        root {root};
        location /slow/ {{ limit_rate {rate}; }}  # measure 3's listeners: one live-ish stream each
    }}
    server {{
        listen 127.0.0.1:{tls_port} ssl;
        root {root};
        ssl_certificate {cert};
        ssl_certificate_key {key};
    }}
}}
"""


def find() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)


def start(tmp: Path, port: int, plain_port: int, tls_port: int, ca: str, workers: int,
          ngx: tuple[int, int] | None = None) -> subprocess.Popen | None:
    """The peer; `ngx` (the nginx upstream's plain and TLS ports) adds its /ngx/ and /ngxtls/ routes."""
    upstreams = NGX_UPSTREAMS.format(plain_port=ngx[0], tls_port=ngx[1]) if ngx else ""
    locations = NGX_LOCATIONS.format(ca=ca) if ngx else ""
    return _launch(tmp, "nginx", port, CONF.format(
        workers=workers, tmp=tmp, port=port, plain_port=plain_port, tls_port=tls_port, ca=ca,
        ngx_upstreams=upstreams, ngx_locations=locations))


def start_upstream(tmp: Path, root: Path, plain_port: int, tls_port: int, cert: str, key: str, rate: int
                   ) -> subprocess.Popen | None:
    """nginx serving the files under `root` on plain_port and, with cert/key, on tls_port; under /slow/ at
    `rate` bytes/s per connection."""
    # A master started as root runs its workers as nobody, who cannot read the bench's private temp dir.
    user = "user root;\n" if os.geteuid() == 0 else ""
    return _launch(tmp, "nginx-upstream", plain_port, UPSTREAM_CONF.format(
        user=user, tmp=tmp, root=root, plain_port=plain_port, tls_port=tls_port, cert=cert, key=key, rate=rate))


def _launch(tmp: Path, name: str, port: int, conf_text: str) -> subprocess.Popen | None:
    exe = find()
    if exe is None:
        return None
    conf = tmp / f"{name}.conf"
    conf.write_text(conf_text)
    proc = subprocess.Popen([exe, "-p", str(tmp), "-c", str(conf), "-e", str(tmp / f"{name}-error.log")],
                            stdout=subprocess.DEVNULL, stderr=open(tmp / f"{name}.log", "wb"),  # noqa: SIM115
                            start_new_session=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited: see {tmp / f'{name}.log'} and {tmp / f'{name}-error.log'}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"{name} did not listen in time")
