"""Real upstream servers on raw sockets, for the behaviour a framework would not let us produce.

`Upstream` answers by the first path segment: a well-behaved store with Range and conditional requests
(`/ok/...`), and stores that stall, reset, lie about Content-Length, send HTML, redirect anywhere, or send
a range other than the one asked. It counts the connections it holds open and the body bytes it sent, so a
test can prove a seek fetched only its bytes and an aborted download closed its upstream connection.
"""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

BLOB = os.urandom(3 * 1024 * 1024 + 12345)  # an odd size, so ranges end mid-chunk
BLOB_SHA = hashlib.sha256(BLOB).hexdigest()
# The urgent route's body: large enough for the relay (past http.client's buffer), an urgent byte in its middle.
URGENT_BODY = BLOB[: 1 << 20]
# What the smuggle route sends past its length: a whole response that must never be read as the next one.
SMUGGLED = b"HTTP/1.1 200 OK\r\nContent-Type: audio/mpeg\r\nContent-Length: 6\r\n\r\nforged"
ETAG = '"blob-v1"'
LAST_MODIFIED = "Thu, 01 Jan 2026 00:00:00 GMT"


HUGE = 1024**3
_PATTERN = BLOB[:1_000_003]  # a prime length, so no chunk boundary lines up with it


def huge_slice(start: int, stop: int) -> bytes:
    """Bytes [start, stop) of the virtual 1 GiB entity: _PATTERN repeated."""
    n = len(_PATTERN)
    out = bytearray()
    pos = start
    while pos < stop:
        off = pos % n
        take = min(n - off, stop - pos)
        out += _PATTERN[off:off + take]
        pos += take
    return bytes(out)


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def read_request(sock: socket.socket) -> Request | None:
    data = b""
    while b"\r\n\r\n" not in data:
        got = sock.recv(65536)
        if not got:
            return None
        data += got
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    line, *lines = head.split("\r\n")
    method, target, _ = line.split(" ", 2)
    parts = urlsplit(target)
    headers = {}
    for h in lines:
        name, _, value = h.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Request(method, unquote(parts.path), parse_qs(parts.query), headers)


def response_head(status: str, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status}"] + [f"{k}: {v}" for k, v in headers.items()] + ["Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1")


