"""A local media upstream for the benchmarks: any size on demand, Range, a throttled mode, byte counting.

Files are not stored: the byte at offset `o` of every file is `PATTERN[o % len(PATTERN)]`, so a 1 GiB
"recording" costs no disk and no RAM, and a client can check any range it receives (`expected`).

    /media/<size>.mp3   full speed
    /slow/<size>.mp3    throttled to --rate bytes/s per connection (a live-ish listener's upstream)
    /net/<size>.mp3     paced to --net-rate bytes/s per connection (a store behind a real network link)
    /_stats             JSON counters (body bytes actually accepted by the kernel, per request)
    /_reset             clears the counters

It is a thread-per-connection server writing with `socket.send` from one shared buffer: no copy in Python,
the GIL is released while the kernel copies, and every byte counted was taken by the socket.
Run it as `python -m bench.upstream --port 0`; it prints `PORT <n>` once listening. With `--tls-cert` and
`--tls-key` it speaks HTTPS instead (each connection's handshake in its own thread).
"""

from __future__ import annotations

import argparse
import json
import random
import re
import socket
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PATTERN_LEN = (1 << 20) + 13  # not a power of two, so a misplaced range shows up in `expected`
SEND_CHUNK = 1 << 18
PATTERN = random.Random(9).randbytes(PATTERN_LEN)  # noqa: S311 (test data)
DATA = memoryview(PATTERN + PATTERN[:SEND_CHUNK])
PATH = re.compile(r"/(media|slow|net)/(\d+)\.mp3")
RANGE = re.compile(r"bytes=(\d*)-(\d*)")
LAST_MODIFIED = "Thu, 01 Jan 2026 00:00:00 GMT"


def expected(offset: int, length: int) -> bytes:
    """The bytes any file holds at [offset, offset + length)."""
    out = bytearray()
    while length > 0:
        start = offset % PATTERN_LEN
        n = min(length, PATTERN_LEN - start)
        out += PATTERN[start : start + n]
        offset, length = offset + n, length - n
    return bytes(out)


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.body_bytes = 0
        self.requests: list[dict] = []

    def snapshot(self) -> dict:
        with self.lock:
            return {"body_bytes": self.body_bytes, "requests": [dict(r) for r in self.requests]}


STATS = Stats()


def parse_range(header: str | None, size: int) -> tuple[int, int] | None | str:
    """(start, end inclusive), None for the whole file, or "bad" for 416."""
    if not header:
        return None
    m = RANGE.fullmatch(header.strip())
    if not m or (not m.group(1) and not m.group(2)):
        return None  # unsupported forms (multi-range) get the whole file, as RFC 9110 allows
    first, last = m.group(1), m.group(2)
    if not first:
        n = int(last)
        return (max(0, size - n), size - 1) if n else "bad"
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    return (start, end) if start < size and start <= end else "bad"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and the first body write leave separately: with Nagle on, the body would wait for the
    # client's delayed ACK (40 ms on Linux), which real stores do not do to their clients.
    disable_nagle_algorithm = True
    server_version = "bench-upstream"
    rate: int = 64 * 1024
    net_rate: int = 200 * 1024 * 1024

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (stdlib signature)
        pass

    def _json(self, body: dict) -> None:
        raw = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_POST(self) -> None:
        if self.path == "/_reset":
            with STATS.lock:
                STATS.reset()
            self._json({"ok": True})
        else:
            self.send_error(404)

    def do_HEAD(self) -> None:
        self.do_GET(head=True)

    def do_GET(self, head: bool = False) -> None:
        if self.path == "/_stats":
            self._json(STATS.snapshot())
            return
        m = PATH.fullmatch(self.path)
        if not m:
            self.send_error(404)
            return
        mode, size = m.group(1), int(m.group(2))
        rng = parse_range(self.headers.get("Range"), size)
        record = {"path": self.path, "range": self.headers.get("Range"), "status": 200, "bytes": 0, "done": False,
                  "at": time.time()}
        with STATS.lock:
            STATS.requests.append(record)
        if rng == "bad":
            record["status"] = 416
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{size}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            record["done"] = True
            return
        start, end = rng if isinstance(rng, tuple) else (0, size - 1)
        self.send_response(206 if rng else 200)
        record["status"] = 206 if rng else 200
        self.send_header("Content-Type", "audio/mpeg")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"bench-{size}"')
        self.send_header("Last-Modified", LAST_MODIFIED)
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        self.wfile.flush()
        if not head:
            rate = {"slow": self.rate, "net": self.net_rate}.get(mode, 0)
            self._send_body(record, start, end + 1, rate)
        record["done"] = True

    def _send_body(self, record: dict, offset: int, stop: int, rate: int) -> None:
        sock = self.connection
        began, sent = time.monotonic(), 0
        chunk = min(SEND_CHUNK, rate // 8) if rate else SEND_CHUNK  # throttled: 8 writes a second
        try:
            while offset < stop:
                if rate:
                    due = began + sent / rate
                    if due > time.monotonic():
                        time.sleep(due - time.monotonic())
                start = offset % PATTERN_LEN
                n = sock.send(DATA[start : start + min(chunk, stop - offset)])
                offset, sent = offset + n, sent + n
                record["bytes"] += n
                with STATS.lock:
                    STATS.body_bytes += n
        except OSError:
            self.close_connection = True


_plain_setup = Handler.setup


def _handshake_then_setup(self: Handler) -> None:
    self.request.do_handshake()  # in the connection's thread, not the accepting one
    _plain_setup(self)


def serve(port: int, rate: int, net_rate: int) -> ThreadingHTTPServer:
    Handler.rate, Handler.net_rate = rate, net_rate
    ThreadingHTTPServer.request_queue_size = 1024
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--rate", type=int, default=64 * 1024, help="bytes/s per connection on /slow/")
    parser.add_argument("--net-rate", type=int, default=200 << 20, help="bytes/s per connection on /net/")
    parser.add_argument("--tls-cert", default="", help="serve HTTPS with this certificate (PEM)")
    parser.add_argument("--tls-key", default="", help="and this key (PEM)")
    args = parser.parse_args()
    server = serve(args.port, args.rate, args.net_rate)
    server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if args.tls_cert:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        Handler.setup = _handshake_then_setup  # type: ignore[method-assign]
    print(f"PORT {server.server_port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