def reset(sock: socket.socket) -> None:
    """Close with RST instead of FIN: the peer sees 'connection reset', not a clean end."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


@dataclass
class Upstream:
    """A threaded raw-socket HTTP/1.1 server on 127.0.0.1 (one request per connection)."""

    tls: ssl.SSLContext | None = None
    requests: list[Request] = field(default_factory=list)
    body_bytes: int = 0  # body bytes sent, all requests
    open_connections: int = 0
    stall: float = 30.0
    redirects: dict[str, tuple[int, str]] = field(default_factory=dict)  # /redirect/<name>: (status, Location)
    drip_bytes: int = 6
    drip_every: float = 0.3
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self.routes: dict[str, Callable[[socket.socket, Request], None]] = {
            "ok": self.ok, "html": self.html, "fail": self.fail, "stall-headers": self.stall_headers,
            "stall-body": self.stall_body, "reset": self.reset_mid, "short": self.short, "long": self.long,
            "chunked-abort": self.chunked_abort, "chunked": self.chunked, "no-length": self.no_length,
            "redirect": self.redirect,
            "ignore-range": self.ignore_range, "wrong-range": self.wrong_range, "drip": self.drip,
            "trickle": self.trickle, "smuggle": self.smuggle, "urgent": self.urgent,
            "gone": self.gone, "stall-first": self.stall_first, "huge": self.huge, "multipart": self.multipart,
            "gzip": self.gzip, "header-junk": self.header_junk, "endless": self.endless, "te-and-cl": self.te_and_cl,
        }
        threading.Thread(target=self._serve, daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        self.sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with self.lock:
            self.open_connections += 1
        try:
            if self.tls:
                conn = self.tls.wrap_socket(conn, server_side=True)
            conn.settimeout(60)
            req = read_request(conn)
            if req is None:
                return
            with self.lock:
                self.requests.append(req)
            route = req.path.strip("/").split("/")[-2] if req.path.count("/") > 1 else req.path.strip("/")
            self.routes.get(route, self.not_found)(conn, req)
        except (OSError, ssl.SSLError):
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass
            with self.lock:
                self.open_connections -= 1

    def send_body(self, conn: socket.socket, body: bytes | memoryview) -> None:
        view = memoryview(body)
        for i in range(0, len(view), 65536):
            conn.sendall(view[i:i + 65536])
            with self.lock:
                self.body_bytes += len(view[i:i + 65536])

    # --- a well-behaved store ---------------------------------------------------------------------------------
    def ok(self, conn: socket.socket, req: Request) -> None:
        base = {"Content-Type": "audio/mpeg", "Accept-Ranges": "bytes", "ETag": ETAG, "Last-Modified": LAST_MODIFIED,
                "X-Secret-Upstream": "leak", "Set-Cookie": "store=1", "Server": "hostile/1"}
        if req.header("If-None-Match") == ETAG or req.header("If-Modified-Since") == LAST_MODIFIED:
            conn.sendall(response_head("304 Not Modified", {"ETag": ETAG, "Last-Modified": LAST_MODIFIED}))
            return
        size, rng = len(BLOB), req.header("Range")
        if rng:
            first, _, last = rng.removeprefix("bytes=").partition("-")
            if not first:
                start, end = max(0, size - int(last)), size - 1
            else:
                start, end = int(first), min(int(last) if last else size - 1, size - 1)
            if start >= size:
                conn.sendall(response_head("416 Range Not Satisfiable", {"Content-Range": f"bytes */{size}",
                                                                        "Content-Length": "0"}))
                return
            conn.sendall(response_head("206 Partial Content", {
                **base, "Content-Range": f"bytes {start}-{end}/{size}", "Content-Length": str(end - start + 1)}))
            if req.method != "HEAD":
                self.send_body(conn, memoryview(BLOB)[start:end + 1])
            return
        conn.sendall(response_head("200 OK", {**base, "Content-Length": str(size)}))
        if req.method != "HEAD":
            self.send_body(conn, BLOB)

    def huge(self, conn: socket.socket, req: Request) -> None:
        """A 1 GiB recording that exists only as ranges: it can only be served by seeking."""
        base = {"Content-Type": "audio/mpeg", "Accept-Ranges": "bytes"}
        rng = req.header("Range")
        if not rng or not rng.startswith("bytes=") or "," in rng or rng.startswith("bytes=-"):
            conn.sendall(response_head("200 OK", {**base, "Content-Length": str(HUGE)}))
            if req.method != "HEAD":
                self.send_body(conn, huge_slice(0, 4 * 1024 * 1024))  # a client must not get this far
            return
        first, _, last = rng.removeprefix("bytes=").partition("-")
        start, end = int(first), min(int(last) if last else HUGE - 1, HUGE - 1)
        conn.sendall(response_head("206 Partial Content", {
            **base, "Content-Range": f"bytes {start}-{end}/{HUGE}", "Content-Length": str(end - start + 1)}))
        self.send_body(conn, huge_slice(start, end + 1))

    def not_found(self, conn: socket.socket, req: Request) -> None:
        conn.sendall(response_head("404 Not Found", {"Content-Length": "0"}))

    def gone(self, conn: socket.socket, req: Request) -> None:
        conn.sendall(response_head("410 Gone", {"Content-Length": "0"}))

    # --- hostile stores ---------------------------------------------------------------------------------------
    def endless(self, conn: socket.socket, req: Request) -> None:
        """A live stream with no end: only the reader closing the connection stops it."""
        conn.sendall(response_head("200 OK", {"Content-Type": "audio/mpeg"}))
        while True:
            self.send_body(conn, BLOB[:262144])

    def te_and_cl(self, conn: socket.socket, req: Request) -> None:
        """Both framings at once (a request-smuggling classic): chunked wins, the length must not be passed on."""
        conn.sendall(response_head("200 OK", {"Content-Type": "audio/mpeg", "Content-Length": "5",
                                              "Transfer-Encoding": "chunked"}) + b"a\r\n0123456789\r\n0\r\n\r\n")

    def html(self, conn: socket.socket, req: Request) -> None:
        body = b"<html><script>alert(document.domain)</script></html>"
        conn.sendall(response_head("200 OK", {"Content-Type": "text/html; charset=utf-8",
                                              "Content-Length": str(len(body))}) + body)

    def fail(self, conn: socket.socket, req: Request) -> None:
        status = req.path.rsplit("/", 1)[1]
        body = b"internal upstream error with secret-internal-detail"
        conn.sendall(response_head(f"{status} Failure", {"Content-Length": str(len(body))}) + body)

    def hold(self, conn: socket.socket) -> None:
        """Stall: send nothing more until the peer gives up and closes (or `stall` seconds pass)."""
        conn.settimeout(self.stall)
        try:
            while conn.recv(65536):
                pass
        except OSError:
            pass

    def stall_headers(self, conn: socket.socket, req: Request) -> None:
        self.hold(conn)

    def stall_body(self, conn: socket.socket, req: Request) -> None:
        conn.sendall(response_head("200 OK", {"Content-Type": "audio/mpeg", "Content-Length": str(len(BLOB))}))
        self.send_body(conn, BLOB[: 1024 * 1024])
        self.hold(conn)

    def stall_first(self, conn: socket.socket, req: Request) -> None:
        conn.sendall(response_head("200 OK", {"Content-Type": "audio/mpeg", "Content-Length": str(len(BLOB))}))
        self.hold(conn)

    def reset_mid(self, conn: socket.socket, req: Request) -> None:
        conn.sendall(response_head("200 OK", {"Content-Type": "audio/mpeg", "Content-Length": str(len(BLOB))}))
        self.send_body(conn, BLOB[: 1024 * 1024])
        time.sleep(0.05)
        reset(conn)

    def short(self, conn: socket.socket, req: Request) -> None:
        """Claims the whole blob, sends 1 MiB, then a clean FIN."""
        conn.sendall(response_head("200 OK", {"Content-Type": "audio/mpeg", "Content-Length": str(len(BLOB))}))
        self.send_body(conn, BLOB[: 1024 * 1024])
        conn.shutdown(socket.SHUT_WR)

    def long(self, conn: socket.socket, req: Request) -> None:
        """Claims 1000 bytes, sends the whole blob."""
        conn.sendall(response_head("200 OK", {"Content-Type": "audio/mpeg", "Content-Length": "1000"}))
        self.send_body(conn, BLOB)

    def chunked_abort(self, conn: socket.socket, req: Request) -> None:
        conn.sendall(response_head("200 OK", {"Content-Type": "audio/mpeg", "Transfer-Encoding": "chunked"}))
        for i in range(8):
            piece = BLOB[i * 65536:(i + 1) * 65536]
            conn.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
        conn.shutdown(socket.SHUT_WR)  # no terminating 0-chunk

    def chunked(self, conn: socket.socket, req: Request) -> None:
        """The whole blob, chunked, with its terminating chunk."""
        conn.sendall(response_head("200 OK", {"Content-Type": "audio/mpeg", "Transfer-Encoding": "chunked"}))
        for i in range(0, len(BLOB), 100_000):
            piece = BLOB[i:i + 100_000]
            conn.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
        conn.sendall(b"0\r\n\r\n")

    def no_length(self, conn: socket.socket, req: Request) -> None:
        """HTTP/1.0 style: no Content-Length, the body ends when the connection closes."""
        conn.sendall(response_head("200 OK", {"Content-Type": "audio/mpeg"}))
        self.send_body(conn, BLOB)

    def redirect(self, conn: socket.socket, req: Request) -> None:
        status, location = self.redirects[req.path.rsplit("/", 1)[1]]
        conn.sendall(response_head(f"{status} Moved", {"Location": location, "Content-Length": "0"}))

    def ignore_range(self, conn: socket.socket, req: Request) -> None:
        conn.sendall(response_head("200 OK", {"Content-Type": "audio/mpeg", "Content-Length": str(len(BLOB))}))
        self.send_body(conn, BLOB)

    def wrong_range(self, conn: socket.socket, req: Request) -> None:
        conn.sendall(response_head("206 Partial Content", {
            "Content-Type": "audio/mpeg", "Content-Range": f"bytes 0-99/{len(BLOB)}", "Content-Length": "100"}))
        self.send_body(conn, BLOB[:100])

    def multipart(self, conn: socket.socket, req: Request) -> None:
        body = b"--X\r\nContent-Range: bytes 0-0/10\r\n\r\na\r\n--X--\r\n"
        conn.sendall(response_head("206 Partial Content", {
            "Content-Type": "multipart/byteranges; boundary=X", "Content-Length": str(len(body))}) + body)

    def drip(self, conn: socket.socket, req: Request) -> None:
        """Slow but alive: a byte every `interval` seconds, for longer than the idle timeout in total."""
        count, interval = self.drip_bytes, self.drip_every
        conn.sendall(response_head("200 OK", {"Content-Type": "audio/mpeg", "Content-Length": str(count)}))
        for i in range(count):
            time.sleep(interval)
            conn.sendall(BLOB[i:i + 1])

    def trickle(self, conn: socket.socket, req: Request) -> None:
        """The whole blob in 48 KiB pieces a few milliseconds apart: a reader faster than its upstream often
        finds nothing at hand and must wait for the next piece."""
        conn.sendall(response_head("200 OK", {"Content-Type": "audio/mpeg", "Content-Length": str(len(BLOB))}))
        view = memoryview(BLOB)
        for i in range(0, len(view), 48 * 1024):
            time.sleep(0.004)
            conn.sendall(view[i:i + 48 * 1024])

    def urgent(self, conn: socket.socket, req: Request) -> None:
        """URGENT_BODY with a TCP urgent byte (out of band, so not a body byte) sent in its middle: a reader stops
        at the mark while poll says readable. Plain only (TLS has no urgent data of its own)."""
        half = len(URGENT_BODY) // 2
        conn.sendall(response_head("200 OK", {"Content-Type": "audio/mpeg", "Content-Length": str(len(URGENT_BODY))}))
        conn.sendall(URGENT_BODY[:half])
        time.sleep(0.05)  # the first half arrives, and is read, before the mark
        conn.send(b"!", socket.MSG_OOB)
        conn.sendall(URGENT_BODY[half:])

    def smuggle(self, conn: socket.socket, req: Request) -> None:
        """The whole blob, its last bytes and a second, forged response in one write (over TLS: one record),
        then the connection held open: a reader that stops exactly at the length leaves the forgery unread
        (in OpenSSL's buffer over TLS, where polling the socket cannot see it)."""
        head = response_head("200 OK", {"Content-Type": "audio/mpeg", "Content-Length": str(len(BLOB))})
        conn.sendall(head.replace(b"Connection: close\r\n", b""))  # a keep-alive answer
        self.send_body(conn, BLOB[:-1000])
        conn.sendall(BLOB[-1000:] + SMUGGLED)
        self.hold(conn)

    def gzip(self, conn: socket.socket, req: Request) -> None:
        import gzip
        body = gzip.compress(b'{"turns": []}')
        conn.sendall(response_head("200 OK", {"Content-Type": "audio/mpeg", "Content-Encoding": "gzip",
                                              "Content-Length": str(len(body))}) + body)

    def header_junk(self, conn: socket.socket, req: Request) -> None:
        conn.sendall(response_head("200 OK", {
            "Content-Type": "audio/mpeg; name=\"<script>\"", "Content-Length": "4", "ETag": "no-quotes <x>",
            "Accept-Ranges": "bytes, evil", "Last-Modified": "x" * 500, "Access-Control-Allow-Origin": "*",
            "Content-Security-Policy": "default-src *", "Content-Disposition": "inline; filename=evil.html",
            "Refresh": "0; url=https://evil.example/", "Link": "<https://evil.example/>; rel=preload"}) + b"abcd")


def make_tls(tmp: str, names: tuple[str, ...] = ("public.example.test", "cdn.example.test")) -> tuple[str, str, str]:
    """A throw-away CA and a server certificate for `names` (openssl CLI): (ca.pem, cert.pem, key.pem)."""
    import subprocess

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=tmp, check=True, capture_output=True)  # noqa: S603,S607

    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=resolver test CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("req", *ec, "-keyout", "leaf.key", "-out", "leaf.csr", "-subj", f"/CN={names[0]}")
    with open(os.path.join(tmp, "ext.cnf"), "w") as f:
        alt = ",".join(f"IP:{n}" if n[:1].isdigit() else f"DNS:{n}" for n in names)
        f.write("subjectAltName=" + alt + "\nbasicConstraints=CA:FALSE\n"
                "keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n")
    run("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out",
        "leaf.pem", "-days", "2", "-extfile", "ext.cnf")
    return tuple(os.path.join(tmp, n) for n in ("ca.pem", "leaf.pem", "leaf.key"))  # type: ignore[return-value]


# --- fixtures shared by the streaming tests (import them into a test module to use them) ---------------------
import pytest  # noqa: E402

HOSTILE_TOKEN = "hostile-store-token-" + "h" * 20
# Names a redirect may lead to (all in redirect_hosts), and what the test resolver answers for each.
RESOLVES = {
    "public.example.test": ["93.184.216.34"],
    "other.example.test": ["93.184.216.35"],  # public too, but the certificate does not name it
    "loopback.example.test": ["127.0.0.1"],
    "metadata.example.test": ["169.254.169.254"],
    "mapped.example.test": ["::ffff:127.0.0.1"],
    "nat64.example.test": ["64:ff9b::a9fe:a9fe"],
    "sixtofour.example.test": ["2002:7f00:1::1"],
    "private.example.test": ["10.0.0.7"],
    "mixed.example.test": ["93.184.216.34", "192.168.1.1"],
}


def sources_toml(hostile_url: str) -> str:
    hosts = ", ".join(f'"{h}"' for h in RESOLVES)
    return f"""
[sources.hostile]
kind = "http"
base_url = "{hostile_url}/"
auth = {{ type = "bearer", token_env = "HOSTILE_TOKEN" }}
content_types = ["audio/mpeg"]
redirect_hosts = [{hosts}]

[sources.basic]
kind = "http"
base_url = "{hostile_url}/"
auth = {{ type = "basic", user_env = "HOSTILE_USER", password_env = "HOSTILE_PASSWORD" }}
content_types = ["audio/mpeg"]
redirect_hosts = ["public.example.test"]

[sources.limited]
kind = "http"
base_url = "{hostile_url}/"
content_types = ["audio/mpeg"]
max_bytes = 1000000

[sources.wavs]
kind = "twilio-recording"
format = "wav"

[sources.closed]
kind = "http"
base_url = "http://127.0.0.1:9/"
"""


@pytest.fixture(scope="session")
def hostile():
    server = Upstream()
    yield server
    server.close()


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory):
    return make_tls(str(tmp_path_factory.mktemp("tls")))


@pytest.fixture(scope="session")
def public(tls_files):
    """The 'public' allowlisted host of redirect tests: TLS with a test CA, on loopback behind the seam."""
    _, cert, key = tls_files
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    server = Upstream(tls=ctx)
    yield server
    server.close()


def stream_env(tmp_path, base: dict[str, str], hostile_url: str) -> dict[str, str]:
    from pathlib import Path

    path = tmp_path / "stream-sources.toml"
    path.write_text(Path(base["RESOLVER_SOURCES"]).read_text() + sources_toml(hostile_url))
    return {**base, "RESOLVER_SOURCES": str(path), "HOSTILE_TOKEN": HOSTILE_TOKEN, "HOSTILE_USER": "store-user",
            "HOSTILE_PASSWORD": "store-password-" + "p" * 16,
            "RESOLVER_UPSTREAM_IDLE_TIMEOUT": "1", "RESOLVER_UPSTREAM_CONNECT_TIMEOUT": "1"}


def mint(signer, source: str, key: str, channels: int | None = None) -> str:
    """A grant path for (source, key), as /api/v1/resolve would issue it."""
    from resolver.access.signing import Link

    now = int(time.time())
    link = Link(source=source, key=key, type="VoiceRecording", task="WT" + "5" * 32, channels=channels)
    _, token = signer.sign_grant(link, identity="sup@example.com", worker="WK" + "2" * 32, issued_at=now,
                                 expires_at=now + 120)
    return f"/m/{token}"


def raw_get(url: str, headers: dict[str, str] | None = None, timeout: float = 15) -> tuple[int, dict, bytes]:
    """GET over a bare socket and read until the server closes: exactly what reached the wire."""
    rest = url.split("://", 1)[1]
    hostport, path = rest.split("/", 1)
    host, port = hostport.split(":")
    lines = [f"GET /{path} HTTP/1.1", f"Host: {hostport}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while True:
            try:
                got = sock.recv(1 << 20)
            except ConnectionResetError:
                break
            if not got:
                break
            data += got
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    hdrs = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    return int(status_line.split()[1]), hdrs, body
